"""``hetfield sweep summarize``: one table comparing the runs of a sweep, and a recommended run.

Inputs are any directories holding run directories (``config.yaml``), convergence outputs
(``convergence.json``) and analyses (``summary.json``), in the sweep runner's layout or published
separately by the Nextflow pipeline; records are joined by ``run_id``.

The recommendation uses only what real data offer (:data:`RULE`); with ``--truth`` (simulated
data) the ground-truth metrics are added and the run they rank first is reported beside it, which
is how the rule is validated.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from hetfield.errors import InputError

RULE = (
    "Candidates: runs whose convergence verdict is 'converged' (all runs when none is). Ranked by the "
    "validation loss (data loss of the held-out particles) at the recommended epoch, lowest first — the model "
    "that generalises best; the training loss always favours the largest model. Runs within 0.5 % of the best "
    "are ranked by simplicity (fewer classes, then smaller zdim). Without validation losses (autodecoder, "
    "fewer than 20 particles) the training data loss at the recommended epoch is used instead."
)
TIE = 0.005


def _walk(dirs: list[Path]):
    for d in dirs:
        d = Path(d)
        if not d.exists():
            raise InputError(f"{d}: no such directory")
        for root, subdirs, files in os.walk(d, followlinks=True):
            subdirs.sort()
            yield Path(root), set(files)


def collect(dirs: list[Path]) -> dict[str, dict[str, Any]]:
    """``run_id → {run, config, metrics, convergence, analyses}`` from everything under ``dirs``."""
    import yaml

    from hetfield.train.rundir import RunDir

    records: dict[str, dict[str, Any]] = {}

    def rec(rid: str) -> dict[str, Any]:
        return records.setdefault(rid, {"run_id": rid, "analyses": []})

    for root, files in _walk(dirs):
        if "config.yaml" in files:
            try:
                cfg = yaml.safe_load((root / "config.yaml").read_text())
            except yaml.YAMLError:
                cfg = None
            if isinstance(cfg, dict) and "train" in cfg and cfg.get("run_id"):
                r = rec(str(cfg["run_id"]))
                r.update(run=root, config=cfg, metrics=RunDir(root).metrics())
        for name, kind in (("convergence.json", "convergence"), ("summary.json", "analysis")):
            if name in files:
                try:
                    doc = json.loads((root / name).read_text())
                except (json.JSONDecodeError, OSError):
                    continue
                if not isinstance(doc, dict) or not doc.get("run_id"):
                    continue
                doc["_dir"] = root
                if kind == "convergence" and "recommended_epoch" in doc:
                    rec(str(doc["run_id"]))["convergence"] = doc
                elif kind == "analysis" and doc.get("kind") == "analysis":
                    rec(str(doc["run_id"]))["analyses"].append(doc)
    return {rid: r for rid, r in records.items() if "config" in r}


def _metric_at(metrics: list[dict], epoch: int | None, key: str) -> float | None:
    rows = [m for m in metrics if key in m]
    if not rows:
        return None
    if epoch is not None:
        at = [m for m in rows if m.get("epoch") == epoch]
        if at:
            return float(at[0][key])
    return float(rows[-1][key])


def _latent_separation(run: Path, epoch: int | None) -> float | None:
    """Best silhouette of k-means (k = 2…6) on the latent means: how clustered the latent space is."""
    import numpy as np

    from hetfield.train.rundir import RunDir

    if epoch is None:
        return None
    try:
        z = RunDir(run).latent(epoch).get("z_mu")
    except Exception:
        return None
    if z is None or z.ndim != 2 or z.shape[1] == 0 or z.shape[0] < 6:
        return None
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(0)
    if z.shape[0] > 5000:
        z = z[rng.choice(z.shape[0], 5000, replace=False)]
    best = None
    for k in range(2, min(6, z.shape[0] - 1) + 1):
        labels = KMeans(k, n_init=4, random_state=0).fit_predict(z)
        if len(set(labels)) > 1:
            s = float(silhouette_score(z, labels))
            best = s if best is None else max(best, s)
    return best


def _truth_from_latent(run: Path, epoch: int | None, truth_dir: Path, dataset_names: list[str] | None) -> dict[str, float]:
    """Label metrics straight from the latent file (for analyses run without ``--truth``)."""
    import numpy as np

    from hetfield.analysis import latent as L
    from hetfield.analysis import metrics as M
    from hetfield.analysis.truth import load_truth
    from hetfield.train.rundir import RunDir

    out: dict[str, float] = {}
    if epoch is None or dataset_names is None:
        return out
    truth = load_truth(truth_dir)
    if not truth.has_labels:
        return out
    true_cls, true_t = truth.labels_for(dataset_names)
    lat = RunDir(run).latent(epoch)
    if lat.get("class_probs") is not None and lat["class_probs"].shape[1] > 1:
        out["class_ari"] = M.ari(true_cls, lat["class_idx"])
    z = lat.get("z_mu")
    if z is not None and z.size and z.shape[1]:
        n_true = int(true_cls.max()) + 1
        if n_true > 1:
            out["kmeans_ari"] = M.ari(true_cls, L.kmeans(z, n_true).labels)
        if true_t is not None and np.isfinite(true_t).all():
            out["spearman_pc1_t"] = M.abs_spearman(L.pca(z).projection[:, 0], true_t)
    return out


def build_rows(records: dict[str, dict[str, Any]], truth: Path | None = None) -> list[dict[str, Any]]:
    rows = []
    names_cache: dict[str, list[str] | None] = {}
    for rid in sorted(records):
        r = records[rid]
        cfg = r["config"]
        train = cfg["train"]
        metrics = r.get("metrics") or []
        conv = r.get("convergence") or {}
        rec_epoch = conv.get("recommended_epoch")
        analyses = r["analyses"]
        analysis = next((a for a in analyses if a.get("epoch") == rec_epoch), None) or (max(analyses, key=lambda a: a.get("epoch", 0)) if analyses else None)
        epoch_for = rec_epoch if rec_epoch is not None else (metrics[-1]["epoch"] if metrics else None)
        row: dict[str, Any] = {
            "run_id": rid,
            "beta": cfg.get("beta_effective", train.get("beta")),
            "zdim": train.get("zdim"),
            "n_classes": train.get("n_classes"),
            "conf_estimation": train.get("conf_estimation") if train.get("zdim") else "none",
            "epochs": metrics[-1]["epoch"] if metrics else 0,
            "final_loss": _metric_at(metrics, None, "loss"),
            "final_data_loss": _metric_at(metrics, None, "data_loss"),
            "final_val_loss": _metric_at(metrics, None, "val_data_loss"),
            "recommended_epoch": rec_epoch,
            "verdict": conv.get("verdict"),
            "data_loss_at_recommended": _metric_at(metrics, epoch_for, "data_loss"),
            "val_loss_at_recommended": _metric_at(metrics, epoch_for, "val_data_loss"),
            "analysed_epoch": analysis.get("epoch") if analysis else None,
        }
        occ = (analysis or {}).get("class_occupancy")
        if occ is None and metrics and "class_occupancy" in metrics[-1]:
            occ = metrics[-1]["class_occupancy"]
        row["class_occupancy"] = [round(float(v), 3) for v in occ] if occ else None
        row["min_class_fraction"] = min(occ) if occ and len(occ) > 1 else None
        row["mean_max_class_prob"] = (analysis or {}).get("mean_max_class_prob")
        row["latent_silhouette"] = _latent_separation(r["run"], row["analysed_epoch"] or epoch_for) if train.get("zdim") else None
        t = dict((analysis or {}).get("truth") or {})
        tm: dict[str, Any] = {}
        if t:
            if "class_ari" in t:
                tm["class_ari"] = t["class_ari"]
            if isinstance(t.get("kmeans_true_k"), dict):
                tm["kmeans_ari"] = t["kmeans_true_k"].get("ari")
            if t.get("spearman_pc1_t") is not None:
                tm["spearman_pc1_t"] = t["spearman_pc1_t"]
            if "min_fsc_half_nyquist" in t:
                tm["min_fsc_half_nyquist"] = t["min_fsc_half_nyquist"]
                tm["min_cc_truth"] = t.get("min_cc")
        elif truth is not None:
            ds_path = cfg.get("dataset", {}).get("path")
            if ds_path not in names_cache:
                try:
                    from hetfield.data.dataset import Dataset

                    names_cache[ds_path] = Dataset.open(ds_path).particle_names
                except Exception:
                    names_cache[ds_path] = None
            tm = _truth_from_latent(r["run"], row["analysed_epoch"] or epoch_for, Path(truth), names_cache[ds_path])
        row.update(tm)
        if tm:
            parts = [max(v for k, v in tm.items() if k in ("class_ari", "kmeans_ari") and v is not None)] if any(k in tm for k in ("class_ari", "kmeans_ari")) else []
            parts += [tm[k] for k in ("spearman_pc1_t", "min_fsc_half_nyquist") if tm.get(k) is not None]
            row["truth_score"] = sum(parts) / len(parts) if parts else None
        row["run_dir"] = str(r["run"])
        row["report"] = str(Path(analysis["_dir"]) / "report.html") if analysis else None
        rows.append(row)
    return rows


def recommend(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rank the runs by :data:`RULE`; returns the order, the recommended run and notes."""
    notes = []
    if not rows:
        return {"ranking": [], "recommended": None, "rule": RULE, "notes": ["no runs"]}
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


