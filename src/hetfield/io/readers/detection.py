"""Which reader fits a particle file, with the evidence for the choice and the near misses.

Detection returns a :class:`Detection`, not a boolean: the reader chosen, the facts seen (for
``hetfield inspect`` and ``dataset.yaml``), the facts that point at tilt series and those against,
and per reader the columns it lacks. Rules (extra columns never matter):

1. ``.cs`` / numpy files -> ``cryosparc``; an optimisation set (``_rlnTomoParticlesFile``) ->
   ``optimisation-set``.
2. Tilt evidence in the particle table (all of these are seen, and recorded):

   * decisive: ``_rlnTiltIndex`` (frame numbers), or ``_rlnTomo*`` particle columns;
   * ``_rlnCtfBfactor <= 0`` everywhere and somewhere ``< 0`` (``-4 x dose``, Warp's convention);
   * ``_rlnCtfScalefactor`` in ``(0, 1]`` and somewhere ``< 1`` (``cos(tilt)``);
   * several rows per ``_rlnGroupName`` / ``_rlnGroupNumber`` whose B-factors or scale factors
     differ within a group (the images of one particle have different doses and tilts).

   Against (each one vetoes the non-decisive evidence): B-factors all 0 (a tilt series records
   dose there), positive B-factors (a CTF envelope), scale factors outside ``(0, 1]``, values
   constant within every multi-row group (per-micrograph CTF refinement of SPA data), or no
   grouping column whose groups have distinct doses (a tilt series never repeats a dose within a
   particle, so such groups are micrographs, not particles).

   The rows are tilt images when a decisive marker is present, or, with no veto, at least two of
   the other three facts hold.
3. Tilt images go to ``nextpyp`` (``_rlnTiltIndex`` + ``_rlnGroupNumber`` + the rest) or
   ``image-series`` (grouped by ``_rlnGroupName``, which must not repeat a dose within a group) or
   ``optimisation-set``. When none can read them, that is an :class:`InputError` naming each tilt
   reader's missing columns (or its bad grouping) and what to do: fix the column, or choose a
   reader with ``--source``. A tilt series is never read as single particles silently.
4. Otherwise ``relion`` (SPA) when its columns are there; with multi-row groups and some tilt
   evidence (vetoed), a warning says so. Nothing fits -> InputError listing each reader's
   missing columns.

With ``--source`` the named reader is used; the evidence is still gathered, and reading tilt
images as SPA (or one image-series group holding several particles) is a warning.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hetfield.errors import InputError
from hetfield.io.readers.evidence import GROUP_COLUMNS, TOMO_COLUMNS, Facts, gather_facts
from hetfield.io.star.blocks import StarFile, label

TILT_READERS = ("optimisation-set", "nextpyp", "image-series")


class DetectionWarning(UserWarning):
    """A reader was chosen (or forced) although some evidence points elsewhere."""


@dataclass(frozen=True)
class Detection:
    """Why a reader was chosen for a file.

    ``evidence``: every fact seen, in words; ``tilt_evidence`` / ``against_tilt``: the facts for and
    against the rows being tilt-series images; ``missing``: per reader, the columns it lacks (empty:
    it could read the file); ``problems``: per reader, other reasons it cannot (a grouping that
    merges particles); ``warnings``: what the user is told while reading.
    """

    path: str
    reader: str
    forced: bool = False
    tilted: bool = False
    evidence: tuple[str, ...] = ()
    tilt_evidence: tuple[str, ...] = ()
    against_tilt: tuple[str, ...] = ()
    missing: dict[str, tuple[str, ...]] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def reason(self) -> str:
        """One line: the reader and why."""
        how = "forced with --source" if self.forced else "detected"
        facts = self.tilt_evidence if self.tilted else (self.against_tilt or self.evidence)
        why = "; ".join(facts[:3]) if facts else "its columns"
        kind = "tilt-series images" if self.tilted else "single-particle images"
        return f"{self.reader} ({how}): rows are {kind}: {why}"

    def as_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        d["missing"] = {k: list(v) for k, v in self.missing.items()}
        d["reason"] = self.reason()
        return d

    def emit_warnings(self) -> None:
        for w in self.warnings:
            warnings.warn(w, DetectionWarning, stacklevel=3)


# --- deciding ----------------------------------------------------------------------------------


def _reader_missing(star: StarFile) -> dict[str, list[str]]:
    from hetfield.io.readers import image_series, nextpyp, optimisation_set, relion

    return {
        "optimisation-set": optimisation_set.missing(star),
        "nextpyp": nextpyp.missing(star),
        "image-series": image_series.missing(star),
        "relion": relion.missing(star),
    }


def _tilt_problems(facts: Facts, missing: dict[str, list[str]]) -> dict[str, str]:
    problems = {}
    if facts.groups.get("rlnGroupName") == "repeats dose":
        g = facts.repeat_example["rlnGroupName"]
        hint = (" (NextPYP writes the particle as _rlnGroupNumber and the frame as _rlnTiltIndex)"
                if facts.groups.get("rlnGroupNumber") == "ok" else "")
        problems["image-series"] = f"its _rlnGroupName {g!r} repeats a dose, so one group holds several particles{hint}"
    return problems


def _fits(reader: str, missing, problems) -> bool:
    return not missing[reader] and reader not in problems


def detect_star(path, star: StarFile, source: str = "auto") -> Detection:
    """The Detection for a STAR file (``source`` forces the reader but the evidence is still gathered)."""
    from hetfield.io.readers import optimisation_set, relion
    from hetfield.io.readers.optimisation_files import is_optimisation_set

    path = str(path)
    forced = source != "auto"
    if is_optimisation_set(star):
        return Detection(path, source if forced else "optimisation-set", forced=forced, tilted=True,
                         evidence=("an optimisation set (_rlnTomoParticlesFile)",),
                         tilt_evidence=("an optimisation set (_rlnTomoParticlesFile)",))
    missing = _reader_missing(star)
    block = relion.particle_block(star) or optimisation_set.particle_block(star)
    if block is None:
        if forced:
            return Detection(path, source, forced=True, missing={k: tuple(v) for k, v in missing.items()})
        details = "; ".join(f"{s} lacks {', '.join(m)}" for s, m in missing.items())
        raise InputError(f"{path}: no particle table (no loop with _rlnImageName) ({details}); "
                         "pass a particles STAR file, or choose a reader with --source")
    if block.n_rows == 0:
        if forced:
            return Detection(path, source, forced=True, missing={k: tuple(v) for k, v in missing.items()})
        raise InputError(f"{path}: the STAR file has no data rows; pass a particle file with at least one particle")
    facts = gather_facts(block.df)  # the evidence lives in per-image columns, never in data_optics
    problems = _tilt_problems(facts, missing)
    base = dict(path=path, evidence=tuple(facts.evidence), tilt_evidence=tuple(facts.tilt),
                against_tilt=tuple(facts.against), missing={k: tuple(v) for k, v in missing.items()},
                problems=problems)
    if forced:
        return Detection(reader=source, forced=True, tilted=facts.tilted,
                         warnings=tuple(_forced_warnings(path, source, facts, problems)), **base)
    if facts.tilted:
        if "rlnTiltIndex" in block.columns and _fits("nextpyp", missing, problems):
            return Detection(reader="nextpyp", tilted=True, **base)
        for reader in ("optimisation-set", "image-series", "nextpyp"):
            if reader == "optimisation-set" and not any(c in block.columns for c in TOMO_COLUMNS):
                continue
            if _fits(reader, missing, problems):
                return Detection(reader=reader, tilted=True, **base)
        raise InputError(_near_miss_message(path, facts, missing, problems, block.columns))
    if not missing["relion"]:
        warns = []
        multi = [c for c in GROUP_COLUMNS if c in facts.groups]
        if multi and facts.varies:  # values differ within a group: a tilt series would look like this
            warns.append(
                f"{path}: read as single-particle (SPA) images although several rows share a "
                f"{label(multi[0])} and {facts.tilt[0] if facts.tilt else 'their CTF values differ'}; "
                f"not tilt series because {facts.against[0] if facts.against else 'the evidence is weak'}; "
                "if they are tilt series, fix the file or pass --source image-series"
            )
        return Detection(reader="relion", warnings=tuple(warns), **base)
    details = "; ".join(f"{s} lacks {', '.join(m)}" for s, m in missing.items())
    raise InputError(f"{path}: cannot tell which reader fits this file ({details}); fix the file or pass --source")


def _near_miss_message(path, facts: Facts, missing, problems, columns) -> str:
    readers = ["image-series"]
    if "rlnTiltIndex" in columns or "rlnGroupNumber" in columns:
        readers.insert(0, "nextpyp")  # only files with NextPYP's own columns are near misses of it
    if any(c in columns for c in TOMO_COLUMNS):
        readers.insert(0, "optimisation-set")
    why = []
    for r in readers:
        parts = []
        if missing[r]:
            parts.append(f"lacks {', '.join(missing[r])}")
        if r in problems:
            parts.append(problems[r])
        why.append(f"{r}: {' and '.join(parts)}")
    closest = min(readers, key=lambda r: len(missing[r]) + (r in problems))
    fix = (f"fix or add {', '.join(missing[closest])} for the {closest} reader" if missing[closest]
           else f"fix the particle column for the {closest} reader")
    forced = ["--source relion reads every image as its own single particle"]
    if missing["nextpyp"] == ["_rlnTiltIndex"]:
        forced.insert(0, "--source nextpyp takes the frames in file order")
    return (
        f"{path}: the rows look like tilt-series images ({'; '.join(facts.tilt)}), but no tilt-series "
        f"reader can read them ({'; '.join(why)}); {fix}, or choose a reader with --source "
        f"({'; '.join(forced)})"
    )


def _forced_warnings(path, source, facts: Facts, problems) -> list[str]:
    out = []
    if source in ("relion", "cryosparc") and facts.tilted:
        out.append(f"{path}: --source {source} reads every row as its own single-particle image, but the rows "
                   f"look like tilt-series images ({'; '.join(facts.tilt[:2])}); doses and tilts are ignored")
    if source in problems:
        out.append(f"{path}: --source {source}: {problems[source]}; check the particle grouping")
    return out


def is_numpy_file(path: Path) -> bool:
    """A cryoSPARC ``.cs`` (or any ``.npy``) file: by suffix, else by numpy's magic bytes."""
    if path.suffix.lower() in (".cs", ".npy"):
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(6) == b"\x93NUMPY"
    except OSError:
        return False


def detect_file(path, source: str = "auto") -> Detection:
    """The Detection of any particle file (``.cs`` or STAR)."""
    from hetfield.io.star.read import read_star

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file; pass an existing particles STAR or .cs file")
    if is_numpy_file(p):
        return Detection(str(p), source if source != "auto" else "cryosparc", forced=source != "auto",
                         evidence=("a numpy structured array (cryoSPARC .cs)",))
    return detect_star(p, read_star(p), source)
