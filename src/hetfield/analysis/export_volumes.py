"""``hetfield volumes``: decode volumes of a trained run at chosen latent points, classes or particles.

Modes (exactly one):

* ``--z FILE``: one volume per row of ``FILE`` (text with ``zdim`` numbers per row, or ``.npy``);
  ``--class-idx`` picks the class (required when K > 1);
* ``--pc i [--n 10]``: ``n`` volumes along principal component ``i`` of the latents (of the
  particles in ``--particle-index`` and/or of class ``--class-idx`` when given), at percentiles 5–95;
* ``--class-idx k`` alone: the volume of class ``k`` (at the particle nearest the class's mean
  latent; the class's field itself when the run has no latent);
* ``--particle-index FILE`` alone: the volume of each listed particle (its own latent and class).

Every volume is written as ``vol_<i>.mrc`` (float32, voxel size of the dataset, origin 0), with the
latent points in ``z_values.txt`` and a ``volumes.json`` listing what each file is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hetfield.errors import ConfigError, InputError


def read_rows(path: str | Path, what: str, option: str) -> np.ndarray:
    """A 2D float array from a ``.npy`` file or whitespace/comma-separated text (InputError otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{option} {path}: no such file; check the path")
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        else:
            text = path.read_text()
            delim = "," if "," in text else None
            arr = np.loadtxt(path, ndmin=2, delimiter=delim, comments="#")
    except (ValueError, OSError, UnicodeDecodeError) as err:
        raise InputError(f"{option} {path}: cannot read {what} ({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                         "give a text file with one row per line, or a .npy array") from None
    arr = np.asarray(arr)
    if arr.ndim == 1:
        arr = arr[None, :] if what == "latent points" else arr[:, None]
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(f"{option} {path}: expected a table of {what}, got an array of shape {arr.shape}; give one row per line")
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr.astype(np.float64)).all():
        raise InputError(f"{option} {path}: {what} must be finite numbers; fix the NaN/inf or text entries")
    return arr.astype(np.float64)


def read_indices(path: str | Path, n: int, option: str = "--particle-index") -> np.ndarray:
    arr = read_rows(path, "particle indices", option).ravel()
    if np.any(arr != np.round(arr)):
        raise InputError(f"{option} {path}: particle indices must be whole numbers; give 0-based indices, one per line")
    idx = arr.astype(np.int64)
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.size:
        raise InputError(f"{option} {path}: particle index {int(bad[0])} is out of range: there are {n} particles; give 0-based indices 0..{n - 1}")
    return idx


def plan(ctx, epoch: int, z_file=None, class_idx: int | None = None, pc: int | None = None, n: int = 10,
         particle_index=None) -> dict[str, Any]:
    """What to decode: ``{"mode", "z" (M, zdim) or None, "classes" (M,), "labels", "info"}``."""
    from hetfield.analysis import latent as L

    k, zdim = ctx.n_classes, ctx.zdim
    if class_idx is not None and not 0 <= class_idx < k:
        raise ConfigError(f"--class-idx {class_idx}: this run has {k} class(es); give one of 0..{k - 1}")
    if z_file is not None and pc is not None:
        raise ConfigError("--z and --pc are alternatives: give one of them")
    if n < 1:
        raise ConfigError(f"--n {n}: give a positive number of volumes")
    lat = None

    def latent():
        nonlocal lat
        if lat is None:
            lat = ctx.latent(epoch)
        return lat

    if z_file is not None:
        if particle_index is not None:
            raise ConfigError("--particle-index selects particles for --pc, --class-idx or alone; it does not apply to --z")
        if zdim == 0:
            raise ConfigError(f"--z: run {ctx.run_id} has no latent (zdim 0); use --class-idx instead")
        z = read_rows(z_file, "latent points", "--z")
        if z.shape[1] != zdim:
            raise InputError(f"--z {z_file}: rows have {z.shape[1]} numbers; this run's latent has {zdim} (zdim): give {zdim} numbers per row")
        if k > 1 and class_idx is None:
            raise ConfigError(f"--z: run {ctx.run_id} has {k} classes; choose the class to decode with --class-idx")
        c = class_idx or 0
        return {"mode": "z", "z": z, "classes": np.full(len(z), c), "labels": [f"z row {i}" for i in range(len(z))], "info": {"class": c}}
    n_particles = int(latent()["class_idx"].shape[0])
    sel = read_indices(particle_index, n_particles) if particle_index is not None else None
    cls_all = np.asarray(latent()["class_idx"], np.int64)
    z_all = np.asarray(latent()["z_mu"], np.float64) if zdim else None
    if pc is not None:
        if zdim == 0:
            raise ConfigError(f"--pc: run {ctx.run_id} has no latent (zdim 0); use --class-idx instead")
        pool = np.arange(n_particles) if sel is None else np.unique(sel)
        if class_idx is not None:
            pool = pool[cls_all[pool] == class_idx]
            if pool.size == 0:
                raise ConfigError(f"--class-idx {class_idx}: no particle of this class{' among --particle-index' if sel is not None else ''}; choose another class")
        if pool.size < 2:
            raise ConfigError(f"--pc {pc}: a traversal needs at least 2 particles; {pool.size} selected: select more particles")
        res = L.pca(z_all[pool])
        if not 1 <= pc <= res.n_components:
            raise ConfigError(f"--pc {pc}: the latent of the selected particles has {res.n_components} principal component(s); give --pc 1..{res.n_components}")
        tr = L.pc_traversal(z_all[pool], pc=pc, n=n, result=res)
        if class_idx is not None:
            classes = np.full(n, class_idx)
        else:
            classes = cls_all[pool[tr.nearest]]  # each point takes the class of its nearest particle
        return {"mode": "pc", "z": tr.z, "classes": classes, "labels": [f"PC{pc} {p:.0f}%" for p in tr.percentiles],
                "info": {"pc": pc, "percentiles": tr.percentiles, "coordinates": tr.coordinates, "nearest_particles": pool[tr.nearest],
                         "explained_variance_ratio": res.explained_variance_ratio, "n_particles_pca": int(pool.size)}}
    if class_idx is not None:
        if zdim == 0:
            return {"mode": "class", "z": None, "classes": np.array([class_idx]), "labels": [f"class {class_idx}"], "info": {"class": class_idx}}
        pool = np.flatnonzero(cls_all == class_idx)
        if sel is not None:
            pool = np.intersect1d(pool, sel)
        if pool.size == 0:
            raise ConfigError(f"--class-idx {class_idx}: no particle of this class{' among --particle-index' if sel is not None else ''}; nothing to decode: choose another class")
        rep = int(pool[L.nearest_particles(z_all[pool], z_all[pool].mean(0, keepdims=True))[0]])
        return {"mode": "class", "z": z_all[[rep]], "classes": np.array([class_idx]), "labels": [f"class {class_idx}"],
                "info": {"class": class_idx, "particle": rep, "n_particles": int(pool.size)}}
    if sel is not None:
        return {"mode": "particles", "z": z_all[sel] if zdim else None, "classes": cls_all[sel],
                "labels": [f"particle {int(p)}" for p in sel], "info": {"particles": sel}}
    raise ConfigError("nothing to decode: give --z FILE, --pc i, --class-idx k or --particle-index FILE")


def run_volumes(
    run_path,
    out,
    epoch="last",
    z_file=None,
    class_idx: int | None = None,
    pc: int | None = None,
    n: int = 10,
    particle_index=None,
    lowpass_A: float | None = None,
    flip: bool = False,
    invert: bool = False,
    box: int | None = None,
    device: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    from hetfield.analysis.context import load_model, open_run, resolve_device, saved_epoch
    from hetfield.analysis.provenance import provenance
    from hetfield.analysis.volumes import postprocess, write_volume
    from hetfield.model.decode import decode_volumes, output_voxel_size
    from hetfield.errors import check_output_location
    from hetfield.io.atomic import atomic_directory, write_json_atomic
    from hetfield.io.plain import to_plain

    if lowpass_A is not None and not lowpass_A > 0:
        raise ConfigError(f"--lowpass-A {lowpass_A}: give a positive resolution in Å")
    if box is not None and (box < 8 or box % 2):
        raise ConfigError(f"--box {box}: give an even box size of at least 8 pixels")
    out = Path(out)
    check_output_location(out, "--out", marker="volumes.json", protect=(run_path,))
    ctx = open_run(run_path)
    if str(epoch).lower() in ("auto",):
        raise ConfigError("--epoch auto is for `hetfield analyze`; give an epoch number or 'last'")
    e = saved_epoch(ctx, epoch)
    job = plan(ctx, e, z_file=z_file, class_idx=class_idx, pc=pc, n=n, particle_index=particle_index)
    voxel = output_voxel_size(ctx.pixel_size_A, ctx.box, box)
    if lowpass_A is not None and lowpass_A < 2 * voxel:
        raise ConfigError(f"--lowpass-A {lowpass_A}: below Nyquist ({2 * voxel:.3g} Å at {voxel:.4g} Å/voxel); give a larger value or omit it")
    dev = resolve_device(device)
    model = load_model(ctx, e, dev)
    z = None if job["z"] is None else np.asarray(job["z"], np.float32)
    vols = decode_volumes(model, z, job["classes"], box=box, progress=progress)
    entries = []
    with atomic_directory(out, replace=True) as tmp:
        for i, v in enumerate(vols):
            name = f"vol_{i:03d}.mrc"
            write_volume(tmp / name, postprocess(v, voxel, lowpass_A, flip, invert), voxel)
            entries.append({"file": name, "label": job["labels"][i], "class": int(job["classes"][i]),
                            "z": None if z is None else z[i].tolist()})
        if z is not None:
            np.savetxt(tmp / "z_values.txt", z, fmt="%.6g")
        doc = {
            **provenance("volumes", ctx=ctx), "epoch": e, "mode": job["mode"], "info": job["info"],
            "voxel_size_A": voxel, "box": int(box or ctx.box), "lowpass_A": lowpass_A, "flipped_hand": flip, "inverted": invert,
            "volumes": entries, "notes": ctx.notes,
        }
        write_json_atomic(tmp / "volumes.json", to_plain(doc))
    return out, to_plain(doc)
