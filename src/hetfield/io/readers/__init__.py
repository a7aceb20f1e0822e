"""Readers for users' particle formats; each returns a validated :class:`~hetfield.table.ParticleTable`.

Public API::

    SOURCES                                   # the reader names
    detect(path, source="auto") -> Detection  # the reader, the evidence, the near misses
    detect_source(path) -> str                # detect(path).reader
    read_particles(path, datadir=None, source="auto", check_images=True, tomograms=None, mirror=None)
    export_particles(source_info, source_rows, out_path) -> list[Path]

Detection (:mod:`hetfield.io.readers.detection`) returns a :class:`~hetfield.io.readers.detection.Detection`
holding the reader, the evidence seen and, per reader, the columns it lacks. Rows that look like
tilt-series images are never read as single particles silently: when no tilt-series reader fits,
that is an error naming the missing columns. ``read_particles`` attaches the Detection to the table
(``table.detection``).

``check_images=False`` reads metadata only (no stack is opened; missing stacks are not an error).
``mirror=True`` reconstructs the other hand: every image's rotation ``A`` becomes ``D A D`` with
``D = diag(1, 1, -1)`` (for RELION angles: the tilt angle changes sign; 2D origins are unchanged);
optimisation sets decide it by producer when ``mirror`` is None (see their reader).
"""

from __future__ import annotations

from pathlib import Path

from hetfield.errors import ConfigError, InputError
from hetfield.table import ParticleTable, SourceInfo

SOURCES = ("image-series", "nextpyp", "optimisation-set", "relion", "cryosparc")

_MODULES = {
    "image-series": "image_series",
    "nextpyp": "nextpyp",
    "optimisation-set": "optimisation_set",
    "relion": "relion",
    "cryosparc": "cryosparc",
}


def _module(name: str):
    import importlib

    return importlib.import_module(f"hetfield.io.readers.{_MODULES[name]}")


def _check_source(source: str) -> str:
    if source == "auto" or source in SOURCES:
        return source
    raise ConfigError(f"--source {source!r} is not a reader; choose one of auto, {', '.join(SOURCES)}")


def detect(path, source: str = "auto"):
    """The :class:`~hetfield.io.readers.detection.Detection` for ``path`` (see the module docstring)."""
    from hetfield.io.readers.detection import detect_file

    return detect_file(path, _check_source(source))


def detect_source(path) -> str:
    """The reader for ``path`` (see :mod:`hetfield.io.readers.detection` for the rules)."""
    return detect(path).reader


def read_particles(path, datadir=None, source: str = "auto", check_images: bool = True,
                   tomograms=None, mirror: bool | None = None) -> ParticleTable:
    """Read ``path`` with the named (or detected) reader into a validated ParticleTable.

    ``datadir`` is where stacks are looked for when their written paths do not resolve.
    Optimisation sets only: ``tomograms`` is the tomograms STAR when ``path`` is the particles STAR;
    ``mirror`` forces (True) or forbids (False) the WarpTools hand correction (default: by producer;
    see :mod:`hetfield.io.readers.optimisation_set`).
    """
    from hetfield.io.readers.detection import Detection, detect_star, is_numpy_file
    from hetfield.io.star.read import read_star

    source = _check_source(source)
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file; pass an existing particles STAR or .cs file")
    if datadir is not None and not Path(datadir).is_dir():
        raise InputError(f"--datadir {datadir}: no such directory; pass the directory that holds the image stacks")
    numpy_file = is_numpy_file(path)
    if source == "cryosparc" or (source == "auto" and numpy_file):
        if tomograms is not None:
            raise ConfigError("--tomograms applies to optimisation sets only, not to cryoSPARC files; drop it")
        det = Detection(str(path), "cryosparc", forced=source != "auto",
                        evidence=("a numpy structured array (cryoSPARC .cs)",))
        table = _module("cryosparc").read(path, datadir=datadir, check_images=check_images)
        return _finish(table, det, mirror)
    if numpy_file:
        raise InputError(f"{path}: this is a cryoSPARC .cs (numpy) file; use --source cryosparc or auto")
    star = read_star(path)
    det = detect_star(path, star, source)
    det.emit_warnings()
    source = det.reader
    if source == "optimisation-set":
        kwargs = {"tomograms": tomograms, "mirror": mirror}
    elif tomograms is not None:
        raise ConfigError(f"--tomograms applies to optimisation sets only, not to {source!r} files; drop it")
    else:
        kwargs = {}
    table = _module(source).read(path, datadir=datadir, check_images=check_images, star=star, **kwargs)
    return _finish(table, det, None if source == "optimisation-set" else mirror)


def _finish(table: ParticleTable, detection, mirror: bool | None) -> ParticleTable:
    """Attach the detection; apply a requested hand flip (optimisation sets do their own)."""
    table.detection = detection
    if mirror is not None:
        table.source.extra["mirror"] = bool(mirror)
        if mirror:  # D A D for D = diag(1, 1, -1): the RELION tilt angle changes sign (see the docstring)
            table.images["euler_tilt_deg"] = -table.images["euler_tilt_deg"]
    return table


def export_particles(source_info: SourceInfo, source_rows, out_path) -> list[Path]:
    """Write the selected rows of the source particle table in the user's own format (atomically).

    ``source_rows`` are 0-based rows of the source's particle table (``ParticleTable.images.source_row``;
    for image-series and NextPYP files, one row per image). Rows are written once each, in file order.
    Returns the files written.
    """
    name = _check_source(source_info.reader)
    if name == "auto":
        raise ConfigError("export_particles needs the reader that read the file, not 'auto'; pass the table's source.reader")
    return _module(name).export(source_info, source_rows, out_path)
