"""``hetfield convergence``: loss, latent shifts, class changes and volume stability per epoch; a
recommended epoch and a verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def convergence(
    run: Path = typer.Argument(..., help="Run directory (from `hetfield train`)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory. [default: RUN/convergence]"),
    every: int = typer.Option(5, "--every", help="Embed latents and decode volumes every N epochs (the first and last saved epochs always)."),
    truth: Optional[Path] = typer.Option(None, "--truth", help="Ground truth: a `hetfield simulate` folder (or its truth/), or a folder of true maps."),
    umap: bool = typer.Option(True, "--umap/--no-umap", help="Embed latents with UMAP (needs >= 15 particles; PCA otherwise)."),
    data: Optional[Path] = typer.Option(None, "--data", help="The run's prepared dataset, if it moved since training."),
    device: str = typer.Option("auto", "--device", help="Where to decode volumes: auto, cpu, cuda or cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or summary table."),
) -> None:
    """Judge convergence: recommended epoch + verdict in convergence.json, plots and report.html."""
    from hetfield.analysis.convergence import run_convergence
    from hetfield.cli.analyze import PhasedProgress

    with PhasedProgress(enabled=not quiet) as progress:
        out_dir, doc = run_convergence(run, out=out, every=every, truth_dir=truth, use_umap=umap, device=device, data=data, progress=progress)
    if quiet:
        return
    from hetfield.cli._common import print_summary

    rows = {
        "saved epochs": len(doc["saved_epochs"]),
        "analysed epochs": ", ".join(map(str, doc["analysed_epochs"])),
        "recommended epoch": doc["recommended_epoch"],
        "verdict": doc["verdict"],
        "reasons": doc["reasons"],
        "report": str(out_dir / "report.html"),
    }
    print_summary(f"convergence of {doc['run_id']}", rows)
