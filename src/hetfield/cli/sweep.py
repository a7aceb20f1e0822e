"""``hetfield sweep plan|run|summarize``: hyperparameter sweeps without a workflow engine."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    help="Sweep beta × zdim × n_classes: plan the runs, run them here, summarise and rank them.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("plan")
def plan(
    out: Path = typer.Option(..., "--out", "-o", help="Plan file to write (CSV, one row per run)."),
    beta: Optional[str] = typer.Option(None, "--beta", help="Comma-separated KL weights, e.g. 0.1,1 (default per run: 2·std_noise², the ELBO's)."),
    zdim: Optional[str] = typer.Option(None, "--zdim", help="Comma-separated latent dimensions, e.g. 4,8 (0: no latent)."),
    n_classes: Optional[str] = typer.Option(None, "--n-classes", help="Comma-separated numbers of classes, e.g. 1,3."),
    grid: Optional[Path] = typer.Option(None, "--grid", help="YAML with 'grid:' (beta/zdim/n_classes lists) and 'base:' (fixed options); command-line axes override it."),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="A fixed training option for every run, option=value (repeatable), e.g. --set epochs=20."),
) -> None:
    """Expand the grid into runs with deterministic, filesystem-safe run ids."""
    from hetfield.errors import check_output_location
    from hetfield.io.atomic import write_text_atomic
    from hetfield.sweep.options import parse_set
    from hetfield.sweep.plan import load_grid_file, make_plan

    check_output_location(out, "--out", kind="file")
    axes, base = load_grid_file(grid) if grid else ({}, {})
    base.update(parse_set(set_))
    the_plan = make_plan(
        beta=beta if beta is not None else axes.get("beta"),
        zdim=zdim if zdim is not None else axes.get("zdim"),
        n_classes=n_classes if n_classes is not None else axes.get("n_classes"),
        base=base,
    )
    write_text_atomic(out, the_plan.to_csv())
    for note in the_plan.notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"{len(the_plan.runs)} runs → {out}: {', '.join(r['run_id'] for r in the_plan.runs)}")


@app.command("run")
def run(
    plan_file: Path = typer.Argument(..., metavar="PLAN", help="Plan CSV from `hetfield sweep plan`."),
    data: Path = typer.Option(..., "--data", help="Prepared dataset directory (from `hetfield setup`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Sweep directory: runs/<run_id>/ and summary/."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML of training options shared by every run (plan columns override it)."),
    truth: Optional[Path] = typer.Option(None, "--truth", help="Simulator truth/ directory: add ground-truth metrics to analyses and the summary."),
    k: str = typer.Option("auto", "--k", help="k-means clusters per class: a number (capped by the particle count) or auto (one per 5 particles, 2 to 20)."),
    umap: bool = typer.Option(True, "--umap/--no-umap", help="Compute UMAP embeddings in convergence and analysis."),
    force: bool = typer.Option(False, "--force", help="Redo every run from scratch, even finished ones."),
) -> None:
    """Train, check convergence and analyse every run of the plan here, then summarise (resumable)."""
    from hetfield.sweep.runner import run_sweep
    from hetfield.train.config import load_config_file

    base = load_config_file(config) if config else None
    run_sweep(plan_file, data, out, base=base, truth=truth, force=force, echo=lambda m: typer.echo(m, err=True), use_umap=umap, analysis_k=k)


@app.command("summarize")
def summarize_cmd(
    dirs: List[Path] = typer.Argument(..., metavar="DIR...", help="Directories holding runs, convergence and analysis outputs (searched recursively)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for summary.csv, summary.json and summary.html."),
    truth: Optional[Path] = typer.Option(None, "--truth", help="Simulator truth/ directory: ground-truth metrics per run."),
) -> None:
    """Compare the runs of a sweep in one table and recommend one, stating the rule."""
    from hetfield.sweep.summary import summarize

    path, doc = summarize(list(dirs), out, truth=truth)
    for problem in doc.get("damaged", []):
        typer.echo(f"hetfield: warning: {problem}", err=True)
    best = doc.get("recommended")
    typer.echo(f"{doc['n_runs']} runs; recommended: {best or 'none'} → {path / 'summary.html'}")


@app.command("config")
def config_cmd(
    plan_file: Path = typer.Argument(..., metavar="PLAN", help="Plan CSV from `hetfield sweep plan`."),
    run_id: str = typer.Option(..., "--run-id", help="The run (a run_id of the plan)."),
    out: Path = typer.Option(..., "--out", "-o", help="YAML file to write, for `hetfield train RUN --data DATASET --config FILE`."),
    config: Optional[Path] = typer.Option(None, "--config", help="YAML of training options shared by every run (plan columns override it), as for `sweep run`."),
) -> None:
    """Write one run's training settings as `sweep run` would train them (the Nextflow TRAIN step uses this)."""
    from hetfield.sweep.run_config import write_run_config
    from hetfield.train.config import load_config_file

    base = load_config_file(config) if config else None
    cfg = write_run_config(plan_file, run_id, out, base=base)
    typer.echo(f"{run_id}: {cfg.epochs} epochs, zdim {cfg.zdim}, beta {cfg.effective_beta:g}, {cfg.n_classes} class(es), batch {cfg.batch_size} → {out}", err=True)
