"""The facts a particle table's columns give about its rows being tilt-series images.

:func:`gather_facts` records, in words, everything it sees (per-image B-factors and scale factors,
grouping columns and whether values differ within a group) and the vetoes against tilt series;
:mod:`hetfield.io.readers.detection` decides the reader from these facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hetfield.io.star.blocks import label

GROUP_COLUMNS = ("rlnGroupName", "rlnGroupNumber")
TOMO_COLUMNS = ("rlnTomoName", "rlnTomoParticleName", "rlnTomoVisibleFrames")


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
class Facts:
    """What the columns of a particle table say; ``tilted`` applies rule 2 of :mod:`~hetfield.io.readers.detection`."""

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


def gather_facts(df) -> Facts:
    """Tilt evidence of a particle table (rule 2 of :mod:`~hetfield.io.readers.detection`)."""
    import pandas as pd

    f = Facts()
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
