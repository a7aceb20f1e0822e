"""``hetfield analyze``: PCA, UMAP, k-means volumes, traversals, class volumes and STAR exports of one
epoch, for every class in one call."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional

import typer


class PhasedProgress:
    """``progress(phase, done, total)`` callback showing one progress bar per phase (stderr, terminals only)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._stack = contextlib.ExitStack()
        self._phase = None
        self._update = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        from hetfield.cli._common import progress_bar

        if phase != self._phase:
            self._stack.close()
            self._stack = contextlib.ExitStack()
            self._update = self._stack.enter_context(progress_bar(phase, total, enabled=self.enabled))
            self._phase = phase
        self._update(done, total)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def analyze(
    run: Path = typer.Argument(..., help="Run directory (from `hetfield train`)."),
    epoch: str = typer.Option("last", "--epoch", help="Epoch to analyse: a number, 'last', or 'auto' (the epoch recommended by `hetfield convergence`)."),
    class_idx: str = typer.Option("all", "--class-idx", help="Class to analyse (0-based) or 'all' (every class in one call)."),
    truth: Optional[Path] = typer.Option(None, "--truth", help="Ground truth: a `hetfield simulate` folder (or its truth/), or a folder of true maps."),
    k: str = typer.Option("auto", "--k", help="k-means clusters per class: a number (capped by the particle count) or auto (one per 5 particles, 2 to 20)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory. [default: RUN/analysis.EPOCH]"),
    convergence: Optional[Path] = typer.Option(None, "--convergence", help="convergence.json (or its folder) for --epoch auto. [default: RUN/convergence]"),
    n_traversal: int = typer.Option(10, "--n-traversal", help="Volumes along PC1 and PC2 (percentiles 5–95)."),
    umap: bool = typer.Option(True, "--umap/--no-umap", help="Embed latents with UMAP (needs >= 15 particles; PCA otherwise)."),
    data: Optional[Path] = typer.Option(None, "--data", help="The run's prepared dataset, if it moved since training (for STAR exports and truth)."),
    device: str = typer.Option("auto", "--device", help="Where to decode volumes: auto, cpu, cuda or cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or summary table."),
) -> None:
    """Analyse one epoch: class occupancy and volumes, PCA/UMAP, k-means volumes, traversals, STAR exports, report.html."""
    from hetfield.analysis.analyze import run_analysis
    with PhasedProgress(enabled=not quiet) as progress:
        out_dir, s = run_analysis(run, epoch=epoch, class_idx=class_idx, truth_dir=truth, k=k, out=out, convergence=convergence,
                                  use_umap=umap, device=device, data=data, n_traversal=n_traversal, progress=progress)
    if quiet:
        return
    from hetfield.cli._common import print_summary

    rows = {
        "epoch": f"{s['epoch']} ({s['epoch_choice']})",
        "particles": s["n_particles"],
        "classes": f"{s['n_classes']} (occupancy {', '.join(f'{v:.2f}' for v in s['class_occupancy'])})",
        "volumes": len(s["files"]["volumes"]),
        "STAR files": len(s["files"]["star"]),
    }
    tr = s.get("truth") or {}
    if "class_ari" in tr:
        rows["class ARI"] = round(tr["class_ari"], 4)
    if "kmeans_true_k" in tr:
        rows[f"k-means({tr['kmeans_true_k']['k']}) ARI"] = round(tr["kmeans_true_k"]["ari"], 4)
    if tr.get("spearman_pc1_t") is not None:
        rows["|Spearman| PC1 vs t"] = round(tr["spearman_pc1_t"], 3)
    if "min_fsc_half_nyquist" in tr:
        rows["FSC vs truth at half Nyquist (min)"] = round(tr["min_fsc_half_nyquist"], 3)
    for note in s.get("notes", []):
        rows.setdefault("notes", [])
        rows["notes"].append(note)
    rows["report"] = str(out_dir / "report.html")
    print_summary(f"analysis of {s['run_id']}", rows)
