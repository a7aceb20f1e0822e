"""``setup``: validate the particles once, preprocess every image once, into a memory-mapped cache.

Per image (:mod:`hetfield.data.transform`): soft circular real-space window → centred 2D Fourier transform → optional Fourier crop
(``downsample``) → Hartley values on the odd ``D+1`` lattice → contrast inversion (default) →
division by one global standard deviation estimated from a sample of ``min(n_images, 10 000)``
images. Training and analysis then read ``images.npy`` memory-mapped and never touch the stacks.

The output directory appears whole or not at all (built under a temporary name beside it), and
carries a fingerprint of everything that decides its contents: the source files' bytes, the stacks'
size and time, the reader that read them, the hand flip, every override and preprocessing setting.
Re-running ``setup`` with the same fingerprint reuses it.

The schema of what is written is :mod:`hetfield.data.cache`; the output location and the replacement
of an old dataset are :mod:`hetfield.data.location`. Order of work, so that bad input leaves nothing behind and a replacement never needs twice the disk:

1. the output location is checked (a parent that is a file, no write permission: one line, no work);
2. the particle file is read and validated, the images of the normalisation sample are read;
3. the lock ``.DATASET.lock`` beside the dataset is taken (a second ``setup`` into the same DATASET
   fails at once; the lock file stays, holding the last holder's pid);
4. with ``--force``, the old dataset is moved aside and deleted (a kill leaves a hidden ``.old``
   directory that the next ``setup`` of that DATASET removes);
5. the new dataset is written under a hidden temporary name and renamed into place. A kill leaves
   that temporary; the next ``setup`` of the same DATASET removes it first.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hetfield.data.cache import CACHE_FORMAT, PER_IMAGE_BOOL, PER_IMAGE_FLOAT, PreprocessSettings, input_fingerprint
from hetfield.data.location import check_output_location, existing_fingerprint, looks_like_dataset, remove_old
from hetfield.data.transform import (
    CHUNK_IMAGES,
    check_finite,
    contrast_signs,
    hartley_images,
    normalization_std,
    read_chunk,
)
from hetfield.errors import DatasetError, InputError
from hetfield.io.plain import to_plain

NORM_SAMPLE_SIZE = 10_000


def _per_image_arrays(table, pixel_size_A: float, has_poses: bool) -> dict[str, Any]:
    import numpy as np

    from hetfield.imaging.rotations import euler_to_matrix

    df = table.images
    if has_poses:
        rot = euler_to_matrix(df["euler_rot_deg"], df["euler_tilt_deg"], df["euler_psi_deg"]).astype(np.float32)
        origin_px = (df[["origin_x_A", "origin_y_A"]].to_numpy(np.float64) / pixel_size_A).astype(np.float32)
    else:
        rot = np.broadcast_to(np.eye(3, dtype=np.float32), (len(df), 3, 3)).copy()
        origin_px = np.zeros((len(df), 2), np.float32)
    arrays = {
        "particle": df["particle"].to_numpy(np.int64),
        "particle_offsets": table.particle_offsets(),
        "rotation": rot,
        "origin_px": origin_px,
    }
    for col in PER_IMAGE_FLOAT:
        if col != "pixel_size_A":  # the prepared pixel size (after any downsampling), below
            arrays[col] = df[col].to_numpy(np.float32)
    arrays["pixel_size_A"] = np.full(len(df), pixel_size_A, np.float32)
    for col in PER_IMAGE_BOOL:
        arrays[col] = df[col].to_numpy(bool)
    return arrays


def _copy_sources(source, dest: Path) -> dict[str, str]:
    dest.mkdir()
    copied: dict[str, str] = {}
    for role, path in source.files.items():
        name = f"{role}__{Path(path).name}"
        shutil.copy2(path, dest / name)
        copied[role] = f"source/{name}"
    return copied


def _apply_overrides(table, settings: PreprocessSettings) -> dict[str, dict[str, Any]]:
    """Set the user's flags on every image; return what each flag is and where it came from."""
    import numpy as np

    df = table.images
    flags = {}
    for name, value in (("ctf_premultiplied", settings.ctf_premultiplied), ("dose_weighted", settings.dose_weighted)):
        option = "--" + name.replace("_", "-")
        if value is None:
            flags[name] = {"value": bool(df[name].any()), "from": "file", "images_true": int(df[name].sum())}
        else:
            df[name] = np.full(len(df), bool(value))
            flags[name] = {"value": bool(value), "from": option if value else option.replace("--", "--no-", 1),
                           "images_true": int(df[name].sum())}
    mirror = bool(table.source.extra.get("mirror", False))
    flags["flip_hand"] = {"value": mirror, "from": "file" if settings.flip_hand is None
                          else ("--flip-hand" if settings.flip_hand else "--no-flip-hand")}
    return flags


