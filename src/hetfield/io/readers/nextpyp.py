"""NextPYP's particle-stack STAR ("Save particle stacks" for tomoDRGN): one row per tilt image.

What NextPYP writes (``pyp`` ``cistem_star_file.Parameters.to_star``, one file per tilt series,
tab-separated; checked against its source):

* ``data_optics``: ``_rlnOpticsGroupName, _rlnOpticsGroup, _rlnMicrographOriginalPixelSize,
  _rlnVoltage, _rlnSphericalAberration, _rlnAmplitudeContrast, _rlnImagePixelSize, _rlnImageSize,
  _rlnImageDimensionality`` (= 2);
* ``data_particles``: ``_rlnImageName`` (``NNN@<tilt series>_stack.mrcs``), ``_rlnMicrographName``
  (the tilt series), ``_rlnCoordinateX/Y``, ``_rlnAnglePsi/Tilt/Rot`` (per image), ``_rlnOriginX/YAngst``,
  ``_rlnDefocusU/V/Angle``, ``_rlnPhaseShift``, ``_rlnOpticsGroup``, ``_rlnGroupNumber``
  (``<tilt-series id>_<particle id>``, unique in the data set: the particle), ``_rlnCtfBfactor``
  (``-4 × tilt index × dose per tilt``), ``_rlnCtfScalefactor`` (``cos(tilt angle)``),
  ``_rlnLogLikeliContribution``, ``_rlnRandomSubset``, ``_rlnTiltIndex`` (the frame) and
  ``_rlnGroupName`` (the particle index *within its tilt series*, so NOT unique across tilt
  series: grouping by it, as the image-series reader would, merges particles of different series).

Detection rule (see ``readers.detect_source``): NextPYP is recognised by ``_rlnTiltIndex`` together
with ``_rlnGroupNumber``, ``_rlnCtfBfactor`` and ``_rlnCtfScalefactor``. RELION 3.1+ SPA files carry
``_rlnGroupNumber`` (and often the two CTF columns) but never ``_rlnTiltIndex``, so they are not
taken for NextPYP. ``--source nextpyp`` reads a file without ``_rlnTiltIndex`` (frames are then the
position within the particle).
"""

from __future__ import annotations

from pathlib import Path

from hetfield.io.readers import _common as C
from hetfield.io.readers import image_series, relion
from hetfield.io.star.blocks import StarFile
from hetfield.io.star.read import read_star
from hetfield.table import ParticleTable, SourceInfo

NAME = "nextpyp"

REQUIRED = ("rlnImageName", "rlnGroupNumber", "rlnCtfBfactor", "rlnCtfScalefactor", *C.ANGLE_COLUMNS,
            *C.CTF_COLUMNS, C.PIXEL_SIZE_COLUMNS)
DETECT = REQUIRED + ("rlnTiltIndex",)


def missing(star: StarFile) -> list[str]:
    if relion.particle_block(star) is None:
        return ["_rlnImageName (no particle table)"]
    return C.missing_columns(relion.merged_columns(star), DETECT)


def read(path, datadir=None, check_images: bool = True, star: StarFile | None = None) -> ParticleTable:
    path = Path(path).resolve()
    star = star or read_star(path)
    return image_series.read_tilt_rows(path, star, reader=NAME, required=REQUIRED, group_column="rlnGroupNumber",
                                       frame_column="rlnTiltIndex", datadir=datadir, check_images=check_images)


def export(source: SourceInfo, rows, out_path) -> list[Path]:
    return image_series.export(source, rows, out_path)
