"""One run of a plan as training settings: the single path from a plan row to a ``TrainConfig``.

``hetfield sweep run`` trains each row of a plan with these settings, and the Nextflow pipeline's
TRAIN step writes them to a per-run YAML (``hetfield sweep config PLAN --run-id ID --out run.yaml``)
that it passes to ``hetfield train --config``: both train exactly the settings the plan holds, over
the same defaults, so a plan's ``--set epochs=30`` or a grid's ``base:`` reaches every run.

Precedence, lowest first: ``TrainConfig`` defaults < ``base`` (``sweep run --config`` /
``sweep config --config``) < the plan row's columns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hetfield.errors import ConfigError


def run_options(row: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The training options of one plan row (from ``read_plan``) over ``base``."""
    return {**(base or {}), **{k: v for k, v in row.items() if k != "run_id"}}


def resolve_run(plan_path: Path, row: dict[str, Any], base: dict[str, Any] | None = None):
    """The validated ``TrainConfig`` of one plan row; a bad value names the plan and the run."""
    from hetfield.train.config import resolve_config

    try:
        return resolve_config(None, run_options(row, base))
    except ConfigError as err:
        raise ConfigError(f"{plan_path}: run {row['run_id']}: {err}") from None


def plan_row(plan_path: Path, run_id: str) -> dict[str, Any]:
    """The typed row of ``run_id`` in the plan."""
    from hetfield.sweep.plan import read_plan

    rows = read_plan(Path(plan_path))
    for row in rows:
        if row["run_id"] == run_id:
            return row
    ids = [r["run_id"] for r in rows]
    shown = ", ".join(ids[:10]) + (f", … ({len(ids)} runs)" if len(ids) > 10 else "")
    raise ConfigError(f"{plan_path}: no run {run_id!r} in the plan; its runs are {shown}")


def write_run_config(plan_path: Path, run_id: str, out: Path, base: dict[str, Any] | None = None):
    """Write every training setting of one run (defaults resolved) as YAML for ``hetfield train --config``.

    All settings are written, not only the plan's columns, so the file alone says what the run
    trains; it loads back to the same ``TrainConfig``. Returns that config.
    """
    import yaml

    from hetfield.io.atomic import write_text_atomic

    cfg = resolve_run(Path(plan_path), plan_row(Path(plan_path), run_id), base)
    # Block style, one `option: value` per line: people read it, and shell steps may grep a line.
    write_text_atomic(Path(out), yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False))
    return cfg
