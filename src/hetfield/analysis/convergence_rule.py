"""The convergence rule of ``hetfield convergence``, pure: per-epoch rows in, verdict out.

Measurement (:mod:`~hetfield.analysis.convergence`) fills one row per epoch (loss improvement, latent
shift, class changes, volume correlations, truth and held-out losses); :func:`decide` turns the rows
into the recommended epoch, the verdict and its reasons; the report
(:mod:`~hetfield.analysis.convergence_report`) prints :data:`RULE` and draws :data:`THRESHOLDS`. No
file, model or array is touched here, so the rule is tested on hand-written rows.
"""

from __future__ import annotations

from typing import Any

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
