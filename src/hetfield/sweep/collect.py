"""What ``hetfield sweep summarize`` compares: everything the runs of a sweep left on disk, one row per run.

:func:`collect` walks the given directories for run directories (``config.yaml``), convergence outputs
(``convergence.json``) and analyses (``summary.json``), joined by ``run_id``; :func:`build_rows` turns
each record into the row the summary ranks (settings, losses at the recommended epoch, class
occupancy, latent separation, truth metrics), with damage that makes a run's numbers untrustworthy
recorded as a reason to leave it unranked.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from hetfield.errors import HetfieldError, InputError


def _walk(dirs: list[Path]):
    for d in dirs:
        d = Path(d)
        if not d.exists():
            raise InputError(f"{d}: no such directory; pass the sweep directory (the --out of `hetfield sweep run`) or run directories")
        if not d.is_dir():
            raise InputError(f"{d}: is a file, not a directory; pass the sweep directory (the --out of `hetfield sweep run`) or run directories")
        for root, subdirs, files in os.walk(d, followlinks=True):
            subdirs.sort()
            yield Path(root), set(files)


def collect(dirs: list[Path]) -> dict[str, dict[str, Any]]:
    """``run_id → {run, config, metrics, convergence, analyses}`` from everything under ``dirs``."""
    import yaml

    from hetfield.train.rundir import RunDir

    records: dict[str, dict[str, Any]] = {}

    def rec(rid: str) -> dict[str, Any]:
        return records.setdefault(rid, {"run_id": rid, "analyses": [], "problems": [], "excluded": []})

    for root, files in _walk(dirs):
        if "config.yaml" in files:
            try:
                cfg = yaml.safe_load((root / "config.yaml").read_text())
            except (yaml.YAMLError, UnicodeDecodeError, OSError):
                cfg = "unreadable"
            if isinstance(cfg, dict) and "train" in cfg and cfg.get("run_id"):
                r = rec(str(cfg["run_id"]))
                if "run" in r and Path(r["run"]).resolve() != root.resolve():
                    r["problems"].append(f"run_id {r['run_id']} is also the run of {root}, which was left out; give every run its own id")
                    continue
                metrics, bad_lines = _read_metrics(RunDir(root).metrics_path)
                r.update(run=root, config=cfg, metrics=metrics)
                if bad_lines:
                    r["problems"].append(f"{RunDir(root).metrics_path}: line(s) {', '.join(map(str, bad_lines[:5]))} unreadable, ignored")
            elif cfg == "unreadable" or (isinstance(cfg, dict) and ("train" in cfg or "model" in cfg)):
                # A run's config.yaml that cannot be read: the run is named by its directory.
                r = rec(root.name)
                r.update(run=root, config={"train": {}}, metrics=[])
                r["excluded"].append(f"{root / 'config.yaml'}: unreadable or without run_id/train; restore it or train the run again")
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


def _read_metrics(path: Path) -> tuple[list[dict], list[int]]:
    """``metrics.jsonl`` rows, and the numbers of the lines that are not JSON objects with an epoch."""
    if not path.is_file():
        return [], []
    rows, bad = [], []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return [], [1]
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad.append(i)
            continue
        epoch = row.get("epoch") if isinstance(row, dict) else None
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            bad.append(i)
            continue
        rows.append(row)
    return rows, bad


def _number(v) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _metric_at(metrics: list[dict], epoch: int | None, key: str) -> float | None:
    rows = [m for m in metrics if _number(m.get(key)) is not None]
    if not rows:
        return None
    if epoch is not None:
        at = [m for m in rows if m.get("epoch") == epoch]
        if at:
            return _number(at[-1][key])
    return _number(rows[-1][key])


def _check_run(r: dict[str, Any], epoch_for: int | None) -> None:
    """Damage that makes a run's numbers untrustworthy goes to ``r["excluded"]`` (with what to do)."""
    from hetfield.analysis.context import open_run

    if r["excluded"]:
        return
    run = Path(r["run"])
    try:
        ctx = open_run(run)
    except HetfieldError as err:
        r["excluded"].append(str(err))
        return
    r["shape"] = {"zdim": ctx.zdim, "n_classes": ctx.n_classes}
    saved = ctx.run.epochs()
    if not r.get("metrics"):
        r["excluded"].append(f"{ctx.run.metrics_path}: no readable metrics; the run's losses are unknown: train it again")
        return
    conv = r.get("convergence") or {}
    rec = conv.get("recommended_epoch")
    if rec is not None and rec not in saved:
        where = Path(conv.get("_dir", run)) / "convergence.json"
        r["excluded"].append(f"{where}: recommends epoch {rec!r}, which {run} does not hold (saved: {', '.join(map(str, saved))}); "
                             f"run `hetfield convergence {run}` again")
        return
    if epoch_for is not None and epoch_for in saved:
        try:
            ctx.latent(epoch_for)
        except HetfieldError as err:
            r["excluded"].append(str(err))


def _latent_separation(run: Path, epoch: int | None) -> float | None:
    """Best silhouette of k-means (k = 2…6) on the latent means: how clustered the latent space is."""
    import numpy as np

    from hetfield.train.rundir import RunDir

    if epoch is None:
        return None
    try:
        z = RunDir(run).latent(epoch).get("z_mu")
    except Exception:  # damaged files are reported by _check_run; here the silhouette is just unknown
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
        train = cfg["train"] if isinstance(cfg.get("train"), dict) else {}
        metrics = r.get("metrics") or []
        conv = r.get("convergence") or {}
        rec_epoch = conv.get("recommended_epoch")
        analyses = [a for a in r["analyses"] if isinstance(a.get("epoch"), int) and not isinstance(a.get("epoch"), bool)]
        analysis = next((a for a in analyses if a.get("epoch") == rec_epoch), None) or (max(analyses, key=lambda a: a["epoch"]) if analyses else None)
        epoch_for = rec_epoch if rec_epoch is not None else (metrics[-1]["epoch"] if metrics else None)
        _check_run(r, (analysis or {}).get("epoch") or epoch_for)
        shape = r.get("shape") or {}
        beta = _number(cfg.get("beta_effective", train.get("beta")))
        row: dict[str, Any] = {
            "run_id": rid,
            "beta": beta,
            "zdim": shape.get("zdim", train.get("zdim")),
            "n_classes": shape.get("n_classes", train.get("n_classes")),
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
        row["latent_silhouette"] = _latent_separation(r["run"], row["analysed_epoch"] or epoch_for) if row["zdim"] and not r["excluded"] else None
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
        elif truth is not None and not r["excluded"]:
            ds_path = cfg.get("dataset", {}).get("path")
            if ds_path not in names_cache:
                try:
                    from hetfield.data.dataset import Dataset

                    names_cache[ds_path] = Dataset.open(ds_path, images=False).particle_names
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
        row["convergence_report"] = str(Path(conv["_dir"]) / "report.html") if conv.get("_dir") else None
        row["problems"] = list(r["problems"]) + list(r["excluded"])
        row["excluded"] = bool(r["excluded"])
        rows.append(row)
    return rows
