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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hetfield.errors import ConfigError
from hetfield.sweep.options import EXAMPLE_CELL, EXAMPLE_YAML, coerce_option, default_text, option_types

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
        return "none"  # an option set to None (e.g. lr_encoder: the same as lr); an empty cell is an error
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
            raise ConfigError(f"--beta: {b} is not allowed; the KL weight must be zero or positive: give e.g. --beta 0.1,1")
    for z in zdim:
        if z < 0:
            raise ConfigError(f"--zdim: {z} is not allowed; the latent dimension must be 0 or more: give e.g. --zdim 0,8")
    for k in n_classes:
        if k < 1:
            raise ConfigError(f"--n-classes: {k} is not allowed; give at least one class, e.g. --n-classes 1,2")


def make_plan(beta=None, zdim=None, n_classes=None, base: dict[str, Any] | None = None) -> Plan:
    """Expand the grid; ``beta`` defaults to training's (``2·std_noise²``) per run when not swept.

    Runs with ``zdim 0`` have no latent, so beta does not matter: they are kept once, with beta 0.
    """
    from hetfield.train.config import FIELD_NAMES, TrainConfig

    betas = _parse_list("beta", beta, float)
    zdims = _parse_list("zdim", zdim, int) or [8]
    ks = _parse_list("n_classes", n_classes, int) or [1]
    _check_values(betas, zdims, ks)
    base = dict(base or {})
    unknown = sorted(set(base) - set(FIELD_NAMES))
    if unknown:
        raise ConfigError(f"grid base: unknown training option(s) {', '.join(unknown)}; use one of {', '.join(FIELD_NAMES)}")
    clash = sorted(set(base) & set(GRID_KEYS))
    if clash:
        raise ConfigError(f"grid base: {', '.join(clash)} are grid axes; list them under grid, not base")
    base = {k: coerce_option(k, v, "grid base", EXAMPLE_YAML) for k, v in base.items()}

    runs: list[dict[str, Any]] = []
    notes: list[str] = []
    seen: set[str] = set()
    for b, z, k in itertools.product(betas or [None], zdims, ks):
        bb = 0.0 if z == 0 else (b if b is not None else TrainConfig(zdim=z, std_noise=base.get("std_noise", 1.0)).effective_beta)
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
    _check_runs(runs)
    return Plan(runs, notes)


def _check_runs(runs: list[dict[str, Any]]) -> None:
    """Every run must be one ``train`` accepts (ranges and combinations too), before the plan exists."""
    from hetfield.train.config import resolve_config

    for run in runs:
        try:
            resolve_config(None, {k: v for k, v in run.items() if k != "run_id"})
        except ConfigError as err:
            raise ConfigError(f"run {run['run_id']}: {err}; change the value (--set, --grid or the axis)") from None


def load_grid_file(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """``grid.yaml``: ``{grid: {beta: [...], zdim: [...], n_classes: [...]}, base: {option: value}}``."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"--grid {path}: {'is a directory' if path.is_dir() else 'no such file'}; give the grid YAML file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"--grid {path}: not a text file; give a YAML file with grid: and base:") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(f"--grid {path}: unreadable YAML{f' at line {mark.line + 1}' if mark else ''}; fix the file (grid: and base: mappings)") from None
    if not isinstance(data, dict) or not isinstance(data.get("grid", {}), dict) or not isinstance(data.get("base", {}), dict):
        raise ConfigError(f"--grid {path}: expected 'grid:' (beta/zdim/n_classes lists) and optional 'base:' mappings; write e.g. grid: {{zdim: [2, 8]}}")
    extra = sorted(set(data) - {"grid", "base"})
    if extra:
        raise ConfigError(f"--grid {path}: unknown section(s) {', '.join(extra)}; use grid and base")
    grid = {str(k).replace("-", "_"): v for k, v in (data.get("grid") or {}).items()}
    unknown = sorted(set(grid) - set(GRID_KEYS))
    if unknown:
        raise ConfigError(f"--grid {path}: unknown grid axis {', '.join(unknown)}; sweep beta, zdim and n_classes (fix other options under base)")
    base = {str(k).replace("-", "_"): v for k, v in (data.get("base") or {}).items()}
    base = {k: coerce_option(k, v, f"--grid {path}: base", EXAMPLE_YAML) for k, v in base.items()}
    return grid, base


_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def read_plan(path: Path) -> list[dict[str, Any]]:
    """Rows of a plan CSV with values typed as the training options they set.

    Every row must give every column: a missing or empty cell would silently train on a default, so
    it is refused with the line and the column (options that accept none are written ``none``).
    """
    fix = "make the plan with `hetfield sweep plan` or fix that line"
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "no such plan file"
        raise ConfigError(f"{path}: {what}; give the CSV written by `hetfield sweep plan`")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text CSV file; give the plan written by `hetfield sweep plan`") from None
    types = option_types()
    reader = csv.reader(text.splitlines())
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise ConfigError(f"{path}: the plan is empty; {fix}") from None
    except csv.Error as err:
        raise ConfigError(f"{path}: line 1: unreadable CSV ({err}); {fix}") from None
    dup = sorted({c for c in header if header.count(c) > 1})
    if dup:
        raise ConfigError(f"{path}: column(s) {', '.join(dup)} appear twice in the header; keep one of each")
    for col in ("run_id", *GRID_KEYS):
        if col not in header:
            raise ConfigError(f"{path}: no {col} column; every plan gives run_id, {', '.join(GRID_KEYS)} ({fix})")
    unknown = [c for c in header if c != "run_id" and c not in types]
    if unknown:
        raise ConfigError(f"{path}: unknown column(s) {', '.join(unknown)}; columns after run_id must be training options: rename or remove them")
    out, ids = [], set()
    try:
        for cells in reader:
            line = reader.line_num
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                missing = header[len(cells):]
                what = f"missing {', '.join(missing)}" if missing else f"{len(cells) - len(header)} value(s) more than the header"
                raise ConfigError(f"{path}: line {line}: {len(cells)} values for {len(header)} columns ({what}); {fix}")
            row = dict(zip(header, cells))
            rid = row["run_id"].strip()
            if not _ID.match(rid):
                raise ConfigError(f"{path}: line {line}: run_id {rid!r} is not a safe directory name; use letters, digits, . _ -")
            if rid in ids:
                raise ConfigError(f"{path}: line {line}: run_id {rid} appears twice; give every run its own id")
            ids.add(rid)
            typed: dict[str, Any] = {"run_id": rid}
            for k, v in row.items():
                if k == "run_id":
                    continue
                if not v.strip():
                    raise ConfigError(f"{path}: line {line} (run {rid}): column {k} is empty; write a value in it "
                                      f"(e.g. {default_text(k)}{', or none' if 'None' in types[k] else ''})")
                typed[k] = coerce_option(k, v, f"{path}: line {line} (run {rid})", EXAMPLE_CELL)
            out.append(typed)
    except csv.Error as err:
        raise ConfigError(f"{path}: line {reader.line_num}: unreadable CSV ({err}); {fix}") from None
    if not out:
        raise ConfigError(f"{path}: the plan has no runs; {fix}")
    return out
