"""The files of an optimisation set besides its particles STAR.

* The optimisation set STAR names the particles STAR and the tomograms STAR (:func:`locate_files`
  finds them, also from the particles STAR alone).
* The tomograms STAR: the ``data_global`` table of tomograms and, per tomogram, its tilt table (one
  row per frame: projection matrix, defocus, pre-exposure, CTF scale), inline or in a tilt-series
  STAR it names.

Geometry and conventions: :mod:`hetfield.io.readers.optimisation_set`, which reads the particles.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hetfield.errors import InputError
from hetfield.io.paths import resolve_image_path
from hetfield.io.readers import _common as C
from hetfield.io.star.blocks import StarFile, label
from hetfield.io.star.columns import parse_vectors
from hetfield.io.star.read import read_star

NAME = "optimisation-set"
TILT_REQUIRED = ("rlnTomoProjX", "rlnTomoProjY", "rlnTomoProjZ", "rlnDefocusU", "rlnMicrographPreExposure")


def is_optimisation_set(star: StarFile) -> bool:
    """An optimisation set STAR (it names the particles file), not a particles STAR."""
    return any(b.kind == "pairs" and "rlnTomoParticlesFile" in b.pairs for b in star.blocks.values())


def opt_entry(star: StarFile, key: str):
    """The value of ``key`` in the optimisation set's key/value block (None when absent)."""
    for b in star.blocks.values():
        if b.kind == "pairs" and key in b.pairs:
            return b.pairs[key]
    return None


def locate_files(path: Path, star: StarFile, tomograms=None, datadir=None) -> tuple[Path | None, Path, Path]:
    """``(optimisation set or None, particles STAR, tomograms STAR)``, absolute."""
    if is_optimisation_set(star):
        parts = opt_entry(star, "rlnTomoParticlesFile")
        tomos = opt_entry(star, "rlnTomoTomogramsFile")
        particles = resolve_image_path(parts, path.parent, datadir, what="particles STAR (_rlnTomoParticlesFile)")
        if tomograms is not None:
            tomo_path = Path(tomograms).resolve()
        elif not tomos:
            raise InputError(f"{path}: the optimisation set has no _rlnTomoTomogramsFile; pass the tomograms STAR")
        else:
            tomo_path = resolve_image_path(tomos, path.parent, datadir, what="tomograms STAR (_rlnTomoTomogramsFile)")
        return path, particles, tomo_path
    if tomograms is not None:
        tomo_path = Path(tomograms)
        if not tomo_path.is_file():
            raise InputError(f"{tomograms}: tomograms STAR not found; check the path given with --tomograms")
        return None, path, tomo_path.resolve()
    for cand in sorted(path.parent.glob("*optimisation_set*.star")):
        try:
            opt = read_star(cand)
        except InputError:
            continue
        if not is_optimisation_set(opt):
            continue
        try:
            parts = resolve_image_path(opt_entry(opt, "rlnTomoParticlesFile"), cand.parent, None)
            if parts == path:
                tomo = resolve_image_path(opt_entry(opt, "rlnTomoTomogramsFile"), cand.parent, datadir)
                return cand.resolve(), path, tomo
        except (InputError, TypeError):
            continue
    sibling = path.with_name(path.stem + "_tomograms.star")
    if sibling.is_file():
        return None, path, sibling.resolve()
    raise InputError(
        f"{path}: this particles STAR needs its tomograms STAR; pass the *_optimisation_set.star file instead, "
        "or give the tomograms STAR with --tomograms FILE"
    )


def tilt_tables(tomo_path: Path, datadir, where_tomo: str):
    """Global table (DataFrame) and per-tomogram tilt tables {name: DataFrame}; ``NAME`` is the reader
    named in messages."""
    tstar = read_star(tomo_path)
    glob = tstar.blocks.get("global")
    if glob is None or glob.kind != "loop" or "rlnTomoName" not in glob.columns:
        raise InputError(f"{where_tomo}: no data_global loop with _rlnTomoName; pass the tomograms STAR (with --tomograms) or the optimisation set")
    gdf = glob.df
    tables = {}
    for name in gdf["rlnTomoName"].astype(str):
        blk = tstar.blocks.get(name)
        if blk is None and "rlnTomoTiltSeriesStarFile" in gdf.columns:
            ref = str(gdf.loc[gdf["rlnTomoName"].astype(str) == name, "rlnTomoTiltSeriesStarFile"].iloc[0])
            ts = read_star(resolve_image_path(ref, tomo_path.parent, datadir, what="tilt-series STAR"))
            blk = ts.find_loop("rlnTomoProjX") or (ts.loops()[0] if ts.loops() else None)
        if blk is None or blk.kind != "loop":
            raise InputError(f"{where_tomo}: tomogram {name!r} has no tilt table (data_{name}); add that block to the tomograms STAR")
        miss = C.missing_columns(blk.columns, TILT_REQUIRED)
        if miss:
            raise InputError(
                f"{where_tomo}: the tilt table of tomogram {name!r} lacks {', '.join(miss)}, needed by the "
                f"'{NAME}' reader (RELION-5 tilt-series files with _rlnTomoXTilt/_rlnTomoYTilt/_rlnTomoZRot "
                "instead of projection matrices are not supported yet); export the set with projection matrices (WarpTools does)"
            )
        if blk.n_rows == 0:
            raise InputError(f"{where_tomo}: the tilt table of tomogram {name!r} has no rows; fix the tomograms STAR")
        tables[name] = blk.df
    return gdf, tables


