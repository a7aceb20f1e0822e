"""Readers for users' particle formats; each returns a validated :class:`~hetfield.data.table.ParticleTable`.

Public API::

    SOURCES                                   # the reader names
    detect_source(path) -> str                # by the columns each reader needs
    read_particles(path, datadir=None, source="auto", check_images=True, tomograms=None)
    export_particles(source_info, source_rows, out_path) -> list[Path]

Detection (extra columns never matter; only the columns a reader needs, and for image-series vs
RELION SPA, the values):

1. ``.cs`` / numpy files -> ``cryosparc``.
2. An optimisation set (``_rlnTomoParticlesFile``) or a particle table with
   ``_rlnTomoVisibleFrames`` -> ``optimisation-set``.
3. ``_rlnTiltIndex`` with ``_rlnGroupNumber``, ``_rlnCtfBfactor``, ``_rlnCtfScalefactor`` -> ``nextpyp``
   (RELION SPA files have ``_rlnGroupNumber`` but never ``_rlnTiltIndex``).
4. ``_rlnGroupName`` + dose/tilt columns with a particle of several rows and a non-zero B-factor or
   a scale factor below 1 -> ``image-series``; otherwise ``relion``.

Nothing matches -> InputError listing, per reader, the columns it misses, and suggesting ``--source``.
``check_images=False`` reads metadata only (no stack is opened; missing stacks are not an error).
"""

from __future__ import annotations

from pathlib import Path

from hetfield.data.table import ParticleTable, SourceInfo
from hetfield.errors import ConfigError, InputError

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


def _is_numpy_file(path: Path) -> bool:
    if path.suffix.lower() in (".cs", ".npy"):
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(6) == b"\x93NUMPY"
    except OSError:
        return False


def _detect_star(path: Path, star) -> str:
    from hetfield.io.readers import image_series, nextpyp, optimisation_set, relion

    if optimisation_set.is_optimisation_set(star):
        return "optimisation-set"
    miss = {
        "optimisation-set": optimisation_set.missing(star),
        "nextpyp": nextpyp.missing(star),
        "image-series": image_series.missing(star),
        "relion": relion.missing(star),
    }
    strong = [s for s in ("optimisation-set", "nextpyp") if not miss[s]]
    if len(strong) > 1:
        raise InputError(
            f"{path}: ambiguous particle file: it has the columns of both {' and '.join(strong)}; "
            f"choose with --source ({' or '.join(strong)})"
        )
    if strong:
        return strong[0]
    if not miss["image-series"] and (image_series.looks_tilted(star) or miss["relion"]):
        return "image-series"
    if not miss["relion"]:
        return "relion"
    if not any(b.kind == "loop" and b.n_rows for b in star.blocks.values()):
        raise InputError(f"{path}: the STAR file has no data rows")
    details = "; ".join(f"{s} lacks {', '.join(m)}" for s, m in miss.items())
    raise InputError(f"{path}: cannot tell which reader fits this file ({details}); fix the file or pass --source")


def detect_source(path) -> str:
    """The reader for ``path`` (see the module docstring for the rules)."""
    from hetfield.io.star import read_star

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if _is_numpy_file(path):
        return "cryosparc"
    return _detect_star(path, read_star(path))


def read_particles(path, datadir=None, source: str = "auto", check_images: bool = True,
                   tomograms=None, mirror: bool | None = None) -> ParticleTable:
    """Read ``path`` with the named (or detected) reader into a validated ParticleTable.

    ``datadir`` is where stacks are looked for when their written paths do not resolve.
    Optimisation sets only: ``tomograms`` is the tomograms STAR when ``path`` is the particles STAR;
    ``mirror`` forces (True) or forbids (False) the WarpTools hand correction (default: by producer;
    see :mod:`hetfield.io.readers.optimisation_set`).
    """
    from hetfield.io.star import read_star

    source = _check_source(source)
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if datadir is not None and not Path(datadir).is_dir():
        raise InputError(f"--datadir {datadir}: no such directory")
    numpy_file = _is_numpy_file(path)
    if source == "cryosparc" or (source == "auto" and numpy_file):
        return _module("cryosparc").read(path, datadir=datadir, check_images=check_images)
    if numpy_file:
        raise InputError(f"{path}: this is a cryoSPARC .cs (numpy) file; use --source cryosparc or auto")
    star = read_star(path)
    if source == "auto":
        source = _detect_star(path, star)
    if source == "optimisation-set":
        kwargs = {"tomograms": tomograms, "mirror": mirror}
    elif tomograms is not None or mirror is not None:
        raise ConfigError(f"tomograms= and mirror= apply to optimisation sets only, not to {source!r} files")
    else:
        kwargs = {}
    return _module(source).read(path, datadir=datadir, check_images=check_images, star=star, **kwargs)


def export_particles(source_info: SourceInfo, source_rows, out_path) -> list[Path]:
    """Write the selected rows of the source particle table in the user's own format (atomically).

    ``source_rows`` are 0-based rows of the source's particle table (``ParticleTable.images.source_row``;
    for image-series and NextPYP files, one row per image). Rows are written once each, in file order.
    Returns the files written.
    """
    name = _check_source(source_info.reader)
    if name == "auto":
        raise ConfigError("export_particles needs the reader that read the file, not 'auto'")
    return _module(name).export(source_info, source_rows, out_path)