def _apply_angpix(table, angpix_A: float | None) -> None:
    """The user's pixel size. Shifts keep their size in pixels: an alignment measures them on the
    image, and the file's Å values were computed from its own (now overridden) pixel size."""
    if angpix_A is None:
        return
    df = table.images
    ratio = angpix_A / df["pixel_size_A"].to_numpy()
    for col in ("origin_x_A", "origin_y_A"):
        df[col] = df[col].to_numpy() * ratio
    df["pixel_size_A"] = angpix_A


def reader_identity(table) -> dict[str, Any]:
    """How the particle file was read, for the fingerprint: another reader or hand is another dataset."""
    extra = table.source.extra
    return {"reader": table.source.reader, "mirror": bool(extra.get("mirror", False)),
            "files": sorted(table.source.files)}


def prepare_dataset(
    out_dir: str | os.PathLike,
    particles: str | os.PathLike,
    datadir: str | os.PathLike | None = None,
    source: str = "auto",
    settings: PreprocessSettings = PreprocessSettings(),
    force: bool = False,
    progress: Callable[[int, int], None] | None = None,
    command: str | None = None,
    tomograms: str | os.PathLike | None = None,
) -> tuple[Path, bool]:
    """Validate and preprocess ``particles`` into ``out_dir``; return ``(out_dir, reused)``.

    ``tomograms``: the tomograms STAR of an optimisation set given as its particles STAR.
    ``reused`` is True when ``out_dir`` already held a complete cache of the same fingerprint.
    See the module docstring for the order of work (locking, replacing, cleaning up).
    """
    import numpy as np
    import yaml

    from hetfield.data.dataset import Dataset
    from hetfield.data.summary import summarize_table
    from hetfield.imaging.window import soft_circular_window
    from hetfield.io.atomic import atomic_directory, remove_stale_temporaries
    from hetfield.io.lock import exclusive_lock
    from hetfield.io.mrc import open_stack
    from hetfield.io.readers import read_particles
    from hetfield.io.star.write import write_star

    out_dir = Path(out_dir)
    settings.check()
    check_output_location(out_dir)
    particles = Path(particles)
    if not particles.exists():
        raise InputError(f"{particles}: no such file; pass the particles STAR (or .cs) file with --particles")
    table = read_particles(particles, datadir=datadir, source=source, mirror=settings.flip_hand,
                           **({"tomograms": tomograms} if tomograms else {}))
    where = str(particles)
    flags = _apply_overrides(table, settings)
    _apply_angpix(table, settings.angpix_A)
    apix = table.images["pixel_size_A"].to_numpy()
    if not np.allclose(apix, apix[0], rtol=1e-4):
        raise InputError(
            f"{where}: images have different pixel sizes ({apix.min():g}–{apix.max():g} Å); "
            "prepare each pixel size as its own dataset or rescale the stacks"
        )
    stack_paths = table.images["image_path"].unique()
    box = open_stack(stack_paths[0]).box
    settings.check(box)
    out_box = settings.downsample or box
    pixel_size_A = float(apix[0]) * box / out_box
    identity = reader_identity(table)
    fingerprint = input_fingerprint(table.source.files, stack_paths, settings, identity)

    def reusable() -> bool:
        """True: ``out_dir`` already holds this dataset; DatasetError when it holds something else."""
        if not out_dir.exists() or not any(out_dir.iterdir()):
            return False  # nothing there, or an empty directory made for us
        previous = existing_fingerprint(out_dir)
        if previous == fingerprint and not force:
            try:
                Dataset.open(out_dir)
                return True
            except DatasetError:
                return False  # incomplete cache with our fingerprint: rebuild it
        if not looks_like_dataset(out_dir):
            raise DatasetError(f"{out_dir} holds files that are not a hetfield dataset; choose another DATASET "
                               "directory (--force replaces only datasets)")
        if not force:
            what = "a dataset prepared from other inputs or settings" if previous else "an unreadable dataset"
            raise DatasetError(f"{out_dir} already holds {what}; pass --force to replace it or choose another directory")
        return False

    if reusable():
        return out_dir, True
    rng = np.random.default_rng(settings.norm_seed)
    window = None
    if settings.window:
        import torch

        window = torch.from_numpy(soft_circular_window(box, settings.window_inner, settings.window_outer))
    stacks: dict[str, Any] = {}
    df = table.images
    n = len(df)
    std = normalization_std(df, settings, window, out_box, stacks, rng, where, NORM_SAMPLE_SIZE)  # validates the sample's pixels

    lock = out_dir.absolute().parent / f".{out_dir.name}.lock"
    hint = "wait for the other `hetfield setup` to finish, or choose another DATASET directory"
    try:
        with exclusive_lock(lock, f"DATASET {out_dir}", DatasetError, hint):
            if reusable():  # another setup may have finished it while we validated
                return out_dir, True
            remove_stale_temporaries(out_dir.absolute().parent, out_dir.name)
            if out_dir.exists():
                remove_old(out_dir)  # only --force gets here; the inputs are validated by now
            with atomic_directory(out_dir) as tmp:
                images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.float32,
                                                   shape=(n, out_box + 1, out_box + 1))
                for start in range(0, n, CHUNK_IMAGES):
                    rows = df.iloc[start : start + CHUNK_IMAGES]
                    imgs = read_chunk(rows, stacks)
                    check_finite(imgs, rows, where)
                    signs = contrast_signs(rows, settings.invert)
                    images[start : start + len(rows)] = hartley_images(imgs, settings, window, out_box, signs) / np.float32(std)
                    if progress is not None:
                        progress(min(start + CHUNK_IMAGES, n), n)
                images.flush()
                del images

                arrays = _per_image_arrays(table, pixel_size_A, table.has_poses)
                np.savez(tmp / "arrays.npz", **arrays)
                from hetfield.table import IMAGE_COLUMNS

                write_star(tmp / "particles.star", {"images": df[list(IMAGE_COLUMNS)]},
                           comment="hetfield setup: one row per image (see hetfield.table)")
                copied = _copy_sources(table.source, tmp / "source")

                summary = summarize_table(table)
                summary["pixel_size_A"] = [pixel_size_A, pixel_size_A]
                meta = _metadata(table, particles, datadir, command, fingerprint, identity, copied, box, out_box,
                                 pixel_size_A, std, settings, summary, flags)
                (tmp / "dataset.yaml").write_text(yaml.safe_dump(to_plain(meta), sort_keys=False))
    except OSError as err:  # disk full, quota, a directory removed under us: the user's environment
        what = f" {err.filename}" if err.filename else ""
        raise DatasetError(
            f"DATASET {out_dir}: a file operation failed ({err.strerror or err}{what}); nothing was kept; "
            "free disk space or fix permissions, then run setup again"
        ) from None
    return out_dir, False


def _metadata(table, particles: Path, datadir, command, fingerprint, identity, copied, box, out_box, pixel_size_A,
              std, settings, summary, flags) -> dict[str, Any]:
    from hetfield import __version__

    detection = table.detection.as_dict() if table.detection is not None else None
    return {
        "hetfield_version": __version__,
        "cache_format": CACHE_FORMAT,
        "fingerprint": fingerprint,
        "command": command,
        "particles": str(particles.resolve()),
        "datadir": str(Path(datadir).resolve()) if datadir else None,
        "source": {
            "reader": table.source.reader,
            "files": copied,
            "original_files": {k: str(Path(v).resolve()) for k, v in table.source.files.items()},
            "extra": to_plain(table.source.extra),
            "identity": identity,
            "detection": detection,
        },
        "box": out_box,
        "original_box": box,
        "lattice": out_box + 1,
        "pixel_size_A": pixel_size_A,
        "n_particles": table.n_particles,
        "n_images": len(table.images),
        "has_poses": table.has_poses,
        "flags": flags,
        "normalization": {"mean": 0.0, "std": std, "n_sampled_images": min(len(table.images), NORM_SAMPLE_SIZE)},
        "preprocessing": asdict(settings),
        "summary": summary,
    }
