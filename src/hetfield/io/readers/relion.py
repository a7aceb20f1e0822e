"""RELION single-particle STAR files (3.0, 3.1, 4, 5): one image per particle.

* RELION 3.0: one ``data_`` (or ``data_images``) loop; pixel size ``_rlnImagePixelSize``, or
  ``_rlnDetectorPixelSize`` × 10000 / ``_rlnMagnification``; origins ``_rlnOriginX/Y`` in pixels.
* RELION 3.1 / 4 / 5: ``data_optics`` (before or after ``data_particles``) merged on
  ``_rlnOpticsGroup`` (each group keeps its own pixel size, voltage, Cs, ...); origins
  ``_rlnOriginX/YAngst``.

SPA images have ``stage_tilt_deg = 0`` and ``dose_e_per_A2 = 0``; ``_rlnCtfBfactor`` (when present)
is a real CTF envelope B-factor here, and ``_rlnCtfScalefactor`` (when present) the linear scale of
the CTF, as RELION defines both. Without ``_rlnAngleRot/Tilt/Psi`` the table has
``has_poses=False`` and NaN poses (for ab initio).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hetfield.errors import InputError
from hetfield.io.readers import _common as C
from hetfield.io.star.blocks import StarFile
from hetfield.io.star.columns import merge_optics, parse_image_names
from hetfield.io.star.read import read_star
from hetfield.io.star.write import write_star_subset
from hetfield.table import ParticleTable, SourceInfo

NAME = "relion"

REQUIRED = ("rlnImageName", *C.CTF_COLUMNS, C.PIXEL_SIZE_COLUMNS)


def particle_block(star: StarFile):
    return star.find_loop("rlnImageName")


def merged_columns(star: StarFile) -> list[str]:
    block = particle_block(star)
    cols = list(block.columns) if block is not None else []
    if "optics" in star and star.blocks["optics"].kind == "loop":
        cols += star.blocks["optics"].columns
    return cols


def missing(star: StarFile) -> list[str]:
    if particle_block(star) is None:
        return ["_rlnImageName (no particle table)"]
    return C.missing_columns(merged_columns(star), REQUIRED)


def merged_particles(star: StarFile, where: str):
    """The particle loop with optics columns copied onto each row, and its block."""
    block = particle_block(star)
    if block is None:
        raise InputError(f"{where}: no loop block with _rlnImageName; pass a particle STAR file (one row per image)")
    if block.n_rows == 0:
        raise InputError(f"{where}: the particle table (data_{block.name}) has no data rows; pass a file with particles")
    optics = star.blocks.get("optics")
    df = merge_optics(block.df, optics.df if optics is not None and optics.kind == "loop" else None, where)
    return df, block


def read(path, datadir=None, check_images: bool = True, star: StarFile | None = None) -> ParticleTable:
    path = Path(path).resolve()
    where = str(path)
    star = star or read_star(path)
    df, block = merged_particles(star, where)
    C.require(df.columns, REQUIRED, where, NAME)
    n = len(df)
    apix = C.pixel_size(df, where, NAME)
    index0, paths = parse_image_names(df["rlnImageName"].to_numpy(), where)
    poses, has_poses = C.pose_columns(df, apix, where)
    scale = C.num(df, "rlnCtfScalefactor", where, default=1.0)
    C.check_ctf_scale(scale, where)
    cols = {
        "particle_name": df["rlnImageName"].astype(str).to_numpy(dtype=object),
        "group": (df["rlnMicrographName"].astype(str).to_numpy(dtype=object)
                  if "rlnMicrographName" in df.columns else np.full(n, "", dtype=object)),
        "image_path": paths,
        "image_index": index0,
        **poses,
        "pixel_size_A": apix,
        **C.ctf_columns(df, where),
        "ctf_bfactor_A2": C.num(df, "rlnCtfBfactor", where, default=0.0),
        "ctf_scale": scale,
        "dose_e_per_A2": np.zeros(n),
        "stage_tilt_deg": np.zeros(n),
        "ctf_premultiplied": C.flag(df, "rlnCtfDataAreCtfPremultiplied", where),
        "dose_weighted": np.zeros(n, dtype=bool),
        "optics_group": C.num(df, "rlnOpticsGroup", where, default=1).astype(np.int64),
        "source_row": np.arange(n, dtype=np.int64),
    }
    source = SourceInfo(reader=NAME, files={"particles": path}, datadir=Path(datadir) if datadir else None,
                        extra={"particles_block": block.name})
    return C.assemble(cols, np.arange(n), where=where, source=source, has_poses=has_poses,
                      check_images=check_images, star_dir=path.parent, datadir=datadir,
                      frame=np.zeros(n, dtype=np.int64), presorted=True)


def export(source: SourceInfo, rows, out_path) -> list[Path]:
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    return [write_star_subset(source.files["particles"], source.extra.get("particles_block", "particles"),
                              rows, out_path)]