def frame_rotations(proj_rows: list[np.ndarray], where: str, tomo: str) -> np.ndarray:
    """``(F, 3, 3)`` rotations ``T_f`` from the rows of the frames' projection matrices (scale removed)."""
    m = np.stack(proj_rows, axis=1)[:, :, :3]  # (F, 3 rows, 3)
    det = np.linalg.det(m)
    scale = np.cbrt(det)
    if (np.abs(scale) < 1e-6).any():
        f = int(np.argmax(np.abs(scale) < 1e-6))
        raise InputError(f"{where}: tomogram {tomo!r} frame {f + 1}: projection matrix is singular; fix _rlnTomoProjX/Y/Z of that frame")
    r = m / scale[:, None, None]
    err = np.abs(r @ np.swapaxes(r, 1, 2) - np.eye(3)).max(axis=(1, 2))
    if (err > 2e-3).any() or (det < 0).any():
        f = int(np.argmax((err > 2e-3) | (det < 0)))
        raise InputError(
            f"{where}: tomogram {tomo!r} frame {f + 1}: the 3×3 part of the projection matrix is not a rotation; fix _rlnTomoProjX/Y/Z of that frame"
        )
    return r


def signed_tilts(rot: np.ndarray) -> np.ndarray:
    """Signed stage tilt (deg) of every frame of ONE tomogram (rule in :mod:`~hetfield.io.readers.optimisation_set`)."""
    zrow = rot[:, 2, :]
    mag = np.degrees(np.arccos(np.clip(zrow[:, 2], -1.0, 1.0)))
    ab = zrow[:, :2]
    if not (np.abs(ab) > 1e-9).any():
        return mag
    _, _, vt = np.linalg.svd(ab, full_matrices=False)
    d = vt[0]
    if d[1] < -1e-12 or (abs(d[1]) <= 1e-12 and d[0] > 0):
        d = -d
    s = ab @ d
    return np.where(s < 0, -mag, mag)


def per_tomo_value(gdf, column, tomo_idx, where, default=None):
    """``data_global``'s ``column`` for each index of ``tomo_idx`` (``default`` when absent, else an error)."""
    if column in gdf.columns:
        return C.num(gdf, column, where)[tomo_idx]
    if default is None:
        raise InputError(f"{where}: the data_global table lacks {label(column)}; add it to the tomograms STAR")
    return np.full(len(tomo_idx), float(default))


def frame_arrays(tomo_names, tables, where_tomo: str) -> dict[str, np.ndarray]:
    """Per-frame values of every tomogram, concatenated in tomogram order."""
    keys = ("rot", "tilt", "du", "dv", "da", "dose", "scale", "ps", "bf")
    out: dict[str, list] = {k: [] for k in keys}
    for name in tomo_names:
        t = tables[name]
        w = f"{where_tomo} (tomogram {name})"
        rows = [np.stack(parse_vectors(t[c].to_numpy(), w, c))
                for c in ("rlnTomoProjX", "rlnTomoProjY", "rlnTomoProjZ")]
        if any(r.shape[1] != 4 for r in rows):
            raise InputError(f"{w}: projection matrix rows must have 4 entries; fix _rlnTomoProjX/Y/Z/W")
        rot = frame_rotations(rows, where_tomo, name)
        du = C.num(t, "rlnDefocusU", w)
        out["rot"].append(rot)
        out["tilt"].append(signed_tilts(rot))
        out["du"].append(du)
        out["dv"].append(C.num(t, "rlnDefocusV", w) if "rlnDefocusV" in t.columns else du)
        out["da"].append(C.num(t, "rlnDefocusAngle", w, default=0.0))
        out["dose"].append(C.num(t, "rlnMicrographPreExposure", w))
        out["scale"].append(C.num(t, "rlnCtfScalefactor", w, default=1.0))
        out["ps"].append(C.num(t, "rlnPhaseShift", w, default=np.nan))
        out["bf"].append(C.num(t, "rlnCtfBfactor", w, default=0.0))
    return {k: np.concatenate(v) for k, v in out.items()}
