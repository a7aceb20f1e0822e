"""Image-series STAR files (Warp/M particle series, tomoDRGN's simulator): one row per tilt image.

A particle is the set of rows sharing ``_rlnGroupName``, numbered by first appearance, its images
in file order (``frame`` = position within the particle). The per-image columns carry tomoDRGN's
conventions:

* cumulative dose ``= -_rlnCtfBfactor / 4`` (so ``ctf_bfactor_A2 = 0``: the column held dose);
* stage tilt ``= degrees(arccos(clip(_rlnCtfScalefactor, -1, 1)))``, unsigned because only
  ``cos(tilt)`` is stored;
* ``ctf_scale = _rlnCtfScalefactor``: RELION defines it as a linear scale of the CTF, and the
  images of tomoDRGN's simulator do fall with it (docs/internals.md, "CTF scale factor");
* pixel size ``_rlnImagePixelSize``, or ``_rlnDetectorPixelSize`` (× 10000 / ``_rlnMagnification``
  when given), from the particle rows or a merged ``data_optics`` block;
* origins ``_rlnOriginX/Y`` (pixels) or ``_rlnOriginX/YAngst``; phase shift 0 when absent.

The NextPYP reader uses the same machinery with its own particle column (``_rlnGroupNumber``) and
frame column (``_rlnTiltIndex``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hetfield.errors import InputError
from hetfield.io.readers import _common as C
from hetfield.io.readers import relion
from hetfield.io.star.blocks import StarFile
from hetfield.io.star.columns import parse_image_names
from hetfield.io.star.read import read_star
from hetfield.io.star.write import write_star_subset
from hetfield.table import ParticleTable, SourceInfo

NAME = "image-series"

REQUIRED = ("rlnImageName", "rlnGroupName", "rlnCtfBfactor", "rlnCtfScalefactor", *C.ANGLE_COLUMNS,
            *C.CTF_COLUMNS, C.PIXEL_SIZE_COLUMNS)


def missing(star: StarFile) -> list[str]:
    if relion.particle_block(star) is None:
        return ["_rlnImageName (no particle table)"]
    return C.missing_columns(relion.merged_columns(star), REQUIRED)


def read_tilt_rows(path: Path, star: StarFile, *, reader: str, required, group_column: str,
                   frame_column: str | None, datadir, check_images: bool) -> ParticleTable:
    """Shared by image-series and NextPYP: one row per tilt image, grouped by ``group_column``."""
    where = str(path)
    df, block = relion.merged_particles(star, where)
    C.require(df.columns, required, where, reader)
    n = len(df)
    apix = C.pixel_size(df, where, reader)
    index0, paths = parse_image_names(df["rlnImageName"].to_numpy(), where)
    poses, has_poses = C.pose_columns(df, apix, where)
    bfac = C.num(df, "rlnCtfBfactor", where)
    dose = -bfac / 4.0
    if (dose < 0).any():
        r = int(np.argmax(dose < 0))
        raise InputError(
            f"{where}: row {r + 1}: _rlnCtfBfactor = {bfac[r]:g} is positive, but the {reader!r} reader "
            "reads the cumulative dose as -_rlnCtfBfactor/4; is this an SPA file? try --source relion"
        )
    scale = C.num(df, "rlnCtfScalefactor", where, default=1.0)
    C.check_ctf_scale(scale, where)
    tilt = np.degrees(np.arccos(np.clip(scale, -1.0, 1.0)))
    key = df[group_column].astype(str).to_numpy(dtype=object)
    frame = C.num(df, frame_column, where).astype(np.int64) if frame_column and frame_column in df.columns else None
    cols = {
        "particle_name": key,
        "group": (df["rlnMicrographName"].astype(str).to_numpy(dtype=object)
                  if reader != NAME and "rlnMicrographName" in df.columns else np.full(n, "", dtype=object)),
        "image_path": paths,
        "image_index": index0,
        **poses,
        "pixel_size_A": apix,
        **C.ctf_columns(df, where),
        "ctf_bfactor_A2": np.zeros(n),
        "ctf_scale": scale,
        "dose_e_per_A2": dose,
        "stage_tilt_deg": tilt,
        "ctf_premultiplied": C.flag(df, "rlnCtfDataAreCtfPremultiplied", where),
        "dose_weighted": np.zeros(n, dtype=bool),
        "optics_group": C.num(df, "rlnOpticsGroup", where, default=1).astype(np.int64),
        "source_row": np.arange(n, dtype=np.int64),
    }
    source = SourceInfo(reader=reader, files={"particles": path}, datadir=Path(datadir) if datadir else None,
                        extra={"particles_block": block.name, "particle_column": group_column})
    return C.assemble(cols, key, where=where, source=source, has_poses=has_poses,
                      check_images=check_images, star_dir=path.parent, datadir=datadir, frame=frame)


def read(path, datadir=None, check_images: bool = True, star: StarFile | None = None) -> ParticleTable:
    path = Path(path).resolve()
    star = star or read_star(path)
    return read_tilt_rows(path, star, reader=NAME, required=REQUIRED, group_column="rlnGroupName",
                          frame_column=None, datadir=datadir, check_images=check_images)


def export(source: SourceInfo, rows, out_path) -> list[Path]:
    """Rows are image rows of the STAR file (pass every ``source_row`` of the chosen particles)."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    return [write_star_subset(source.files["particles"], source.extra.get("particles_block", ""), rows, out_path)]
