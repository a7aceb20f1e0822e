"""``hetfield sweep summarize``: one table comparing the runs of a sweep, and a recommended run.

Inputs are any directories holding run directories (``config.yaml``), convergence outputs
(``convergence.json``) and analyses (``summary.json``), in the sweep runner's layout or published
separately by the Nextflow pipeline; records are joined by ``run_id``.

Reading the runs into one row each is :mod:`~hetfield.sweep.collect`; this module ranks the rows
and writes the table. The recommendation uses only what real data offer (:data:`RULE`); with ``--truth`` (simulated
data) the ground-truth metrics are added and the run they rank first is reported beside it, which
is how the rule is validated.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from hetfield.errors import InputError
from hetfield.sweep.collect import build_rows, collect

RULE = (
    "Candidates: runs whose convergence verdict is 'converged' (all runs when none is). Ranked by the "
    "validation loss (data loss of the held-out particles) at the recommended epoch, lowest first — the model "
    "that generalises best; the training loss always favours the largest model. Runs within 0.5 % of the best "
    "are ranked by simplicity (fewer classes, then smaller zdim). Without validation losses (autodecoder, "
    "fewer than 20 particles) the training data loss at the recommended epoch is used instead."
)
TIE = 0.005


def recommend(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rank the runs by :data:`RULE`; returns the order, the recommended run and notes."""
    notes = [f"{r['run_id']} is not ranked: {r['problems'][-1]}" for r in rows if r.get("excluded")]
    rows = [r for r in rows if not r.get("excluded")]
    if not rows:
        return {"ranking": [], "recommended": None, "rule": RULE, "notes": notes or ["no runs"]}
    candidates = [r for r in rows if r.get("verdict") == "converged"]
    if not candidates:
        candidates = list(rows)
        notes.append("no run is 'converged': all runs were ranked; train longer before trusting any")
    key = "val_loss_at_recommended"
    if any(r.get(key) is None for r in candidates):
        key = "data_loss_at_recommended"
        notes.append("validation losses are missing for some runs: ranked by the training data loss instead")
    scored = [r for r in candidates if r.get(key) is not None and math.isfinite(r[key])]
    if not scored:
        return {"ranking": [r["run_id"] for r in rows], "recommended": None, "rule": RULE, "notes": notes + ["no losses to rank by"]}
    best = min(r[key] for r in scored)

    def order(r):
        within = r[key] <= best * (1 + TIE) if best > 0 else r[key] <= best + TIE
        return (0 if within else 1, (r["n_classes"], r["zdim"]) if within else (0, 0), r[key])

    ranked = sorted(scored, key=order)
    rest = [r for r in rows if r not in ranked]
    out = {
        "ranking": [r["run_id"] for r in ranked] + [r["run_id"] for r in sorted(rest, key=lambda r: (r.get(key) is None, r.get(key) or 0))],
        "recommended": ranked[0]["run_id"],
        "ranked_by": key,
        "rule": RULE,
        "notes": notes,
    }
    with_truth = [r for r in rows if r.get("truth_score") is not None]
    if with_truth:
        top = max(with_truth, key=lambda r: r["truth_score"])
        out["best_by_truth"] = top["run_id"]
        out["truth_agrees"] = top["run_id"] == out["recommended"]
    return out


COLUMNS = [
    "run_id", "beta", "zdim", "n_classes", "epochs", "verdict", "recommended_epoch", "val_loss_at_recommended",
    "data_loss_at_recommended", "final_val_loss", "final_loss", "class_occupancy", "min_class_fraction",
    "mean_max_class_prob", "latent_silhouette", "class_ari", "kmeans_ari", "spearman_pc1_t", "min_fsc_half_nyquist",
    "min_cc_truth", "truth_score",
]


# Column headers of the summary page, in words with units (summary.csv keeps the keys, for scripts).
LABELS = {
    "rank": "rank", "run_id": "run", "beta": "β (KL weight)", "zdim": "latent dimensions", "n_classes": "classes",
    "epochs": "epochs trained", "verdict": "convergence", "recommended_epoch": "recommended epoch",
    "val_loss_at_recommended": "validation data loss at the recommended epoch (held-out particles)",
    "data_loss_at_recommended": "training data loss at the recommended epoch",
    "final_val_loss": "validation data loss, last epoch", "final_loss": "training loss, last epoch",
    "class_occupancy": "class fractions (of particles)", "min_class_fraction": "smallest class fraction",
    "mean_max_class_prob": "mean class confidence (max posterior)", "latent_silhouette": "latent silhouette (k-means, −1…1)",
    "class_ari": "class ARI vs truth", "kmeans_ari": "k-means ARI vs truth", "spearman_pc1_t": "|Spearman(PC1, t)| vs truth",
    "min_fsc_half_nyquist": "worst FSC to truth at half Nyquist", "min_cc_truth": "worst map correlation to truth",
    "truth_score": "ground-truth score (0…1)", "reports": "reports",
}


