"""Helpers shared by the readers: column extraction with defaults, table assembly, stack checks."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from hetfield.errors import InputError
from hetfield.io.star.blocks import label
from hetfield.io.star.columns import numeric_column
from hetfield.table import IMAGE_COLUMNS, ParticleTable, SourceInfo, validate_images

PIXEL_SIZE_COLUMNS = ("rlnImagePixelSize", "rlnDetectorPixelSize")
ANGLE_COLUMNS = ("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")
CTF_COLUMNS = ("rlnDefocusU", "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast")


class _Frame:
    """A DataFrame seen as a block for :func:`numeric_column` (merged particles + optics)."""

    def __init__(self, df):
        self.df = df
        self.columns = list(df.columns)


def num(df, column: str, where: str, default=None) -> np.ndarray:
    """Numeric column of ``df`` (float64), ``default`` when absent (InputError if no default)."""
    if column in df.columns:
        return numeric_column(_Frame(df), column, where)
    if default is None:
        raise InputError(f"{where}: column {label(column)} is missing; add it, or pick another reader with --source")
    return np.full(len(df), float(default))


def pixel_size(df, where: str, reader: str) -> np.ndarray:
    """``rlnImagePixelSize``, else ``rlnDetectorPixelSize`` (× 10000 / ``rlnMagnification`` if given)."""
    if "rlnImagePixelSize" in df.columns:
        return num(df, "rlnImagePixelSize", where)
    if "rlnDetectorPixelSize" in df.columns:
        apix = num(df, "rlnDetectorPixelSize", where)
        if "rlnMagnification" in df.columns:
            apix = apix * 10000.0 / num(df, "rlnMagnification", where)
        return apix
    raise InputError(
        f"{where}: no pixel size: the {reader!r} reader needs _rlnImagePixelSize (particles or optics) "
        "or _rlnDetectorPixelSize; add one or pass --angpix"
    )


def ctf_columns(df, where: str) -> dict[str, np.ndarray]:
    """CTF parameters per row; ``rlnDefocusV`` defaults to U, angles and phase shift to 0."""
    du = num(df, "rlnDefocusU", where)
    return {
        "defocus_u_A": du,
        "defocus_v_A": num(df, "rlnDefocusV", where) if "rlnDefocusV" in df.columns else du.copy(),
        "defocus_angle_deg": num(df, "rlnDefocusAngle", where, default=0.0),
        "voltage_kV": num(df, "rlnVoltage", where),
        "cs_mm": num(df, "rlnSphericalAberration", where),
        "amplitude_contrast": num(df, "rlnAmplitudeContrast", where),
        "phase_shift_deg": num(df, "rlnPhaseShift", where, default=0.0),
    }


def pose_columns(df, apix: np.ndarray, where: str) -> tuple[dict[str, np.ndarray], bool]:
    """RELION Euler angles and origins (Å); NaN and ``has_poses=False`` without angles."""
    n = len(df)
    has = all(c in df.columns for c in ANGLE_COLUMNS)
    if not has:
        nan = np.full(n, np.nan)
        return {c: nan.copy() for c in ("euler_rot_deg", "euler_tilt_deg", "euler_psi_deg",
                                         "origin_x_A", "origin_y_A")}, False
    out = {
        "euler_rot_deg": num(df, "rlnAngleRot", where),
        "euler_tilt_deg": num(df, "rlnAngleTilt", where),
        "euler_psi_deg": num(df, "rlnAnglePsi", where),
    }
    for axis in ("X", "Y"):
        key = f"origin_{axis.lower()}_A"
        if f"rlnOrigin{axis}Angst" in df.columns:
            out[key] = num(df, f"rlnOrigin{axis}Angst", where)
        elif f"rlnOrigin{axis}" in df.columns:
            out[key] = num(df, f"rlnOrigin{axis}", where) * apix
        else:
            out[key] = np.zeros(n)
    return out, True


def check_ctf_scale(scale: np.ndarray, where: str, rows: np.ndarray | None = None,
                    what: str = "_rlnCtfScalefactor") -> None:
    """A CTF scale must be positive: 0 means the image carries no signal, a negative one flips it."""
    bad = ~(scale > 0)
    if bad.any():
        i = int(np.argmax(bad))
        r = int(rows[i]) if rows is not None else i
        raise InputError(
            f"{where}: row {r + 1}: {what} = {scale[i]:g}; a CTF scale factor must be positive (it multiplies "
            "the CTF); fix the value or remove the row"
        )


def flag(df, column: str, where: str) -> np.ndarray:
    """A 0/1 column as bool (False when absent)."""
    if column not in df.columns:
        return np.zeros(len(df), dtype=bool)
    return num(df, column, where) != 0


def missing_columns(columns, requirements) -> list[str]:
    """Requirements are column names or tuples of alternatives; returns the unmet ones as labels."""
    have = set(columns)
    out = []
    for req in requirements:
        if isinstance(req, tuple):
            if not any(c in have for c in req):
                out.append(" or ".join(label(c) for c in req))
        elif req not in have:
            out.append(label(req))
    return out


def require(columns, requirements, where: str, reader: str) -> None:
    missing = missing_columns(columns, requirements)
    if missing:
        raise InputError(
            f"{where}: missing column(s) {', '.join(missing)}, needed by the {reader!r} reader; "
            "add them, or pick another reader with --source"
        )


# --- assembling and checking the table --------------------------------------------------------


def check_stacks(image_path: np.ndarray, image_index: np.ndarray, source_row: np.ndarray,
                 where: str) -> dict[str, int]:
    """Every stack opens, is square with one even box size, and every index is inside it.

    Returns ``{path: n_images}``. Old-style headers give one summary warning.
    """
    import pandas as pd

    from hetfield.io.mrc import MRCHeaderWarning, read_header

    codes, uniques = pd.factorize(image_path, sort=False)
    n_images = np.empty(len(uniques), dtype=np.int64)
    boxes = np.empty(len(uniques), dtype=np.int64)
    old = []
    for i, p in enumerate(uniques):
        h = read_header(p, warn=False)
        if h.nx != h.ny:
            raise InputError(
                f"{p}: images are {h.ny}×{h.nx} pixels; hetfield needs square images "
                "(re-extract the particles with a square box)"
            )
        n_images[i], boxes[i] = h.nz, h.nx
        if h.old_style:
            old.append(p)
    if old:
        warnings.warn(
            f"{where}: {len(old)} image stack(s) have old-style MRC headers (e.g. {old[0]}); read permissively",
            MRCHeaderWarning,
            stacklevel=3,
        )
    if (boxes != boxes[0]).any():
        j = int(np.argmax(boxes != boxes[0]))
        raise InputError(
            f"{where}: image stacks have different box sizes: {uniques[0]} is {boxes[0]} px, "
            f"{uniques[j]} is {boxes[j]} px; re-extract all particles with one box size"
        )
    if boxes[0] % 2:
        raise InputError(
            f"{where}: the box size is {boxes[0]} px (odd, e.g. {uniques[0]}); hetfield needs an even box; "
            "re-extract with an even box size"
        )
    size = n_images[codes]
    bad = (image_index < 0) | (image_index >= size)
    if bad.any():
        r = int(np.argmax(bad))
        raise InputError(
            f"{where}: row {int(source_row[r]) + 1} refers to image {int(image_index[r]) + 1} of "
            f"{image_path[r]}, which holds only {int(size[r])} image(s); fix the index or the stack"
        )
    return dict(zip(uniques, n_images.tolist()))


def assemble(columns: dict[str, np.ndarray], key, *, where: str, source: SourceInfo, has_poses: bool,
             check_images: bool, star_dir, datadir, frame: np.ndarray | None = None,
             extra: dict[str, np.ndarray] | None = None, presorted: bool = False) -> ParticleTable:
    """Group rows into particles by ``key`` (first appearance order), resolve stacks, check, validate.

    ``columns`` holds every IMAGE_COLUMNS entry except ``particle``, ``frame`` (when ``frame`` is
    None it becomes the position within the particle) and ``image_path``, which is given as written
    in ``columns["image_path"]`` and resolved here.
    """
    import pandas as pd

    from hetfield.io.paths import resolve_image_paths

    n = len(columns["source_row"])
    if n == 0:
        raise InputError(f"{where}: no particle images found; the particle table has no data rows; pass a file with at least one particle")
    codes, _ = pd.factorize(np.asarray(key), sort=False)
    order = np.arange(n) if presorted else np.argsort(codes, kind="stable")
    cols = {k: np.asarray(v)[order] for k, v in columns.items()}
    particle = codes[order].astype(np.int64)
    if not presorted and (np.diff(particle) < 0).any():  # pragma: no cover - argsort guarantees this
        raise AssertionError("particle order")
    starts = np.flatnonzero(np.r_[True, particle[1:] != particle[:-1]])
    if frame is None:
        counts = np.diff(np.r_[starts, n])
        cols["frame"] = np.arange(n) - np.repeat(starts, counts)
    else:
        cols["frame"] = np.asarray(frame)[order]
    cols["particle"] = particle
    if "ctf_scale" not in cols:
        cols["ctf_scale"] = np.ones(n)
    cols["image_path"] = resolve_image_paths(cols["image_path"], star_dir, datadir, strict=check_images)
    cols["image_index"] = np.where(cols["image_index"] < 0, 0, cols["image_index"]).astype(np.int64)
    if check_images:
        check_stacks(cols["image_path"], cols["image_index"], cols["source_row"], where)
    data = {}
    for c, t in IMAGE_COLUMNS.items():
        v = cols[c]
        if t == "str":
            data[c] = v if v.dtype == object else v.astype(str).astype(object)
        else:
            data[c] = v.astype(t)
    for k, v in (extra or {}).items():
        data[k] = np.asarray(v)[order]
    df = pd.DataFrame(data)
    if check_images:
        validate_images(df, where, has_poses=has_poses)
    else:
        dup = df.duplicated(subset=["image_path", "image_index"], keep="first").to_numpy()
        if dup.any():
            r = int(np.argmax(dup))
            warnings.warn(
                f"{where}: row {int(df['source_row'].iloc[r]) + 1} refers to the same image as an earlier "
                "row (metadata-only read; reading the images would reject this)",
                UserWarning,
                stacklevel=3,
            )
        # metadata-only: every check except duplicates (the stacks were not looked at)
        validate_images(df.assign(image_index=np.arange(len(df))), where, has_poses=has_poses)
    return ParticleTable(images=df, source=source, has_poses=has_poses)


def star_dir_of(path) -> Path:
    return Path(path).resolve().parent
