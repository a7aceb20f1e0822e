"""``hetfield convergence``: has training converged, and which epoch should be analysed?

Measured per saved epoch: the loss (``metrics.jsonl``), per-particle latent shifts from the previous
saved epoch (median and 90th percentile, in units of the latent spread, after aligning the previous
latent onto the new one by a least-squares affine map so that a drift or rotation of the whole latent
space does not count; the unaligned median is kept as ``latent_shift_raw_median``), class occupancy and the
fraction of particles changing class (K > 1). Every ``every`` epochs (and always the last) the
latent is embedded (UMAP, or PCA for few particles), and volumes are decoded at *representative
particles*: the particles nearest the density maxima of the last analysed epoch's embedding (or,
without a latent, one volume per class). The same particles are decoded at every analysed epoch, so
the volumes of one maximum can be compared across epochs (masked correlation and FSC), and with
``--truth`` against the nearest true map.

The recommended epoch and the verdict follow :mod:`hetfield.analysis.convergence_rule` (the rule
and its thresholds, pure: per-epoch rows in, verdict out); both are written into ``convergence.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hetfield.analysis.convergence_rule import RULE, THRESHOLDS, decide
from hetfield.errors import ConfigError

MAX_EMBED_POINTS = 20000


def analysed_epochs(saved: list[int], every: int) -> list[int]:
    """Saved epochs divisible by ``every``, plus the first and the last saved epoch."""
    if every < 1:
        raise ConfigError(f"--every {every}: give a positive number of epochs")
    chosen = {e for e in saved if e % every == 0}
    chosen.add(saved[-1])
    chosen.add(saved[0])
    return sorted(chosen)


_NUMERIC_METRICS = ("loss", "data_loss", "val_data_loss", "kl", "seconds", "images_per_s", "mean_max_prob", "class_change_fraction")


def _loss_series(metrics: list[dict], notes: list[str] | None = None, source: str = "metrics.jsonl") -> dict[int, dict]:
    """``epoch → metrics row``; rows without an epoch, and values that are not numbers, are left out
    (and said in ``notes``): a hand-edited or foreign line must not become a loss."""
    import math

    by_epoch: dict[int, dict] = {}
    skipped_rows, dropped = 0, set()
    for row in metrics:
        epoch = row.get("epoch") if isinstance(row, dict) else None
        if isinstance(epoch, bool) or not isinstance(epoch, (int, float)) or not float(epoch).is_integer() or epoch < 1:
            skipped_rows += 1
            continue
        clean = dict(row)
        for key in _NUMERIC_METRICS:
            v = clean.get(key)
            if key in clean and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)):
                if v is not None:
                    dropped.add(key)
                del clean[key]
        by_epoch[int(epoch)] = clean
    if notes is not None and skipped_rows:
        notes.append(f"{source}: {skipped_rows} line(s) without a valid epoch number were ignored")
    if notes is not None and dropped:
        notes.append(f"{source}: values of {', '.join(sorted(dropped))} that are not finite numbers were ignored")
    return by_epoch


def _subsample(n: int, limit: int, seed: int = 0) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def compute(
    ctx,
    out: Path,
    every: int = 5,
    truth=None,
    use_umap: bool = True,
    device=None,
    n_maxima: int = 5,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Measure everything, write PNGs and volumes under ``out``; return the ``convergence.json`` dict."""
    from hetfield.analysis import latent as L
    from hetfield.analysis import metrics as M
    from hetfield.analysis.context import load_model
    from hetfield.analysis.volumes import write_volume
    from hetfield.model.decode import decode_volumes

    run = ctx.run
    saved = run.epochs()
    chosen = analysed_epochs(saved, every)
    notes = list(ctx.notes)
    metrics = _loss_series(run.metrics(), notes, str(run.metrics_path))
    latents = {e: ctx.latent(e) for e in saved}
    zdim = ctx.zdim
    k = ctx.n_classes
    n = next(iter(latents.values()))["class_idx"].shape[0]
    after = sorted(e for e in metrics if e > saved[-1])
    if after:
        span = f"{after[0]}" if len(after) == 1 else f"{after[0]}–{after[-1]}"
        notes.append(
            f"metrics.jsonl records epoch(s) {span} after the last checkpoint (epoch {saved[-1]}): training stopped between "
            f"the metrics line and the checkpoint, or --checkpoint-every skipped them; they are shown, but only saved epochs "
            f"can be recommended (resume with `hetfield train {run.path} --data DATASET --load latest` to save them)"
        )

    # -- per saved epoch -------------------------------------------------------------------------
    rows: dict[int, dict[str, Any]] = {}
    all_epochs = sorted(set(saved) | set(metrics))
    prev_loss = None
    for e in all_epochs:
        m = metrics.get(e, {})
        loss = m.get("loss")
        r: dict[str, Any] = {"epoch": e, "saved": e in latents, "analysed": e in chosen}
        for key in ("loss", "data_loss", "val_data_loss", "kl", "seconds", "images_per_s", "mean_max_prob"):
            if key in m:
                r[key] = m[key]
        if loss is not None and prev_loss is not None and prev_loss != 0:
            r["loss_rel_improvement"] = (prev_loss - loss) / abs(prev_loss)
        prev_loss = loss if loss is not None else prev_loss
        if "class_change_fraction" in m:
            r["class_change_fraction_train"] = m["class_change_fraction"]
        if "class_occupancy" in m:
            r["class_occupancy_train"] = m["class_occupancy"]
        rows[e] = r
    prev = None
    for e in saved:
        lat = latents[e]
        r = rows[e]
        cls = np.asarray(lat["class_idx"], np.int64)
        if k > 1:
            r["class_occupancy"] = (np.bincount(cls, minlength=k) / max(n, 1)).tolist()
        if prev is not None:
            gap = max(e - prev, 1)
            r["epochs_since_previous_saved"] = gap
            if zdim and "z_mu" in lat and "z_mu" in latents[prev]:
                s = L.normalised_shifts(latents[prev]["z_mu"], lat["z_mu"], align=True)
                r["latent_shift_median"] = float(np.median(s)) / gap
                r["latent_shift_p90"] = float(np.percentile(s, 90)) / gap
                raw = L.normalised_shifts(latents[prev]["z_mu"], lat["z_mu"])
                r["latent_shift_raw_median"] = float(np.median(raw)) / gap
            if k > 1:
                r["class_change_fraction"] = float((cls != np.asarray(latents[prev]["class_idx"])).mean()) / gap
        prev = e

    # -- embeddings at analysed epochs -----------------------------------------------------------
    sub = _subsample(n, MAX_EMBED_POINTS)
    embeddings: dict[int, np.ndarray] = {}
    pca_views: dict[int, np.ndarray] = {}
    embed_name = None
    if zdim:
        for i, e in enumerate(chosen):
            if progress:
                progress("embedding latents", i, len(chosen))
            zs = latents[e]["z_mu"][sub]
            emb, embed_name = L.embed_2d(zs, use_umap=use_umap)
            embeddings[e] = emb
            pca_views[e] = emb if embed_name == "PCA" else L.embed_2d(zs, use_umap=False)[0]
        if progress:
            progress("embedding latents", len(chosen), len(chosen))

    # -- representatives -------------------------------------------------------------------------
    last = chosen[-1]
    reps: list[dict[str, Any]] = []
    if zdim:
        dm = L.density_maxima(embeddings[last], max_points=n_maxima)
        for j, (p_sub, dens) in enumerate(zip(dm.particles, dm.density)):
            p = int(sub[p_sub])
            reps.append({"id": j, "name": f"max{j}", "particle": p, "relative_density": float(dens),
                         "class_at_last": int(latents[last]["class_idx"][p])})
    else:
        for c in range(k):
            reps.append({"id": c, "name": f"class{c}", "class_at_last": c, "particle": None})

    # -- volumes ---------------------------------------------------------------------------------
    mask = M.soft_sphere_mask(ctx.box)
    vols: dict[int, np.ndarray] = {}
    vol_rows: list[dict[str, Any]] = []
    true_maps = truth.maps_for_box(ctx.box) if truth is not None else []
    if truth is not None and not true_maps:
        notes.append(f"--truth: no true map of box {ctx.box} in {truth.path}; volume-vs-truth correlations skipped")
    for i, e in enumerate(chosen):
        if progress:
            progress("decoding volumes", i, len(chosen))
        model = load_model(ctx, e, device)
        lat = latents[e]
        if zdim:
            parts = np.array([r["particle"] for r in reps])
            z = np.asarray(lat["z_mu"], np.float32)[parts]
            cls = np.asarray(lat["class_idx"], np.int64)[parts]
        else:
            z = None
            cls = np.arange(k)
        vols[e] = decode_volumes(model, z, cls)
        del model
    if progress:
        progress("decoding volumes", len(chosen), len(chosen))
    # Without a latent, a class's identity across epochs is its best match with the previous epoch.
    order = {chosen[-1]: np.arange(len(reps))}
    if not zdim and k > 1:
        for a, b in reversed(list(zip(chosen[:-1], chosen[1:]))):
            cc = np.array([[M.masked_correlation(vols[b][order[b][r]], vols[a][c], mask) for c in range(k)] for r in range(k)])
            pairs = M.match_best(cc)
            order[a] = np.array([c for _, c in pairs])
    else:
        for e in chosen:
            order[e] = np.arange(len(reps))
    for idx, e in enumerate(chosen):
        pe = chosen[idx - 1] if idx else None
        for r in reps:
            j = int(order[e][r["id"]])
            v = vols[e][j]
            rel = f"volumes/epoch_{e}/{r['name']}.mrc"
            write_volume(out / rel, v, ctx.pixel_size_A)
            row: dict[str, Any] = {"epoch": e, "representative": r["name"], "class": int(cls_of(r, latents[e], j, zdim)), "path": rel}
            if pe is not None:
                vp = vols[pe][int(order[pe][r["id"]])]
                row["cc_previous"] = M.masked_correlation(v, vp, mask)
                f = M.fsc(v, vp, ctx.pixel_size_A, mask=mask)
                row["fsc05_previous_A"] = f.resolution_A(0.5)
                row["fsc_half_nyquist_previous"] = f.at_half_nyquist()
                row["previous_epoch"] = pe
            if true_maps:
                ccs = [M.masked_correlation(v, t.volume, mask) for t in true_maps]
                best = int(np.argmax(ccs))
                row["truth_cc"] = float(ccs[best])
                row["truth_map"] = true_maps[best].name
            vol_rows.append(row)
    for e in chosen:
        vr = [v for v in vol_rows if v["epoch"] == e]
        r = rows[e]
        ccs = [v["cc_previous"] for v in vr if "cc_previous" in v]
        if ccs:
            r["volume_cc_previous_min"] = float(min(ccs))
            r["volume_cc_previous_median"] = float(np.median(ccs))
            r["volume_fsc05_previous_A_median"] = float(np.median([v["fsc05_previous_A"] for v in vr if "fsc05_previous_A" in v]))
            r["previous_analysed_epoch"] = vr[0].get("previous_epoch")
        tc = [v["truth_cc"] for v in vr if "truth_cc" in v]
        if tc:
            r["truth_cc_median"] = float(np.median(tc))
            r["truth_cc_min"] = float(min(tc))

    epochs_rows = [rows[e] for e in all_epochs]
    decision = decide(epochs_rows, saved, chosen, k, zdim)
    return {
        "saved_epochs": saved,
        "analysed_epochs": chosen,
        "n_particles": int(n),
        "zdim": zdim,
        "n_classes": k,
        "embedding": embed_name,
        "embedded_particles": int(len(sub)) if zdim else 0,
        "epochs": epochs_rows,
        "representatives": reps,
        "volumes": vol_rows,
        "thresholds": dict(THRESHOLDS),
        "rule": RULE,
        **decision,
        "notes": notes,
        "_embeddings": embeddings,
        "_pca_views": pca_views,
        "_subsample": sub,
        "_volumes": vols,
        "_order": order,
        "_latents": latents,
    }


