"""Figures, ``convergence.json`` and ``report.html`` of ``hetfield convergence`` (verdict and
recommended epoch first, then training curves, volumes, embeddings and the per-epoch table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hetfield.analysis.convergence_rule import RULE, THRESHOLDS


def write_outputs(ctx, result: dict[str, Any], out: Path, truth=None) -> dict[str, Any]:
    """PNGs, ``convergence.json`` and ``report.html`` under ``out``; returns the JSON dict."""
    from hetfield.analysis import plots as P
    from hetfield.analysis.provenance import provenance
    from hetfield.analysis.report import Link, Report
    from hetfield.io.atomic import write_bytes_atomic, write_json_atomic
    from hetfield.io.plain import to_plain

    figs: list[tuple[str, bytes, str]] = []

    def fig(name: str, png: bytes, caption: str):
        write_bytes_atomic(out / "plots" / f"{name}.png", png)
        figs.append((name, png, caption))
        return png

    rows = result["epochs"]
    rec = result["recommended_epoch"]
    ep = [r["epoch"] for r in rows]
    loss_series = {key: [r.get(key, np.nan) for r in rows] for key in ("loss", "data_loss", "val_data_loss") if any(key in r for r in rows)}
    if loss_series:
        fig("loss", P.lines(ep, loss_series, "training loss", "epoch", "loss", vline=rec, vline_label=f"recommended ({rec})"), "Training loss per epoch.")
    impr = [(r["epoch"], r["loss_rel_improvement"]) for r in rows if r.get("loss_rel_improvement") is not None]
    if impr:
        fig("loss_improvement", P.multi_lines({"relative improvement": ([a for a, _ in impr], [max(b, 1e-6) for _, b in impr])},
                                               "loss improvement per epoch", "epoch", "relative improvement", logy=True,
                                               hlines={"threshold": THRESHOLDS["loss_rel_improvement"]}, vline=rec),
            "Relative loss improvement per epoch (log scale); the rule's threshold dashed.")
    if any("kl" in r for r in rows) and result["zdim"]:
        fig("kl", P.lines(ep, {"KL": [r.get("kl", np.nan) for r in rows]}, "KL divergence", "epoch", "KL"), "KL term per epoch.")
    shift = [(r["epoch"], r.get("latent_shift_median"), r.get("latent_shift_p90")) for r in rows if r.get("latent_shift_median") is not None]
    if shift:
        fig("latent_shifts", P.multi_lines({"median": ([a for a, _, _ in shift], [b for _, b, _ in shift]),
                                            "90th percentile": ([a for a, _, _ in shift], [c for _, _, c in shift])},
                                           "latent shifts between saved epochs", "epoch", "shift / latent spread (per epoch)",
                                           hlines={"threshold (median)": THRESHOLDS["latent_shift_median"]}, vline=rec),
            "Per-particle latent shift from the previous saved epoch, in units of the latent spread, per epoch.")
    k = result["n_classes"]
    if k > 1:
        occ_rows = [r for r in rows if r.get("class_occupancy") is not None]
        if occ_rows:
            fig("class_occupancy", P.stacked_occupancy([r["epoch"] for r in occ_rows], np.array([r["class_occupancy"] for r in occ_rows]),
                                                       "class occupancy per saved epoch"), "Fraction of particles in each class (hard assignment).")
        ch = [(r["epoch"], r["class_change_fraction"]) for r in rows if r.get("class_change_fraction") is not None]
        if ch:
            fig("class_changes", P.multi_lines({"changed class": ([a for a, _ in ch], [b for _, b in ch])}, "particles changing class",
                                               "epoch", "fraction per epoch", hlines={"threshold": THRESHOLDS["class_change_fraction"]}, vline=rec),
                "Fraction of particles whose class changed since the previous saved epoch.")
    vr = result["volumes"]
    reps = result["representatives"]
    cc_series = _per_representative(vr, reps, "cc_previous")
    if cc_series:
        fig("volume_cc", P.multi_lines(cc_series, "volume correlation with the previous analysed epoch", "epoch", "masked correlation",
                                       hlines={"threshold": THRESHOLDS["volume_cc"]}, vline=rec),
            "Masked correlation of each representative's volume with its volume at the previous analysed epoch.")
        fsc_series = _per_representative(vr, reps, "fsc05_previous_A")
        fig("volume_fsc", P.multi_lines(fsc_series, "FSC = 0.5 with the previous analysed epoch", "epoch", "resolution (Å)", vline=rec),
            "Resolution at which each representative's volume stops agreeing (FSC 0.5) with the previous analysed epoch; lower = more stable detail.")
    truth_series = _per_representative(vr, reps, "truth_cc")
    if truth_series:
        fig("truth_cc", P.multi_lines(truth_series, "correlation with the nearest true map", "epoch", "masked correlation", vline=rec),
            "Masked correlation of each representative volume with the nearest true map.")
    emb = result["_embeddings"]
    sub = result["_subsample"]
    emb_pngs = []
    rep_sub = []
    if emb:
        pos = {int(p): i for i, p in enumerate(sub)}
        rep_sub = [pos[r["particle"]] for r in reps if r.get("particle") is not None and int(r["particle"]) in pos]
        views = [(result["embedding"], emb)]
        if result["embedding"] != "PCA":
            views.append(("PCA", result["_pca_views"]))
        for name, by_epoch in views:
            for e, xy in by_epoch.items():
                labels = result["_latents"][e]["class_idx"][sub] if k > 1 else None
                png = P.scatter(xy, f"{name} of z, epoch {e}", f"{'PC' if name == 'PCA' else name}1", f"{'PC' if name == 'PCA' else name}2",
                                labels=labels, annotate=np.array(rep_sub), annotate_text=[r["name"] for r in reps],
                                label_names=[f"class {c}" for c in range(k)])
                emb_pngs.append((name, e, fig(f"{name.lower()}_epoch_{e}", png,
                                               f"{name} of the latent at epoch {e}; circles: the representative particles.")))
    vols = result["_volumes"]
    order = result["_order"]
    gallery = []
    gnames = []
    for r in reps:
        for e in result["analysed_epochs"]:
            gallery.append(vols[e][int(order[e][r["id"]])])
            gnames.append(f"{r['name']} e{e}")
    gal = fig("volumes", P.volume_gallery(gallery, gnames, "representative volumes per analysed epoch (projections)",
                                          ncols=len(result["analysed_epochs"])),
              "Rows: representatives; columns: analysed epochs.")

    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()) + ["convergence.json", "report.html"]
    doc = {
        **provenance("convergence", ctx=ctx),
        "truth": str(truth.path) if truth is not None else None,
        **{k_: v for k_, v in result.items() if not k_.startswith("_")},
        "files": sorted(set(files)),
    }
    doc = to_plain(doc)
    write_json_atomic(out / "convergence.json", doc)

    # -- report ---------------------------------------------------------------------------------------
    rep = Report(f"Convergence of {ctx.run_id}", f"{ctx.run.path} · {len(result['saved_epochs'])} saved epochs · "
                 f"{result['n_particles']} particles · zdim {result['zdim']} · {k} class(es)")
    kind = {"converged": "good", "still moving": "warn", "too few epochs": "warn", "signs of overfitting": "bad"}[doc["verdict"]]
    rep.callout(f"Recommended epoch: {rec}. Verdict: {doc['verdict']}.", kind=kind)
    rep.bullets(doc["reasons"])
    rep.text(f"Analyse it with: hetfield analyze {ctx.run.path} --epoch {rec}   (or --epoch auto)")
    rep.section("Training")
    for name, png, caption in figs:
        if name in ("loss", "loss_improvement", "latent_shifts", "class_occupancy", "class_changes", "kl"):
            rep.image(png, caption)
    rep.section("Volumes at representative particles")
    for name, png, caption in figs:
        if name in ("volume_cc", "volume_fsc", "truth_cc"):
            rep.image(png, caption)
    rep.image(gal, "Rows: representatives; columns: analysed epochs.")
    vol_table = []
    for v in vr:
        vol_table.append({"epoch": v["epoch"], "representative": v["representative"], "class": v["class"],
                          "CC previous": v.get("cc_previous"), "FSC 0.5 previous (Å)": v.get("fsc05_previous_A"),
                          "CC truth": v.get("truth_cc"), "truth map": v.get("truth_map"), "MRC": Link(v["path"])})
    rep.table(vol_table, ["epoch", "representative", "class", "CC previous", "FSC 0.5 previous (Å)", "CC truth", "truth map", "MRC"])
    if reps and reps[0].get("particle") is not None:
        rep.heading("Representative particles")
        rep.table([{"representative": r["name"], "particle": r["particle"], "relative density": r["relative_density"],
                    "class at last epoch": r["class_at_last"]} for r in reps])
    if emb_pngs:
        rep.section("Latent embeddings per analysed epoch")
        rep.text("The same representative particles are circled at every epoch: their volumes are the ones compared above.")
        for name, e, png in emb_pngs:
            rep.image(png, f"{name}, epoch {e}", width=330)
    rep.section("Per-epoch metrics")
    cols = ["epoch", "loss", "val_data_loss", "loss_rel_improvement", "latent_shift_median", "latent_shift_p90", "class_change_fraction",
            "volume_cc_previous_min", "truth_cc_median", "seconds"]
    cols = [c for c in cols if any(r.get(c) is not None for r in rows)]
    rep.table([{c: r.get(c) for c in cols} for r in rows], cols)
    rep.section("Rule")
    rep.text(RULE)
    if doc["notes"]:
        rep.section("Notes")
        rep.bullets(doc["notes"], css="notes")
    rep.link("convergence.json", "convergence.json (all numbers)")
    rep.write(out / "report.html")
    return doc


def _per_representative(volume_rows, reps, key: str) -> dict[str, tuple[list, list]]:
    """``{representative: (epochs, values)}`` of one per-volume measure, for the representatives that have it."""
    series = {}
    for r in reps:
        pts = [(v["epoch"], v[key]) for v in volume_rows if v["representative"] == r["name"] and key in v]
        if pts:
            series[r["name"]] = ([a for a, _ in pts], [b for _, b in pts])
    return series
