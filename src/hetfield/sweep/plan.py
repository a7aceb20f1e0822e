"""Sweep plans: a grid over beta × zdim × n_classes expanded into runs with deterministic ids.

A plan is a CSV file, one row per run: ``run_id`` then one column per training option that the run
sets (``beta``, ``zdim``, ``n_classes`` and any fixed option from the grid file's ``base``). Nextflow
reads it with ``splitCsv(header: true)``; ``hetfield sweep run`` reads it with :func:`read_plan`.

Run ids are built from the values alone (``beta0p1-zdim8-k3``), so the same grid always gives the
same ids on every machine, and they are safe as file names.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from hetfield.errors import ConfigError

GRID_KEYS = ("beta", "zdim", "n_classes")


def format_value(v: float | int) -> str:
    """``0.1 → 0p1``, ``1.0 → 1``, ``1e-05 → 1em05``, ``-2 → m2``: filesystem-safe and unique."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        v = int(v)
    text = format(v, "g") if isinstance(v, float) else str(v)
    return text.replace("-", "m").replace(".", "p").replace("+", "")


def run_id_for(beta: float, zdim: int, n_classes: int) -> str:
    return f"beta{format_value(beta)}-zdim{zdim}-k{n_classes}"


@dataclass
class Plan:
    runs: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        cols = ["run_id", *GRID_KEYS]
        for run in self.runs:
            cols += [k for k in run if k not in cols]
        return cols

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        for run in self.runs:
            writer.writerow({k: _csv_value(run.get(k)) for k in self.columns})
        return buf.getvalue()


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return v


def _parse_list(option: str, raw, kind: type) -> list:
    """``"0.1,1"``, ``[0.1, 1]`` or a scalar → a list of ``kind``; bad entries name the option."""
    if raw is None:
        return []
    items = [s.strip() for s in raw.split(",")] if isinstance(raw, str) else list(raw) if isinstance(raw, (list, tuple)) else [raw]
    if any(i == "" for i in items):
        raise ConfigError(f"--{option.replace('_', '-')} {raw!r}: empty value in the list; give comma-separated values like 0.1,1")
    out = []
    for item in items:
        try:
            if kind is int:
                if isinstance(item, bool):
                    raise ValueError
                f = float(item)
                if not f.is_integer():
                    raise ValueError
                out.append(int(f))
            else:
                if isinstance(item, bool):
                    raise ValueError
                out.append(float(item))
        except (TypeError, ValueError):
            what = "whole numbers" if kind is int else "numbers"
            raise ConfigError(f"--{option.replace('_', '-')} {raw!r}: {item!r} is not valid; give {what}") from None
    dup = sorted({x for x in out if out.count(x) > 1})
    if dup:
        raise ConfigError(f"--{option.replace('_', '-')} {raw!r}: {', '.join(map(str, dup))} given twice; list each value once")
    return out


def _check_values(beta: list[float], zdim: list[int], n_classes: list[int]) -> None:
    for b in beta:
        if not math.isfinite(b) or b < 0:
            raise ConfigError(f"--beta: {b} is not allowed; the KL weight must be zero or positive")
    for z in zdim:
        if z < 0:
            raise ConfigError(f"--zdim: {z} is not allowed; the latent dimension must be 0 or more")
    for k in n_classes:
        if k < 1:
            raise ConfigError(f"--n-classes: {k} is not allowed; give at least one class")


