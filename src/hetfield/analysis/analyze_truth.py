"""``hetfield analyze --truth``: an epoch's classes, latent and volumes measured against simulator truth.

Label metrics (ARI/NMI of classes and k-means clusters, |Spearman| of PC1 against the true motion
coordinate) and the FSC of learned volumes against their matched true maps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hetfield.analysis.pose_export import pose_truth


def truth_metrics(ctx, truth, epoch, cls, z, classes, vols, class_vol, private, notes, k, device) -> dict[str, Any]:
    """Label metrics (ARI/NMI, |Spearman|) and FSC of learned volumes against their matched true maps."""
    from hetfield.analysis import latent as L
    from hetfield.analysis import metrics as M

    res: dict[str, Any] = {"path": str(truth.path)}
    n = cls.shape[0]
    true_cls = true_t = None
    if truth.has_labels:
        if ctx.dataset is not None:
            names = ctx.dataset.particle_names
            true_cls, true_t = truth.labels_for(names)
        elif len(truth.particles) == n:
            true_cls = truth.particles["class"].to_numpy(np.int64)
            true_t = truth.particles["t"].to_numpy(np.float64) if "t" in truth.particles else None
            notes.append("--truth: no dataset to match particle names; assumed the truth's row order")
        else:
            notes.append("--truth: no dataset to match particle names and the counts differ; label metrics skipped")
    n_true = int(true_cls.max()) + 1 if true_cls is not None else len(truth.class_maps())
    poses = pose_truth(ctx, truth, epoch, cls, notes)  # refine/abinit runs: errors after global alignment
    alignment = poses.pop("_alignment") if poses is not None else None
    if poses is not None:
        res["poses"] = poses
    if true_cls is not None:
        res["n_true_classes"] = n_true
        if ctx.n_classes > 1:
            res["class_ari"] = M.ari(true_cls, cls)
            res["class_nmi"] = M.nmi(true_cls, cls)
        if z is not None:
            g = private["groups"]
            if "all" in g and g["all"].get("kmeans") is not None:
                km = g["all"]["kmeans"]
                res["kmeans"] = {"k": km.k, "ari": M.ari(true_cls, km.labels), "nmi": M.nmi(true_cls, km.labels)}
            if n_true > 1:
                km2 = L.kmeans(z, n_true)
                res["kmeans_true_k"] = {"k": km2.k, "ari": M.ari(true_cls, km2.labels), "nmi": M.nmi(true_cls, km2.labels)}
                private["kmeans_true_k"] = km2
            if true_t is not None and np.isfinite(true_t).all():
                pc1 = L.pca(z).projection[:, 0]
                res["spearman_pc1_t"] = M.abs_spearman(pc1, true_t)
                per = {}
                for tc in range(n_true):
                    sel = true_cls == tc
                    if sel.sum() >= 3:
                        per[str(tc)] = M.abs_spearman(L.pca(z[sel]).projection[:, 0], true_t[sel])
                res["spearman_pc1_t_per_true_class"] = per
    # Volumes against the true class maps.
    tmaps = [m for m in truth.class_maps() if m.volume.shape == (ctx.box,) * 3]
    if not tmaps:
        tmaps = truth.maps_for_box(ctx.box)
    if not tmaps:
        notes.append(f"--truth: no true map of box {ctx.box}; FSC against the truth skipped")
        return res
    mask = M.soft_sphere_mask(ctx.box)
    learned: list[tuple[str, np.ndarray]] = []
    if ctx.n_classes > 1:
        learned = [(f"class {c}", vols[class_vol[c]]) for c in classes]
    elif z is not None and (private.get("kmeans_true_k") is not None or len(tmaps) > 1):
        from hetfield.analysis.context import load_model
        from hetfield.model.decode import decode_volumes

        km2 = private.get("kmeans_true_k")
        if km2 is None:  # maps without labels (e.g. tomo-sim-50S's folder): one volume at the mean of z lies between the classes
            km2 = L.kmeans(z, len(tmaps))
            notes.append(f"--truth: no particle labels; volumes decoded at the k-means({km2.k}) centres of z, one per true map, and matched to them")
        model = load_model(ctx, epoch, device)
        v2 = decode_volumes(model, z[km2.on_data].astype(np.float32), 0)
        learned = [(f"k-means({km2.k}) centre {j}", v2[j]) for j in range(km2.k)]
    else:
        learned = [(f"class {c}", vols[class_vol[c]]) for c in classes]
    if alignment is not None and (ctx.config.get("train") or {}).get("pose_estimation") == "abinit":
        from hetfield.analysis.pose_metrics import aligned_map  # an ab initio map has its own frame and hand

        learned = [(name, aligned_map(v, tmaps[0].volume, alignment)) for name, v in learned]
        res["maps_aligned"] = "rotated (and mirrored) by the poses' global alignment, then shifted, before cc and FSC"
    cc = np.array([[M.masked_correlation(v, t.volume, mask) for t in tmaps] for _, v in learned])
    pairs = M.match_best(cc)
    rows = []
    for i, j in pairs:
        f = M.fsc(learned[i][1], tmaps[j].volume, ctx.pixel_size_A, mask=mask)
        rows.append({
            "volume": learned[i][0], "true_map": tmaps[j].name, "true_class": tmaps[j].true_class, "cc": float(cc[i, j]),
            "fsc_half_nyquist": f.at_half_nyquist(), "resolution_fsc05_A": f.resolution_A(0.5),
            "resolution_fsc0143_A": f.resolution_A(0.143), "fsc": f.fsc.tolist(),
        })
    res["volumes_vs_truth"] = rows
    if rows:
        res["min_fsc_half_nyquist"] = float(min(r["fsc_half_nyquist"] for r in rows))
        res["min_cc"] = float(min(r["cc"] for r in rows))
    return res