def describe_run(row: dict[str, Any]) -> str:
    """A run in words, as the summary page and `sweep run` name the recommended one."""
    beta = "–" if row.get("beta") is None else f"{row['beta']:g}"
    return (f"beta {beta}, zdim {row.get('zdim')}, {row.get('n_classes')} class(es), "
            f"epoch {row.get('recommended_epoch')}, {row.get('verdict')}")


def _csv(rows: list[dict[str, Any]], ranking: list[str]) -> str:
    buf = io.StringIO()
    cols = ["rank"] + [c for c in COLUMNS if any(r.get(c) is not None for r in rows)] + ["run_dir"]
    if any(r.get("problems") for r in rows):
        cols.append("problems")
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    pos = {rid: i + 1 for i, rid in enumerate(ranking)}
    for r in sorted(rows, key=lambda r: pos.get(r["run_id"], 10**9)):
        cells = {k: (";".join(map(str, v)) if isinstance(v, list) else v) for k, v in r.items() if k != "problems"}
        w.writerow({**cells, "rank": pos.get(r["run_id"]), "problems": " | ".join(r.get("problems") or [])})
    return buf.getvalue()


def summarize(dirs: list[Path], out: Path, truth: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Write ``summary.csv``, ``summary.json`` and ``summary.html`` into ``out`` (atomically)."""
    from hetfield import __version__
    from hetfield.errors import check_output_location
    from hetfield.io.atomic import atomic_directory, write_json_atomic, write_text_atomic
    from hetfield.io.plain import to_plain

    out = Path(out)
    check_output_location(out, "--out", marker="summary.json", protect=tuple(dirs))
    records = collect([Path(d) for d in dirs])
    if not records:
        raise InputError(f"no hetfield runs (config.yaml) found under {', '.join(map(str, dirs))}; pass the sweep directory "
                         "(the --out of `hetfield sweep run`) or the run directories")
    rows = build_rows(records, truth)
    damaged = [f"{r['run_id']}: {p}" for r in rows for p in r["problems"]]
    if all(r["excluded"] for r in rows):
        raise InputError(f"no run can be ranked, every one is damaged ({damaged[0]}{'; …' if len(damaged) > 1 else ''})")
    rec = recommend(rows)
    doc = {"kind": "sweep_summary", "hetfield_version": __version__, "n_runs": len(rows), **rec, "damaged": damaged, "runs": rows}
    with atomic_directory(out, replace=True) as tmp:
        write_text_atomic(tmp / "summary.csv", _csv(rows, rec["ranking"]))
        write_json_atomic(tmp / "summary.json", to_plain(doc))
        _report(rows, rec, tmp, out)
    return out, doc


def _report(rows, rec, tmp: Path, final: Path) -> None:
    import numpy as np

    from hetfield.analysis import plots as P
    from hetfield.analysis.report import Link, Report

    report = Report("hetfield sweep summary", f"{len(rows)} runs")
    by_id = {r["run_id"]: r for r in rows}
    if rec.get("recommended"):
        best = by_id[rec["recommended"]]
        what = f"{best['run_id']}: {describe_run(best)}"
        report.callout(what, "good" if best.get("verdict") == "converged" else "warn", "Recommended run")
    else:
        report.callout("no run could be ranked", "bad", "Recommended run")
    if "best_by_truth" in rec:
        agree = "agrees" if rec["truth_agrees"] else f"differs: ground truth prefers {rec['best_by_truth']}"
        report.callout(f"The ground-truth metrics {agree}.", "good" if rec["truth_agrees"] else "warn", "Ground truth")
    report.text("Rule: " + rec["rule"])
    report.bullets(rec.get("notes", []), "notes")

    report.section("Runs, best first")
    pos = {rid: i + 1 for i, rid in enumerate(rec["ranking"])}
    cols = ["rank"] + [c for c in COLUMNS if any(r.get(c) is not None for r in rows)] + ["reports"]
    table = []
    for r in sorted(rows, key=lambda r: pos.get(r["run_id"], 10**9)):
        links = _report_links(r, final)
        run = Link(links[0].href, r["run_id"]) if links else r["run_id"]
        table.append({**r, "rank": pos.get(r["run_id"]), "run_id": run, "reports": links or None})
    report.table(table, cols, labels=LABELS)
    if rec.get("recommended"):
        _class_volumes(report, by_id[rec["recommended"]], final)

    report.section("Across the grid")
    key = rec.get("ranked_by") or "data_loss_at_recommended"
    ordered = [by_id[rid] for rid in rec["ranking"] if by_id[rid].get(key) is not None]
    if ordered:
        report.image(P.bars([r[key] for r in ordered], [r["run_id"] for r in ordered], key.replace("_", " "), "loss", annotate_fmt="{:.4g}"),
                     f"{key.replace('_', ' ')} of every run, in rank order (lower is better).")
    for k in sorted({r["n_classes"] for r in rows if isinstance(r["n_classes"], int)}):
        sub = [r for r in rows if r["n_classes"] == k and r.get(key) is not None and r["beta"] is not None and isinstance(r["zdim"], int)]
        betas = sorted({float(r["beta"]) for r in sub})
        zdims = sorted({int(r["zdim"]) for r in sub})
        if len(betas) > 1 and len(zdims) > 1:
            m = np.full((len(betas), len(zdims)), np.nan)
            for r in sub:
                m[betas.index(float(r["beta"])), zdims.index(int(r["zdim"]))] = r[key]
            report.image(P.heatmap(m, [f"beta {b:g}" for b in betas], [f"zdim {z}" for z in zdims], f"{key.replace('_', ' ')}, {k} class(es)", fmt="{:.4g}"),
                         f"{key.replace('_', ' ')} over beta × zdim for n_classes = {k}.")
    scored = [r for r in rows if r.get("truth_score") is not None]
    if scored:
        scored.sort(key=lambda r: -r["truth_score"])
        report.image(P.bars([r["truth_score"] for r in scored], [r["run_id"] for r in scored], "ground-truth score", "score", annotate_fmt="{:.2f}"),
                     "Mean of the best class/cluster ARI, |Spearman(PC1, t)| and the worst FSC at half Nyquist, where available (higher is better).")
    damaged = [r for r in rows if r.get("problems")]
    if damaged:
        report.section("Damaged runs")
        report.table([{"run": r["run_id"], "ranked": "no" if r["excluded"] else "yes", "problem": "; ".join(r["problems"])} for r in damaged],
                     ["run", "ranked", "problem"])
    report.write(tmp / "summary.html")


def _report_links(row: dict[str, Any], final: Path) -> list:
    """Links from the summary page (written at ``final``) to the run's analysis and convergence pages."""
    from hetfield.analysis.report import Link

    out = []
    for key, text in (("report", "analysis"), ("convergence_report", "convergence")):
        if row.get(key):
            out.append(Link(os.path.relpath(row[key], final), text))
    return out


def _class_volumes(report, row: dict[str, Any], final: Path) -> None:
    """The recommended run's class volumes (``analysis.N/volumes/class_*.mrc``) as projections, with links."""
    from hetfield.analysis import plots as P
    from hetfield.analysis.report import Link
    from hetfield.io.mrc import read_volume

    if not row.get("report"):
        return
    vol_dir = Path(row["report"]).parent / "volumes"
    files = sorted(vol_dir.glob("class_*.mrc"), key=lambda f: int(f.stem.split("_")[-1]) if f.stem.split("_")[-1].isdigit() else 0)
    if not files:
        return
    report.section(f"Class volumes of the recommended run ({row['run_id']}, epoch {row.get('analysed_epoch')})")
    vols = [read_volume(f)[0] for f in files]
    report.image(P.volume_gallery(vols, [f.stem.replace("_", " ") for f in files], "projections along z, y, x", views="zyx"),
                 "Each class's map (decoded, where the run has a latent, at the particle nearest the class's mean latent), projected along z, y and x.")
    report.table([{"volume": Link(os.path.relpath(f, final), f.name)} for f in files], ["volume"])