def _csv(rows: list[dict[str, Any]], ranking: list[str]) -> str:
    buf = io.StringIO()
    cols = ["rank"] + [c for c in COLUMNS if any(r.get(c) is not None for r in rows)] + ["run_dir"]
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    pos = {rid: i + 1 for i, rid in enumerate(ranking)}
    for r in sorted(rows, key=lambda r: pos.get(r["run_id"], 10**9)):
        w.writerow({**{k: (";".join(map(str, v)) if isinstance(v, list) else v) for k, v in r.items()}, "rank": pos.get(r["run_id"])})
    return buf.getvalue()


def summarize(dirs: list[Path], out: Path, truth: Path | None = None) -> tuple[Path, dict[str, Any]]:
    """Write ``summary.csv``, ``summary.json`` and ``summary.html`` into ``out`` (atomically)."""
    from hetfield import __version__
    from hetfield.io.atomic import atomic_directory

    records = collect([Path(d) for d in dirs])
    if not records:
        raise InputError(f"no hetfield runs (config.yaml) found under {', '.join(map(str, dirs))}")
    rows = build_rows(records, truth)
    rec = recommend(rows)
    doc = {"kind": "sweep_summary", "hetfield_version": __version__, "n_runs": len(rows), **rec, "runs": rows}
    out = Path(out)
    with atomic_directory(out, replace=True) as tmp:
        (tmp / "summary.csv").write_text(_csv(rows, rec["ranking"]))
        (tmp / "summary.json").write_text(json.dumps(_jsonable(doc), indent=2) + "\n")
        _report(rows, rec, tmp, out)
    return out, doc


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _report(rows, rec, tmp: Path, final: Path) -> None:
    import numpy as np

    from hetfield.analysis import plots as P
    from hetfield.analysis.report import Link, Report

    report = Report("hetfield sweep summary", f"{len(rows)} runs")
    by_id = {r["run_id"]: r for r in rows}
    if rec.get("recommended"):
        best = by_id[rec["recommended"]]
        what = f"{best['run_id']}: beta {best['beta']:g}, zdim {best['zdim']}, {best['n_classes']} class(es), epoch {best['recommended_epoch']} ({best['verdict']})"
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
    cols = ["rank"] + [c for c in COLUMNS if any(r.get(c) is not None for r in rows)] + ["analysis"]
    table = []
    for r in sorted(rows, key=lambda r: pos.get(r["run_id"], 10**9)):
        rel = os.path.relpath(r["report"], final) if r.get("report") else None
        table.append({**r, "rank": pos.get(r["run_id"]), "analysis": Link(rel, "report") if rel else None})
    report.table(table, cols)

    report.section("Across the grid")
    key = rec.get("ranked_by") or "data_loss_at_recommended"
    ordered = [by_id[rid] for rid in rec["ranking"] if by_id[rid].get(key) is not None]
    if ordered:
        report.image(P.bars([r[key] for r in ordered], [r["run_id"] for r in ordered], key.replace("_", " "), "loss", annotate_fmt="{:.4g}"),
                     f"{key.replace('_', ' ')} of every run, in rank order (lower is better).")
    for k in sorted({r["n_classes"] for r in rows}):
        sub = [r for r in rows if r["n_classes"] == k and r.get(key) is not None]
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
    (tmp / "summary.html").write_text(report.render(tmp))
