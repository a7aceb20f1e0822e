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

The recommended epoch and the verdict follow the rule in :data:`RULE` with the thresholds in
:data:`THRESHOLDS`; both are written into ``convergence.json`` as text.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hetfield.errors import ConfigError

THRESHOLDS = {
    "loss_rel_improvement": 0.01,  # per epoch
    "latent_shift_median": 0.10,  # per epoch, in units of the latent spread
    "volume_cc": 0.99,  # between consecutive analysed epochs, every representative
    "class_change_fraction": 0.02,  # per epoch
    "min_epochs": 3,  # fewer saved epochs: "too few epochs"
    "truth_cc_drop": 0.02,  # fall of the correlation with the truth from its best epoch
    "class_change_spike": 0.05,  # class changes above this after they had settled
    "validation_rise": 0.02,  # rise of the held-out loss above its minimum
    "validation_plateau": 0.002,  # held-out loss improvement below which it counts as stalled
}

RULE = (
    "Recommended epoch: the first saved epoch e after which, at every later saved epoch, (1) the training loss "
    "improves by less than {loss:.0%} per epoch, (2) the median per-particle latent shift (after aligning consecutive "
    "latents by a least-squares affine map) is below {shift:g} of the latent spread per epoch, (3) fewer than {cls:.0%} "
    "of particles change class per epoch (K > 1), and (4) every representative volume correlates >= {cc:g} (masked) "
    "with the same representative at the previous analysed epoch. "
    "Verdict: 'too few epochs' with fewer than {min_epochs} saved epochs (the last is recommended); 'signs of "
    "overfitting' when the correlation with the true maps (--truth) fell by more than {drop:g} from its best analysed "
    "epoch, or the validation (held-out) loss rose more than {vrise:.0%} above its minimum while the training loss kept "
    "falling, or the training loss still improved by more than {loss:.0%} per epoch over the last 2 epochs while the "
    "validation loss improved by less than {vplat:.1%}, or more than {spike:.0%} of particles changed class after class "
    "assignments had settled (the recommendation is then the epoch of best truth correlation, of lowest validation "
    "loss, or the one before the class-change spike); 'converged' when the rule holds at least one saved epoch before "
    "the last; otherwise 'still moving' (the last epoch is recommended: train longer)."
).format(
    loss=THRESHOLDS["loss_rel_improvement"], shift=THRESHOLDS["latent_shift_median"], cls=THRESHOLDS["class_change_fraction"],
    cc=THRESHOLDS["volume_cc"], min_epochs=THRESHOLDS["min_epochs"], drop=THRESHOLDS["truth_cc_drop"],
    spike=THRESHOLDS["class_change_spike"], vrise=THRESHOLDS["validation_rise"], vplat=THRESHOLDS["validation_plateau"],
)

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


# -- the rule ---------------------------------------------------------------------------------------
def _settled_after(rows: dict[int, dict], e: int, use_loss: bool, k: int, zdim: int) -> tuple[bool, list[str]]:
    """Does every criterion hold at every epoch after ``e``? Returns (ok, reasons it does not)."""
    th = THRESHOLDS
    reasons = []
    for j, r in rows.items():
        if j <= e:
            continue
        if use_loss and r.get("loss_rel_improvement") is not None and r["loss_rel_improvement"] >= th["loss_rel_improvement"]:
            reasons.append(f"loss improved by {r['loss_rel_improvement']:.1%} at epoch {j} (threshold {th['loss_rel_improvement']:.0%})")
        if zdim and r.get("latent_shift_median") is not None and r["latent_shift_median"] >= th["latent_shift_median"]:
            reasons.append(f"median latent shift {r['latent_shift_median']:.3f} of the spread per epoch at epoch {j} (threshold {th['latent_shift_median']:g})")
        if k > 1 and r.get("class_change_fraction") is not None and r["class_change_fraction"] >= th["class_change_fraction"]:
            reasons.append(f"{r['class_change_fraction']:.1%} of particles changed class per epoch at epoch {j} (threshold {th['class_change_fraction']:.0%})")
        if r.get("volume_cc_previous_min") is not None and r["volume_cc_previous_min"] < th["volume_cc"]:
            reasons.append(
                f"volumes changed between epochs {r.get('previous_analysed_epoch')} and {j}: lowest correlation "
                f"{r['volume_cc_previous_min']:.3f} (threshold {th['volume_cc']:g})"
            )
    return not reasons, reasons


