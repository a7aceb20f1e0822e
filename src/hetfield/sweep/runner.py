"""The embedded sweep runner: train → convergence → analyze for every run of a plan, on this machine.

It runs exactly the steps the Nextflow pipeline runs, through the same library calls, and is
resumable: a run whose training, convergence and analysis are complete is skipped; a run trained
for fewer epochs than planned (or interrupted mid-epoch) continues with ``--load latest``; stale
convergence or analysis outputs (older than the newest checkpoint) are recomputed.

Layout::

    OUT/runs/<run_id>/            the run directory (config.yaml, weights.N.pt, …)
    OUT/runs/<run_id>/convergence/
    OUT/runs/<run_id>/analysis.N/ at the recommended epoch N
    OUT/summary/                  summary.csv, summary.html (``hetfield sweep summarize``)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hetfield.errors import ConfigError, HetfieldError, Interrupted, RunError


@dataclass
class RunStatus:
    run_id: str
    trained: bool
    converged_checked: bool
    analysed: bool

    @property
    def done(self) -> bool:
        return self.trained and self.converged_checked and self.analysed


def _newest_weights_mtime(run) -> float:
    epochs = run.epochs()
    return run.weights_path(epochs[-1]).stat().st_mtime if epochs else 0.0


def run_status(run_dir: Path, epochs: int) -> RunStatus:
    from hetfield.train.rundir import RunDir

    run = RunDir(run_dir)
    trained = run.exists() and run.last_epoch() == epochs and not run.resume_path.exists()
    conv = run_dir / "convergence" / "convergence.json"
    newest = _newest_weights_mtime(run)
    checked = trained and conv.is_file() and conv.stat().st_mtime >= newest
    analysed = False
    if checked:
        try:
            rec = int(json.loads(conv.read_text())["recommended_epoch"])
            summary = run_dir / f"analysis.{rec}" / "summary.json"
            analysed = summary.is_file() and summary.stat().st_mtime >= conv.stat().st_mtime
        except (ValueError, KeyError, TypeError, json.JSONDecodeError):  # a damaged convergence.json: redo it
            analysed = False
    return RunStatus(run_dir.name, trained, checked, analysed)


def run_sweep(
    plan_path: Path,
    data: Path,
    out: Path,
    base: dict[str, Any] | None = None,
    truth: Path | None = None,
    force: bool = False,
    echo: Callable[[str], None] = print,
    use_umap: bool = True,
    analysis_k: int | str = "auto",
) -> dict[str, Any]:
    """Execute every run of the plan; returns ``{"runs": [...], "failed": [...], "summary": path}``."""
    from hetfield.analysis.latent import parse_k
    from hetfield.data.dataset import Dataset
    from hetfield.errors import check_output_location
    from hetfield.sweep.plan import read_plan
    from hetfield.sweep.run_config import resolve_run
    from hetfield.train.prepare import check_same_settings

    analysis_k = parse_k(analysis_k)  # a bad --k must stop the sweep before its first training, not after
    rows = read_plan(Path(plan_path))
    check_output_location(Path(out), "--out")
    Dataset.open(data).check_fresh()  # fail before any run on a missing or stale dataset
    configs = []
    for row in rows:  # validate every run before starting any, as the pipeline's TRAIN would
        try:
            configs.append(resolve_run(Path(plan_path), row, base))
        except ConfigError as err:
            raise ConfigError(f"{err}; fix it in the plan{' or in --config' if base else ''}") from None
    runs_dir = Path(out) / "runs"
    for row, cfg in zip(rows, configs):
        check_same_settings(runs_dir / row["run_id"], cfg, force)

    # torch and the analyses load only once the inputs have passed.
    from hetfield.analysis.analyze import run_analysis
    from hetfield.analysis.convergence import run_convergence
    from hetfield.sweep.summary import summarize
    from hetfield.train.loop import train

    done, failed = [], []
    for i, (row, cfg) in enumerate(zip(rows, configs), start=1):
        rid = row["run_id"]
        run_dir = runs_dir / rid
        tag = f"[{i}/{len(rows)}] {rid}"
        status = run_status(run_dir, cfg.epochs)
        if status.done and not force:
            echo(f"{tag}: complete, skipped")
            done.append(rid)
            continue
        try:
            if force or not status.trained:
                from hetfield.train.rundir import RunDir

                resumable = not force and RunDir(run_dir).exists() and (RunDir(run_dir).epochs() or RunDir(run_dir).resume_path.exists())
                echo(f"{tag}: training ({'resuming' if resumable else f'{cfg.epochs} epochs'})")
                # the run's own log lines (one per epoch, with loss and speed), tagged with the run
                train(run_dir, data, cfg, load="latest" if resumable else None, force=force,
                      echo=lambda message, tag=tag: echo(f"{tag}: {message}"))
            if force or not run_status(run_dir, cfg.epochs).converged_checked:
                echo(f"{tag}: convergence")
                run_convergence(run_dir, truth_dir=truth, use_umap=use_umap)
            if force or not run_status(run_dir, cfg.epochs).analysed:
                echo(f"{tag}: analysis at the recommended epoch")
                run_analysis(run_dir, epoch="auto", truth_dir=truth, use_umap=use_umap, k=analysis_k)
            done.append(rid)
        except Interrupted:
            raise  # Ctrl-C stops the sweep; its runs resume on the next `sweep run`
        except HetfieldError as err:
            failed.append((rid, str(err)))
            echo(f"{tag}: FAILED: {err}")
    summary_dir = None
    if done:
        summary_dir, doc = summarize([runs_dir], Path(out) / "summary", truth=truth)
        echo(f"summary: {summary_dir / 'summary.html'}")
        echo(_recommendation_line(doc))
    if failed:
        raise RunError(f"{len(failed)} of {len(rows)} runs failed ({'; '.join(f'{r}: {e}' for r, e in failed)}); fix and rerun: finished runs are skipped")
    return {"runs": done, "failed": failed, "summary": summary_dir}


def _recommendation_line(doc: dict[str, Any]) -> str:
    """The sweep's answer in one line: which run to use, at which epoch, and where its analysis is."""
    rid = doc.get("recommended")
    if not rid:
        return "recommended: none (" + "; ".join(doc.get("notes") or ["no run could be ranked"]) + ")"
    from hetfield.sweep.summary import describe_run

    row = next(r for r in doc["runs"] if r["run_id"] == rid)
    where = f": {row['report']}" if row.get("report") else ""
    return f"recommended: {rid} ({describe_run(row)}){where}"