def cls_of(rep: dict, lat: dict, j: int, zdim: int) -> int:
    if zdim:
        return int(lat["class_idx"][rep["particle"]])
    return j


def run_convergence(
    run_path,
    out=None,
    every: int = 5,
    truth_dir=None,
    use_umap: bool = True,
    device: str = "auto",
    data=None,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """``hetfield convergence``: build ``out`` (default ``RUN/convergence``) atomically; return it and the JSON."""
    from hetfield.analysis.context import inputs as _inputs
    from hetfield.analysis.context import open_run, resolve_device
    from hetfield.analysis.convergence_report import write_outputs
    from hetfield.analysis.truth import load_truth
    from hetfield.errors import check_output_location
    from hetfield.io.atomic import atomic_directory

    out_given = out is not None
    if every < 1:
        raise ConfigError(f"--every {every}: give a positive number of epochs")
    ctx = open_run(run_path, data=data)
    out = Path(out) if out is not None else ctx.run.path / "convergence"
    check_output_location(out, "--out" if out_given else "output directory", hint="" if out_given else " (or pass --out DIR)",
                          marker="convergence.json", protect=_inputs(ctx))
    truth = load_truth(truth_dir) if truth_dir is not None else None
    for e in ctx.run.epochs():  # every saved epoch is read: a damaged one stops here, before any work
        ctx.latent(e)
    dev = resolve_device(device)
    with atomic_directory(out, replace=True) as tmp:
        result = compute(ctx, tmp, every=every, truth=truth, use_umap=use_umap, device=dev, progress=progress)
        doc = write_outputs(ctx, result, tmp, truth=truth)
    return out, doc