def decide(epoch_rows: list[dict], saved: list[int], analysed: list[int], k: int, zdim: int) -> dict[str, Any]:
    """Recommended epoch, verdict and reasons (see :data:`RULE`)."""
    th = THRESHOLDS
    rows = {r["epoch"]: r for r in epoch_rows}
    last = saved[-1]
    if len(saved) < th["min_epochs"]:
        return {
            "recommended_epoch": last,
            "verdict": "too few epochs",
            "reasons": [f"only {len(saved)} saved epoch(s); convergence needs at least {th['min_epochs']} to judge — train longer"],
        }
    # Epochs after the last checkpoint (metrics only) may still move: then no saved epoch settles and
    # the last one is the recommendation ("still moving").
    rec = next((e for e in saved if _settled_after(rows, e, True, k, zdim)[0]), last)
    reasons: list[str] = []
    overfit: list[str] = []
    overfit_epoch = None
    # 1. correlation with the truth peaked and fell.
    tc = [(e, rows[e]["truth_cc_median"]) for e in analysed if rows[e].get("truth_cc_median") is not None]
    if len(tc) >= 2:
        best_e, best = max(tc, key=lambda x: x[1])
        last_cc = tc[-1][1]
        if best_e < tc[-1][0] and best - last_cc > th["truth_cc_drop"]:
            overfit.append(f"correlation with the true maps peaked at epoch {best_e} ({best:.3f}) and fell to {last_cc:.3f} by epoch {tc[-1][0]}")
            overfit_epoch = best_e
    # 2. the held-out loss rose from its minimum while the training loss kept falling.
    val = [(e, rows[e]["val_data_loss"], rows[e].get("loss")) for e in sorted(rows) if rows[e].get("val_data_loss") is not None]
    if len(val) >= 3:
        best_e, best_v, best_train = min(val, key=lambda x: x[1])
        last_e, last_v, last_train = val[-1]
        if best_e < last_e and best_v > 0 and (last_v - best_v) / best_v > th["validation_rise"] and (
            best_train is None or last_train is None or last_train < best_train
        ):
            overfit.append(f"the validation (held-out) loss was lowest at epoch {best_e} ({best_v:.4g}) and rose to {last_v:.4g} by "
                           f"epoch {last_e} while the training loss kept falling")
            if best_e in saved:
                overfit_epoch = overfit_epoch or best_e
            else:
                overfit_epoch = overfit_epoch or max([s for s in saved if s <= best_e], default=saved[0])
    # 3. class changes spiked after they had settled.
    if k > 1:
        changes = [(e, rows[e].get("class_change_fraction")) for e in saved if rows[e].get("class_change_fraction") is not None]
        low_seen = False
        for e, c in changes:
            if c < th["class_change_fraction"]:
                low_seen = True
            elif low_seen and c > th["class_change_spike"]:
                overfit.append(f"{c:.1%} of particles changed class at epoch {e} after class assignments had settled")
                prev_saved = [s for s in saved if s < e]
                overfit_epoch = overfit_epoch or (prev_saved[-1] if prev_saved else e)
                break
    # 4. the training loss still falls clearly while the held-out loss no longer improves.
    if len(val) >= 4:
        recent = [rows[e].get("loss_rel_improvement") for e in sorted(rows)[-2:]]
        vals = [v for _, v, _ in val]
        best_before = min(vals[:-2])
        plateau = min(vals[-2:]) >= best_before * (1 - th["validation_plateau"])
        if all(r is not None and r >= th["loss_rel_improvement"] for r in recent) and plateau:
            best_e = min(val, key=lambda x: x[1])[0]
            overfit.append(
                f"the training loss still improves by {min(recent):.1%}+ per epoch while the validation loss has not improved "
                f"by {th['validation_plateau']:.1%} for 2 epochs: further gains fit the training particles, not the structure"
            )
            overfit_epoch = overfit_epoch or max([s for s in saved if s <= best_e], default=saved[0])
    if overfit:
        return {"recommended_epoch": int(overfit_epoch), "verdict": "signs of overfitting", "reasons": overfit}
    if rec < last:
        reasons.append(f"from epoch {rec} to {last} every criterion stayed within its threshold")
        return {"recommended_epoch": int(rec), "verdict": "converged", "reasons": reasons}
    _, why = _settled_after(rows, saved[-2], True, k, zdim)
    return {"recommended_epoch": int(last), "verdict": "still moving", "reasons": why or ["the last epoch still changes"]}


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