def make_plan(beta=None, zdim=None, n_classes=None, base: dict[str, Any] | None = None) -> Plan:
    """Expand the grid; ``beta`` defaults to ``1/zdim`` per run when not swept.

    Runs with ``zdim 0`` have no latent, so beta does not matter: they are kept once, with beta 0.
    """
    from hetfield.train.config import FIELD_NAMES

    betas = _parse_list("beta", beta, float)
    zdims = _parse_list("zdim", zdim, int) or [8]
    ks = _parse_list("n_classes", n_classes, int) or [1]
    _check_values(betas, zdims, ks)
    base = dict(base or {})
    unknown = sorted(set(base) - set(FIELD_NAMES))
    if unknown:
        raise ConfigError(f"grid base: unknown training option(s) {', '.join(unknown)}")
    clash = sorted(set(base) & set(GRID_KEYS))
    if clash:
        raise ConfigError(f"grid base: {', '.join(clash)} are grid axes; list them under grid, not base")

    runs: list[dict[str, Any]] = []
    notes: list[str] = []
    seen: set[str] = set()
    for b, z, k in itertools.product(betas or [None], zdims, ks):
        bb = 0.0 if z == 0 else (b if b is not None else 1.0 / z)
        if z == 0 and b not in (None, 0.0) and len(betas) > 1:
            note = "zdim 0 has no latent: beta does not apply, its runs are kept once with beta 0"
            if note not in notes:
                notes.append(note)
        rid = run_id_for(bb, z, k)
        if rid in seen:
            continue
        seen.add(rid)
        runs.append({"run_id": rid, "beta": bb, "zdim": z, "n_classes": k, **base})
    if not runs:
        raise ConfigError("the grid is empty; give at least one value of --zdim and --n-classes")
    return Plan(runs, notes)


def load_grid_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``grid.yaml``: ``{grid: {beta: [...], zdim: [...], n_classes: [...]}, base: {option: value}}``."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"--grid {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(f"--grid {path}: unreadable YAML{f' at line {mark.line + 1}' if mark else ''}") from None
    if not isinstance(data, dict) or not isinstance(data.get("grid", {}), dict) or not isinstance(data.get("base", {}), dict):
        raise ConfigError(f"--grid {path}: expected 'grid:' (beta/zdim/n_classes lists) and optional 'base:' mappings")
    extra = sorted(set(data) - {"grid", "base"})
    if extra:
        raise ConfigError(f"--grid {path}: unknown section(s) {', '.join(extra)}; use grid and base")
    grid = {str(k).replace("-", "_"): v for k, v in (data.get("grid") or {}).items()}
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        raise ConfigError(f"--grid {path}: unknown grid axis {', '.join(unknown)}; sweep beta, zdim and n_classes (fix other options under base)")
    base = {str(k).replace("-", "_"): v for k, v in (data.get("base") or {}).items()}
    return grid, base


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def read_plan(path: Path) -> list[dict[str, Any]]:
    """Rows of a plan CSV with values typed as the training options they set."""
    from hetfield.train.config import TrainConfig

    if not path.is_file():
        raise ConfigError(f"{path}: no such plan file; make one with `hetfield sweep plan`")
    types = {f.name: f.type for f in fields(TrainConfig)}
    rows = list(csv.DictReader(path.read_text().splitlines()))
    if not rows:
        raise ConfigError(f"{path}: the plan has no runs")
    header = list(rows[0].keys())
    if "run_id" not in header:
        raise ConfigError(f"{path}: no run_id column; make the plan with `hetfield sweep plan`")
    unknown = [c for c in header if c != "run_id" and c not in types]
    if unknown:
        raise ConfigError(f"{path}: unknown column(s) {', '.join(unknown)}; columns after run_id must be training options")
    out, ids = [], set()
    for i, row in enumerate(rows, start=2):
        rid = (row.get("run_id") or "").strip()
        if not _ID.match(rid):
            raise ConfigError(f"{path}: line {i}: run_id {rid!r} is not a safe directory name")
        if rid in ids:
            raise ConfigError(f"{path}: line {i}: run_id {rid} appears twice")
        ids.add(rid)
        typed: dict[str, Any] = {"run_id": rid}
        for k, v in row.items():
            if k == "run_id" or v is None or v.strip() == "":
                continue
            typed[k] = _typed(path, i, k, v.strip(), types[k])
        out.append(typed)
    return out


def _typed(path: Path, line: int, key: str, value: str, type_name) -> Any:
    t = str(type_name)
    try:
        if "bool" in t:
            if value.lower() in ("true", "1", "yes"):
                return True
            if value.lower() in ("false", "0", "no"):
                return False
            raise ValueError
        if "int" in t and "float" not in t:
            f = float(value)
            if not f.is_integer():
                raise ValueError
            return int(f)
        if "float" in t:
            return float(value)
        return value
    except ValueError:
        raise ConfigError(f"{path}: line {line}: {key} = {value!r} is not a valid {t}") from None
