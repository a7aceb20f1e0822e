"""Figures and ``report.html`` of ``hetfield analyze`` (most-looked-at first: classes, embedding,
volumes; then truth metrics, PCA, traversals, files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def write_report(ctx, summary: dict[str, Any], private: dict[str, Any], out: Path) -> list[str]:
    """Write the PNGs and ``report.html`` into ``out``; return the PNG paths (relative)."""
    from hetfield.analysis import plots as P
    from hetfield.analysis.report import Link, Report
    from hetfield.io.atomic import write_bytes_atomic

    written: list[str] = []

    def save(name: str, png: bytes) -> bytes:
        rel = f"plots/{name}.png"
        write_bytes_atomic(out / rel, png)
        written.append(rel)
        return png

    kk = summary["n_classes"]
    zdim = summary["zdim"]
    cls = private["class_idx"]
    probs = private["class_probs"]
    vols = private["volumes"]
    queue = private["queue"]
    class_names = [f"class {c}" for c in range(kk)]
    rep = Report(
        f"Analysis of {ctx.run_id}, epoch {summary['epoch']}",
        f"{ctx.run.path} · {summary['n_particles']} particles · zdim {zdim} · {kk} class(es) · "
        f"{summary['pixel_size_A']:.4g} Å/px, box {summary['box']}",
    )
    rep.kv({
        "epoch": f"{summary['epoch']} ({summary['epoch_choice']})",
        "particles": summary["n_particles"],
        "latent dimension": zdim,
        "classes": kk,
        "classes analysed": ", ".join(map(str, summary["classes_analysed"])),
        "embedding": summary.get("embedding") or "–",
        "run time (s)": summary.get("seconds"),
    })
    for note in summary.get("notes", []):
        rep.callout(note, kind="warn")

    # -- classes ----------------------------------------------------------------------------------------
    if kk > 1:
        rep.section("Classes")
        occ = summary["class_occupancy"]
        rep.image(save("class_occupancy", P.bars(occ, class_names, "class occupancy", "fraction of particles")), "Fraction of particles per class (hard assignment).")
        emb = private.get("embedding")
        if emb is not None:
            rep.image(save("embedding_by_class", P.scatter(emb, f"{summary['embedding']} of z coloured by class", f"{summary['embedding']}1",
                                                           f"{summary['embedding']}2", labels=cls, label_names=class_names)),
                      f"{summary['embedding']} of all particles' latents, coloured by class.")
        rep.image(save("class_confidence", P.histogram(probs.max(1), "posterior probability of the assigned class", "max class probability",
                                                        labels=cls, label_names=class_names)),
                  "Confidence of the class assignment (1 = certain).")

    def class_volume_section():
        cv = summary["class_volumes"]
        cvols = [vols[private["class_vol"][r["class"]]] for r in cv]
        rep.section("Class volumes" if kk > 1 else "Volume at the particle nearest the mean latent" if zdim else "Volume")
        rep.image(save("class_volumes", P.volume_gallery(cvols, [f"class {r['class']}" for r in cv], "class volumes (projections)", views="zyx")),
                  "Projections along z, y and x of each class's volume.")
        stars = set(summary["files"]["star"])
        rep.table([
            {"class": r["class"], "particles": r["n_particles"], "fraction": summary["class_occupancy"][r["class"]],
             "volume at particle": r["particle"], "MRC": Link(r["path"]),
             "STAR": Link(_star(stars, f"particles/class_{r['class']}")) if _star(stars, f"particles/class_{r['class']}") else "–"}
            for r in cv
        ], ["class", "particles", "fraction", "volume at particle", "MRC", "STAR"])

    if kk > 1:
        class_volume_section()

    # -- latent: embedding and k-means per group ------------------------------------------------------
    for gname, g in summary["groups"].items():
        gp = private["groups"][gname]
        title = "All particles" if gname == "all" else gname.replace("_", " ")
        if "kmeans" not in g:
            if g.get("skipped"):
                rep.section(title)
                rep.text(f"{g['skipped']}: no latent analysis.")
            continue
        rep.section(f"{title}: latent space")
        km = gp["kmeans"]
        members = gp["members"]
        zname = g.get("embedding")
        emb = gp.get("embedding")
        on_data = km.on_data
        if emb is not None:
            rep.image(save(f"{gname}_embedding_kmeans", P.scatter(emb, f"{zname}, k-means ({km.k}) clusters", f"{zname}1", f"{zname}2",
                                                                  labels=km.labels if km.k <= 20 else None, annotate=on_data,
                                                                  annotate_text=[str(j) for j in range(km.k)])),
                      f"{zname} coloured by k-means cluster; numbered circles: on-data centres (the particles whose volumes are shown).")
            if len(members) >= 30:
                rep.image(save(f"{gname}_embedding_hexbin", P.hexbin(emb, f"{zname} density", f"{zname}1", f"{zname}2")), f"Particle density in the {zname} embedding.")
        kvols = [vols[i] for i in gp["kmeans_vols"]]
        rep.heading(f"k-means volumes (k = {km.k}{'' if km.k == km.k_requested else f', capped from {km.k_requested}'})")
        rep.image(save(f"{gname}_kmeans_volumes", P.volume_gallery(kvols, [str(j) for j in range(km.k)], f"k-means centre volumes ({title})")),
                  "Projection along z of the volume at each cluster's on-data centre.")
        kstars = gp.get("kmeans_star")
        rows = []
        sizes = np.bincount(km.labels, minlength=km.k)
        for j in range(km.k):
            rows.append({
                "cluster": j, "particles": int(sizes[j]), "centre particle": int(members[on_data[j]]),
                "MRC": Link(queue.paths[gp["kmeans_vols"][j]]),
                "STAR": [Link(s) for s in kstars[j]] if kstars and kstars[j] else "–",
            })
        rep.table(rows, ["cluster", "particles", "centre particle", "MRC", "STAR"])

    if kk == 1:
        class_volume_section()

    # -- truth -------------------------------------------------------------------------------------------
    tr = summary.get("truth")
    if tr:
        rep.section("Comparison with the ground truth")
        kv = {}
        if "class_ari" in tr:
            kv["class ARI / NMI"] = f"{tr['class_ari']:.3f} / {tr['class_nmi']:.3f}"
        if "kmeans_true_k" in tr:
            kv[f"k-means (k = {tr['kmeans_true_k']['k']}) ARI / NMI"] = f"{tr['kmeans_true_k']['ari']:.3f} / {tr['kmeans_true_k']['nmi']:.3f}"
        if "kmeans" in tr:
            kv[f"k-means (k = {tr['kmeans']['k']}) ARI / NMI"] = f"{tr['kmeans']['ari']:.3f} / {tr['kmeans']['nmi']:.3f}"
        if tr.get("spearman_pc1_t") is not None:
            kv["|Spearman| PC1 vs true t"] = f"{tr['spearman_pc1_t']:.3f}"
        for c, v in (tr.get("spearman_pc1_t_per_true_class") or {}).items():
            kv[f"|Spearman| PC1 vs t, true class {c}"] = "–" if v is None else f"{v:.3f}"
        if kv:
            rep.kv(kv)
        vt = tr.get("volumes_vs_truth") or []
        if vt:
            rep.table([{k: r[k] for k in ("volume", "true_map", "cc", "fsc_half_nyquist", "resolution_fsc05_A", "resolution_fsc0143_A")} for r in vt],
                      ["volume", "true_map", "cc", "fsc_half_nyquist", "resolution_fsc05_A", "resolution_fsc0143_A"])
            freq = np.arange(len(vt[0]["fsc"])) / summary["box"]
            rep.image(save("fsc_truth", P.fsc_curves({f"{r['volume']} vs {r['true_map']}": (freq, np.array(r["fsc"])) for r in vt},
                                                     "FSC against the matched true maps", summary["pixel_size_A"])),
                      "Masked FSC of each learned volume against its matched true map (Hungarian matching on correlation).")

    # -- PCA and traversals ------------------------------------------------------------------------------
    for gname, g in summary["groups"].items():
        gp = private["groups"][gname]
        pca = gp.get("pca")
        if pca is None:
            continue
        title = "All particles" if gname == "all" else gname.replace("_", " ")
        rep.section(f"{title}: principal components")
        ev = pca.explained_variance_ratio
        rep.image(save(f"{gname}_pca_variance", P.bars(list(ev), [f"PC{i + 1}" for i in range(len(ev))], "explained variance", "fraction")),
                  "Fraction of the latent variance along each principal component.")
        proj = pca.projection
        if proj.shape[1] >= 2 and proj.shape[0] >= 2:
            colour = cls[gp["members"]] if (kk > 1 and gname == "all") else None
            rep.image(save(f"{gname}_pca_scatter", P.scatter(proj[:, :2], "PC1 vs PC2", "PC1", "PC2", labels=colour)), "Latents projected on PC1 and PC2.")
            if proj.shape[0] >= 30:
                rep.image(save(f"{gname}_pca_hexbin", P.hexbin(proj[:, :2], "PC1 vs PC2 density", "PC1", "PC2")), "Density of particles on PC1/PC2.")
        else:
            rep.image(save(f"{gname}_pc1_histogram", P.histogram(proj[:, 0], "PC1", "PC1 coordinate")),
                      "The latent has one principal component: its distribution.")
        for tr_, ids in gp.get("traversals", []):
            pc = tr_.pc
            tv = [vols[i] for i in ids]
            rep.heading(f"Traversal along PC{pc}")
            rep.image(save(f"{gname}_pc{pc}_traversal", P.volume_gallery(tv, [f"{p:.0f}%" for p in tr_.percentiles], f"PC{pc} traversal ({title})")),
                      f"Volumes at percentiles {tr_.percentiles[0]:.0f}–{tr_.percentiles[-1]:.0f} of the PC{pc} coordinate (projections along z).")
            rep.table([{"percentile": float(p), f"PC{pc}": float(c), "nearest particle": int(gp["members"][nn]), "MRC": Link(queue.paths[i])}
                       for p, c, nn, i in zip(tr_.percentiles, tr_.coordinates, tr_.nearest, ids)],
                      ["percentile", f"PC{pc}", "nearest particle", "MRC"])

    rep.section("Files")
    rep.link("summary.json", "summary.json (all numbers)")
    rep.text(f"{len(summary['files']['volumes'])} volumes under volumes/, {len(summary['files']['star'])} particle files under particles/, "
             f"latent coordinates and cluster labels under latent/.")
    rep.write(out / "report.html")
    return written


def _star(stars: set[str], stem: str) -> str | None:
    for s in sorted(stars):
        if s.startswith(stem + "."):
            return s
    return None
