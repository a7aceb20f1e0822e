"""Learned poses (``--pose-estimation refine`` or ``abinit``) in the STAR files ``analyze`` writes, and
their errors against simulator truth.

Export. ``latent.N.npz`` holds every image's rotation ``A`` (RELION matrix, ``q = k @ A``) and origin
(prepared pixels). The exported rows get ``_rlnAngleRot/Tilt/Psi`` from
:func:`~hetfield.imaging.rotations.matrix_to_euler` (the convention the readers invert with
``euler_to_matrix``) and ``_rlnOriginXAngst/YAngst = origin_px · pixel size`` (pixel-unit origin
columns are removed: one origin per row); a dataset read with a hand flip (``D A D``) is flipped back,
so reading the file again gives the learned poses. Written for the readers whose rows are images
with their own full pose (``relion``, ``image-series``); the others keep their input poses and the
analysis says so in its notes.

Truth. The simulator's ``particles.csv`` has every particle's Euler angles; the image rotations are
``rotation_y(stage tilt) @ A_p``. The median geodesic error is taken after the best global rotation
(either hand, :func:`~hetfield.analysis.pose_metrics.align_rotations`) over all images, and, for a
mixture, also per learned class (each class's field has its own frame in an ab initio run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

POSE_READERS = ("relion", "image-series")
_D = np.diag([1.0, 1.0, -1.0])


def learned_poses(ds, lat) -> tuple[np.ndarray, np.ndarray] | None:
    """``(rotation (n, 3, 3), origin_A (n, 2))`` of every image in the file's frame, or None."""
    if ds is None or "rotation" not in lat or "origin_px" not in lat:
        return None
    rot = np.asarray(lat["rotation"], np.float64)
    if rot.shape[0] != ds.n_images:
        return None
    flags = (ds.meta.get("flags") or {}).get("flip_hand") or {}
    if flags.get("value"):
        rot = _D @ rot @ _D
    return rot, np.asarray(lat["origin_px"], np.float64) * float(ds.pixel_size_A)


def write_poses_into(ds, poses, path: Path, rows: np.ndarray) -> bool:
    """Replace the pose columns of the exported STAR ``path`` (source ``rows``, ascending, as
    ``write_star_subset`` keeps them) by ``poses``; False where the reader's rows are not images."""
    from hetfield.imaging.rotations import matrix_to_euler
    from hetfield.io.star.read import read_star
    from hetfield.io.star.write import write_star

    if poses is None or ds.source_info.reader not in POSE_READERS:
        return False
    rot, origin_A = poses
    star = read_star(path)
    if any(b.kind != "loop" for b in star.blocks.values()):
        return False
    block = star.find_loop("rlnImageName")
    image_of_row = np.full(int(ds.table["source_row"].max()) + 1, -1, np.int64)
    image_of_row[ds.table["source_row"].to_numpy(np.int64)] = np.arange(ds.n_images)
    img = image_of_row[np.asarray(rows, np.int64)]
    if block is None or block.n_rows != len(img) or (img < 0).any():
        return False
    df = block.df.copy()
    e = np.stack(matrix_to_euler(rot[img]), -1)
    for j, col in enumerate(("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")):
        df[col] = e[:, j]
    df = df.drop(columns=[c for c in ("rlnOriginX", "rlnOriginY") if c in df.columns])
    df["rlnOriginXAngst"], df["rlnOriginYAngst"] = origin_A[img, 0], origin_A[img, 1]
    write_star(path, {name: (df if name == block.name else b.df) for name, b in star.blocks.items()})
    return True


def pose_truth(ctx, truth, epoch: int, cls: np.ndarray, notes: list[str]) -> dict[str, Any] | None:
    """Median angular error of the learned poses after the best global rotation (either hand)."""
    from hetfield.analysis.pose_metrics import align_rotations
    from hetfield.imaging.rotations import rotation_y

    lat = ctx.latent(epoch)
    if "rotation" not in lat:
        return None
    if not truth.has_poses or ctx.dataset is None:
        notes.append("--truth: no true particle poses (or no dataset); pose errors skipped")
        return None
    a_true = truth.rotations_for([str(n) for n in ctx.dataset.particle_names])
    arr = ctx.dataset.arrays
    image_particle = np.asarray(arr["particle"], np.int64)
    # Each image's true rotation is its tilt geometry (relative to the particle's first image) times
    # the particle's true pose. The geometry comes from the metadata rotations where the dataset has
    # them: its stage tilts are read back from cos(tilt) (_rlnCtfScalefactor) and lose their sign,
    # which made every negative tilt of a simulated tilt series 12-60° wrong in the truth.
    offsets = np.asarray(ctx.dataset.offsets)
    if ctx.dataset.has_poses and np.diff(offsets).max() > 1:
        rot = np.asarray(arr["rotation"], np.float64)
        first = np.repeat(offsets[:-1], np.diff(offsets))
        true_img = rot @ np.transpose(rot[first], (0, 2, 1)) @ a_true[image_particle]
    else:
        true_img = rotation_y(np.asarray(arr["stage_tilt_deg"], np.float64)) @ a_true[image_particle]
    est = np.asarray(lat["rotation"], np.float64)
    al = align_rotations(est, true_img)
    out: dict[str, Any] = {
        "median_error_deg": al.median_deg,
        "fraction_within_10deg": al.fraction_within(10.0),
        "mirrored": bool(al.mirrored),
        "n_images": int(len(true_img)),
        "note": "geodesic error of every image's rotation after the best global rotation of the map (either hand)",
        "_alignment": al,  # popped by the caller: brings an ab initio map into the truth's frame
    }
    if ctx.n_classes > 1:
        # Each class's field has its own frame, so each class is aligned on its own; the figure for the
        # run is the median over every image of those errors (as benchmarks/abinit.py's bound pools),
        # not a mean of the classes' medians, which a bimodal class pulls far from any image's error.
        per, errors = {}, []
        for c in np.unique(cls):
            sel = np.isin(image_particle, np.flatnonzero(cls == c))
            if sel.sum() >= 3:
                a = align_rotations(est[sel], true_img[sel])
                errors.append(a.errors_deg)
                per[str(int(c))] = {"median_error_deg": a.median_deg, "fraction_within_10deg": a.fraction_within(10.0),
                                    "mirrored": bool(a.mirrored), "n_images": int(sel.sum())}
        out["per_class"] = per
        pooled = np.concatenate(errors) if errors else np.zeros(0)
        out["class_aligned_median_error_deg"] = float(np.median(pooled)) if len(pooled) else None
        out["class_aligned_fraction_within_10deg"] = float(np.mean(pooled <= 10.0)) if len(pooled) else None
    return out
