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

import numpy as np

from hetfield.errors import InputError
from hetfield.io.star import StarFile, label

GROUP_COLUMNS = ("rlnGroupName", "rlnGroupNumber")
TOMO_COLUMNS = ("rlnTomoName", "rlnTomoParticleName", "rlnTomoVisibleFrames")
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


# --- the facts ---------------------------------------------------------------------------------


def _numbers(df, column):
    """The column as float64, or None when absent or not numeric everywhere."""
    import pandas as pd

    if column not in df.columns:
        return None
    v = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64)
    return None if np.isnan(v).any() else v


def _range(v) -> str:
    lo, hi = float(np.min(v)) + 0.0, float(np.max(v)) + 0.0  # + 0.0: no "-0"
    return f"{lo:g}" if lo == hi else f"{lo:g} to {hi:g}"


def _count_range(sizes) -> str:
    lo, hi = int(sizes.min()), int(sizes.max())
    return str(lo) if lo == hi else f"{lo}–{hi}"


@dataclass
class _Facts:
    evidence: list[str] = field(default_factory=list)
    tilt: list[str] = field(default_factory=list)
    against: list[str] = field(default_factory=list)
    decisive: bool = False
    dose_b: bool = False
    cos_scale: bool = False
    varies: bool = False
    # per grouping column with multi-row groups: "ok" | "repeats dose" | "constant"
    groups: dict[str, str] = field(default_factory=dict)
    repeat_example: dict[str, str] = field(default_factory=dict)

    @property
    def tilted(self) -> bool:
        if self.decisive:
            return True
        if self.against:
            return False
        return self.dose_b + self.cos_scale + self.varies >= 2


def gather_facts(df) -> _Facts:
    """Tilt evidence of a particle table; see the module docstring."""
    import pandas as pd

    f = _Facts()
    n = len(df)
    f.evidence.append(f"{n} rows")
    if "rlnTiltIndex" in df.columns:
        f.decisive = True
        f.tilt.append("_rlnTiltIndex present (tilt-series frame numbers)")
    tomo = [label(c) for c in TOMO_COLUMNS if c in df.columns]
    if tomo:
        f.decisive = True
        f.tilt.append(f"{', '.join(tomo)} present (tomography particles)")
    b = _numbers(df, "rlnCtfBfactor")
    s = _numbers(df, "rlnCtfScalefactor")
    b_info = b is not None and n and not (b == 0).all()
    s_info = s is not None and n and not (s == 1).all()
    if b is None:
        f.evidence.append("no numeric _rlnCtfBfactor")
    elif not b_info:
        f.against.append("_rlnCtfBfactor is 0 on every row (a tilt series records -4·dose there)")
    elif (b > 0).any():
        f.against.append(f"_rlnCtfBfactor is positive on {int((b > 0).sum())} rows (a CTF envelope, not -4·dose)")
    else:
        f.dose_b = True
        f.tilt.append(f"_rlnCtfBfactor <= 0 on every row ({_range(b)}: -4·dose, dose {_range(-b / 4)} e/Å²)")
    if s is None:
        f.evidence.append("no numeric _rlnCtfScalefactor")
    elif not s_info:
        f.evidence.append("_rlnCtfScalefactor is 1 on every row")
    elif ((s > 0) & (s <= 1)).all():
        f.cos_scale = True
        f.tilt.append(f"_rlnCtfScalefactor below 1 ({_range(s)}: cos(tilt), tilts up to "
                      f"{np.degrees(np.arccos(s.min())):.0f}°)")
    else:
        f.against.append(f"_rlnCtfScalefactor outside (0, 1] ({_range(s)}: not cos(tilt))")
    informative = [v for v, ok in ((b, b_info), (s, s_info)) if ok]
    constant = []  # a veto only when no other column groups the rows into tilt series
    for col in GROUP_COLUMNS:
        if col not in df.columns:
            continue
        codes, uniques = pd.factorize(df[col].to_numpy(dtype=object), sort=False)  # ints: fast on 10^6 rows
        sizes = np.bincount(codes)
        if sizes.max() <= 1:
            f.evidence.append(f"one row per {label(col)} ({len(sizes)} groups)")
            continue
        what = f"{_count_range(sizes)} rows per {label(col)} ({len(sizes)} groups)"
        if not informative:
            f.evidence.append(what)
            continue
        multi = sizes[codes] > 1
        distinct = [pd.DataFrame({"k": codes[multi], "v": v[multi]}).groupby("k")["v"].nunique().to_numpy()
                    for v in informative]
        if all((d <= 1).all() for d in distinct):
            f.groups[col] = "constant"
            constant.append(f"{what}, but _rlnCtfBfactor/_rlnCtfScalefactor are constant within each "
                            "(per-micrograph values, not one per tilt image)")
            continue
        f.varies = True
        if b_info:
            dup = pd.DataFrame({"k": codes, "b": b}).duplicated(keep=False).to_numpy() & multi
            if dup.any():
                g = uniques[codes[np.argmax(dup)]]
                f.groups[col] = "repeats dose"
                f.repeat_example[col] = str(g)
                f.evidence.append(f"{what}; group {g!r} repeats a dose, so it holds several particles")
                continue
        f.groups[col] = "ok"
        f.tilt.append(f"{what} with a different dose or tilt on each row")
    if "ok" not in f.groups.values():
        f.against.extend(constant)
    if f.groups and not f.decisive and b_info and all(v != "ok" for v in f.groups.values()):
        if "constant" not in f.groups.values():
            f.against.append("no column groups the rows into tilt series (every group repeats a dose)")
    return f


# --- deciding ----------------------------------------------------------------------------------


def _reader_missing(star: StarFile) -> dict[str, list[str]]:
    from hetfield.io.readers import image_series, nextpyp, optimisation_set, relion

    return {
        "optimisation-set": optimisation_set.missing(star),
        "nextpyp": nextpyp.missing(star),
        "image-series": image_series.missing(star),
        "relion": relion.missing(star),
    }


def _tilt_problems(facts: _Facts, missing: dict[str, list[str]]) -> dict[str, str]:
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

    path = str(path)
    forced = source != "auto"
    if optimisation_set.is_optimisation_set(star):
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


def _near_miss_message(path, facts: _Facts, missing, problems, columns) -> str:
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


def _forced_warnings(path, source, facts: _Facts, problems) -> list[str]:
    out = []
    if source in ("relion", "cryosparc") and facts.tilted:
        out.append(f"{path}: --source {source} reads every row as its own single-particle image, but the rows "
                   f"look like tilt-series images ({'; '.join(facts.tilt[:2])}); doses and tilts are ignored")
    if source in problems:
        out.append(f"{path}: --source {source}: {problems[source]}; check the particle grouping")
    return out


def detect_file(path, source: str = "auto") -> Detection:
    """The Detection of any particle file (``.cs`` or STAR)."""
    from hetfield.io.readers import _is_numpy_file
    from hetfield.io.star import read_star

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file; pass an existing particles STAR or .cs file")
    if _is_numpy_file(p):
        return Detection(str(p), source if source != "auto" else "cryosparc", forced=source != "auto",
                         evidence=("a numpy structured array (cryoSPARC .cs)",))
    return detect_star(p, read_star(p), source)
