"""``hetfield analyze``: one epoch of a run, every class in one call.

For the chosen classes (all by default): class occupancy and posterior confidence, one volume per
class (at the particle nearest the class's mean latent, or the class's field without a latent), and
per class (the whole set when K = 1) PCA, UMAP, k-means with volumes at on-data centres, traversals
along PC1/PC2, and STAR exports (the user's own format) of every class and every k-means cluster.
With ``--truth`` (simulator truth): ARI/NMI of classes and clusters, |Spearman| of PC1 against the
true motion coordinate, and FSC of the class volumes against their matched true maps.

Small inputs never fail: ``N < k`` caps k, ``N < 15`` uses PCA instead of UMAP, ``zdim = 1`` plots a
histogram instead of a scatter, ``zdim = 0`` skips the latent analysis and still decodes the classes.

Output layout (``OUT`` = ``RUN/analysis.N`` by default)::

    summary.json  report.html  plots/*.png
    volumes/class_<c>.mrc
    volumes/<group>/kmeans<k>/vol_<j>.mrc  volumes/<group>/pc<i>/vol_<j>.mrc
    latent/<group>_*.txt                   (k-means labels, centres, PCA projections, traversal z)
    particles/class_<c>.star  particles/<group>_kmeans<k>_<j>.star

``<group>`` is ``all`` for K = 1, else ``class_<c>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hetfield.analysis.analyze_truth import truth_metrics
from hetfield.analysis.pose_export import learned_poses
from hetfield.errors import ConfigError


# -- volume requests, decoded in one batched pass -----------------------------------------------------
@dataclass
class VolumeQueue:
    z: list = field(default_factory=list)
    cls: list = field(default_factory=list)
    paths: list = field(default_factory=list)

    def add(self, z, c: int, rel: str) -> int:
        self.z.append(None if z is None else np.asarray(z, np.float32))
        self.cls.append(int(c))
        self.paths.append(rel)
        return len(self.paths) - 1

    def decode(self, model, zdim: int, progress=None) -> np.ndarray:
        from hetfield.model.decode import decode_volumes

        if not self.paths:
            return np.zeros((0,))
        z = np.stack(self.z) if zdim else None
        return decode_volumes(model, z, np.asarray(self.cls), progress=progress)


# -- the analysis ---------------------------------------------------------------------------------------
def _particle_rows(ds):
    """``(particle of each image, source row of each image)`` of the dataset, or None without one."""
    if ds is None:
        return None
    return np.asarray(ds.arrays["particle"], np.int64), ds.table["source_row"].to_numpy(np.int64)


def _export(ds, rows_of, particles: np.ndarray, out: Path, rel_stem: str, poses=None) -> list[str]:
    """Write ``particles`` (all their images) in the user's own format, with learned ``poses`` where the
    run has them (analysis.pose_export); returns the files, relative to ``out``."""
    from hetfield.analysis.pose_export import write_poses_into
    from hetfield.io.readers import export_particles

    ext = ".cs" if ds.source_info.reader == "cryosparc" else ".star"
    image_particle, source_row = rows_of
    rows = np.unique(source_row[np.isin(image_particle, np.asarray(particles, np.int64))])
    written = export_particles(ds.source_info, rows, out / f"{rel_stem}{ext}")
    if poses is not None and len(written) == 1:
        write_poses_into(ds, poses, written[0], rows)
    return [str(Path(p).resolve().relative_to(out.resolve())) for p in written]


def analyze_epoch(
    ctx,
    out: Path,
    epoch: int,
    classes: list[int],
    k: int | str = "auto",
    truth=None,
    use_umap: bool = True,
    device=None,
    n_traversal: int = 10,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Everything but the report: returns the summary dict plus private plotting data (``_``-keys)."""
    from hetfield.analysis import latent as L
    from hetfield.analysis.context import load_model
    from hetfield.analysis.volumes import write_volume

    t0 = time.perf_counter()
    lat = ctx.latent(epoch)
    kk = ctx.n_classes
    zdim = ctx.zdim
    cls = np.asarray(lat["class_idx"], np.int64)
    n = int(cls.shape[0])
    probs = np.asarray(lat.get("class_probs", np.ones((n, 1))), np.float64)
    z = np.asarray(lat["z_mu"], np.float64) if zdim and "z_mu" in lat else None
    if zdim and z is None:
        raise RunError(f"{ctx.run.latent_path(epoch)}: no z_mu although the run has zdim {zdim}; the latent file is damaged: "
                       "remove it to use the other saved epochs, or train the run again")
    notes: list[str] = []
    ds = ctx.dataset
    rows_of = _particle_rows(ds)
    if ds is None:
        notes.append("no dataset: STAR exports skipped")
    counts = np.bincount(cls, minlength=kk)
    summary: dict[str, Any] = {
        "n_particles": n,
        "zdim": zdim,
        "n_classes": kk,
        "classes_analysed": classes,
        "class_counts": counts.tolist(),
        "class_occupancy": (counts / max(n, 1)).tolist(),
        "mean_max_class_prob": float(probs.max(1).mean()) if kk > 1 else None,
        "k_requested": k if k == "auto" else int(k),
        "groups": {},
        "files": {"volumes": [], "star": [], "plots": [], "latent": []},
    }
    private: dict[str, Any] = {"groups": {}, "class_probs": probs, "class_idx": cls}
    queue = VolumeQueue()

    # Global embedding (all particles) for K > 1 and for K = 1 alike.
    emb = emb_name = None
    if z is not None and n >= 1:
        if progress:
            progress("embedding latents", 0, 1)
        if zdim >= 2:
            emb, emb_name = L.embed_2d(z, use_umap=use_umap)
        if progress:
            progress("embedding latents", 1, 1)
        np.savetxt(out / "latent" / "z.txt", z, fmt="%.6g")
        summary["files"]["latent"].append("latent/z.txt")
        if emb is not None:
            np.savetxt(out / "latent" / f"{emb_name.lower()}.txt", emb, fmt="%.6g")
            summary["files"]["latent"].append(f"latent/{emb_name.lower()}.txt")
    private["embedding"] = emb
    summary["embedding"] = emb_name
    if z is not None:
        glob = L.pca(z)
        summary["pca_explained_variance_ratio"] = glob.explained_variance_ratio.tolist()
        private["pca"] = glob

    # Class volumes.
    class_vol: dict[int, int] = {}
    class_rep: dict[int, int | None] = {}
    for c in classes:
        members = np.flatnonzero(cls == c)
        if z is not None:
            pool = members if members.size else np.arange(n)
            rep = int(pool[L.nearest_particles(z[pool], z[pool].mean(0, keepdims=True))[0]])
            class_rep[c] = rep
            class_vol[c] = queue.add(z[rep], c, f"volumes/class_{c}.mrc")
            if not members.size:
                notes.append(f"class {c} has no particles; its volume is decoded at the particle nearest the mean latent")
        else:
            class_rep[c] = None
            class_vol[c] = queue.add(None, c, f"volumes/class_{c}.mrc")
    summary["class_volumes"] = [{"class": c, "particle": class_rep[c], "path": queue.paths[class_vol[c]], "n_particles": int(counts[c])} for c in classes]

    # Per-group latent analysis.
    groups = [("all", 0, np.arange(n))] if kk == 1 else [(f"class_{c}", c, np.flatnonzero(cls == c)) for c in classes]
    for gname, c, members in groups:
        g: dict[str, Any] = {"class": c, "n_particles": int(members.size)}
        gp: dict[str, Any] = {"members": members}
        summary["groups"][gname] = g
        private["groups"][gname] = gp
        if z is None or members.size == 0:
            if z is not None:
                g["skipped"] = "no particles in this class"
            continue
        zg = z[members]
        pca = L.pca(zg)
        g["pca_explained_variance_ratio"] = pca.explained_variance_ratio.tolist()
        gp["pca"] = pca
        np.savetxt(out / "latent" / f"{gname}_pca.txt", pca.projection, fmt="%.6g")
        summary["files"]["latent"].append(f"latent/{gname}_pca.txt")
        if kk > 1 and zdim >= 2:
            if members.size >= L.UMAP_MIN_POINTS and use_umap:
                gemb, gname_emb = L.embed_2d(zg, use_umap=True)
            else:
                gemb, gname_emb = L.embed_2d(zg, use_umap=False)
            gp["embedding"], g["embedding"] = gemb, gname_emb
        elif emb is not None:
            gp["embedding"], g["embedding"] = emb, emb_name
        km = L.kmeans(zg, L.resolve_k(k, int(members.size)))
        g["kmeans"] = {"k": km.k, "k_requested": km.k_requested, "sizes": np.bincount(km.labels, minlength=km.k).tolist(),
                       "centre_particles": members[km.on_data].tolist()}
        gp["kmeans"] = km
        kdir = f"volumes/{gname}/kmeans{km.k}"
        gp["kmeans_vols"] = [queue.add(z[members[i]], c, f"{kdir}/vol_{j:03d}.mrc") for j, i in enumerate(km.on_data)]
        np.savetxt(out / "latent" / f"{gname}_kmeans{km.k}_labels.txt", km.labels, fmt="%d")
        np.savetxt(out / "latent" / f"{gname}_kmeans{km.k}_centres.txt", z[members[km.on_data]], fmt="%.6g")
        np.savetxt(out / "latent" / f"{gname}_kmeans{km.k}_centre_particles.txt", members[km.on_data], fmt="%d")
        summary["files"]["latent"] += [f"latent/{gname}_kmeans{km.k}_{s}.txt" for s in ("labels", "centres", "centre_particles")]
        g["traversals"] = []
        gp["traversals"] = []
        for pc in range(1, min(2, pca.n_components) + 1):
            if members.size < 2:
                break
            tr = L.pc_traversal(zg, pc=pc, n=n_traversal, result=pca)
            tdir = f"volumes/{gname}/pc{pc}"
            ids = [queue.add(tr.z[j], c, f"{tdir}/vol_{j:03d}.mrc") for j in range(len(tr.z))]
            np.savetxt(out / "latent" / f"{gname}_pc{pc}_z.txt", tr.z, fmt="%.6g")
            summary["files"]["latent"].append(f"latent/{gname}_pc{pc}_z.txt")
            g["traversals"].append({"pc": pc, "percentiles": tr.percentiles.tolist(), "coordinates": tr.coordinates.tolist(),
                                    "nearest_particles": members[tr.nearest].tolist(), "dir": tdir})
            gp["traversals"].append((tr, ids))

    # Decode and write every volume.
    model = load_model(ctx, epoch, device)
    vols = queue.decode(model, zdim, progress=(lambda d, t: progress("decoding volumes", d, t)) if progress else None)
    del model
    for i, rel in enumerate(queue.paths):
        write_volume(out / rel, vols[i], ctx.pixel_size_A)
    summary["files"]["volumes"] = list(queue.paths)
    private["volumes"] = vols
    private["queue"] = queue
    private["class_vol"] = class_vol

    # STAR exports.
    if ds is not None and rows_of is not None:
        if progress:
            progress("writing STAR files", 0, 1)
        poses = learned_poses(ds, lat)  # refine/abinit: exported with the particles; all of them in particles/all
        if poses is not None:
            summary["files"]["star"] += _export(ds, rows_of, np.arange(ds.n_particles), out, "particles/all", poses)
        if kk > 1:
            for c in classes:
                members = np.flatnonzero(cls == c)
                if members.size:
                    summary["files"]["star"] += _export(ds, rows_of, members, out, f"particles/class_{c}", poses)
        for gname, gp in private["groups"].items():
            km = gp.get("kmeans")
            if km is None:
                continue
            stars = []
            for j in range(km.k):
                sel = gp["members"][km.labels == j]
                stars.append(_export(ds, rows_of, sel, out, f"particles/{gname}_kmeans{km.k}_{j:03d}", poses))
                summary["files"]["star"] += stars[-1]
            gp["kmeans_star"] = stars
        if progress:
            progress("writing STAR files", 1, 1)

    # Truth.
    if truth is not None:
        summary["truth"] = truth_metrics(ctx, truth, epoch, cls, z, classes, vols, class_vol, private, notes, k, device)
    summary["notes"] = notes
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return {**summary, "_private": private}


# -- entry point ------------------------------------------------------------------------------------------
def run_analysis(
    run_path,
    epoch: str | int | None = "last",
    class_idx: str | int | None = "all",
    truth_dir=None,
    k: int | str = "auto",
    out=None,
    convergence=None,
    use_umap: bool = True,
    device: str = "auto",
    data=None,
    n_traversal: int = 10,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """``hetfield analyze``: build ``out`` atomically; return it and ``summary.json``'s dict."""
    from hetfield.analysis.analyze_report import write_report
    from hetfield.analysis.context import inputs as _inputs
    from hetfield.analysis.context import open_run, resolve_device
    from hetfield.analysis.provenance import provenance
    from hetfield.analysis.latent import parse_k
    from hetfield.analysis.selection import resolve_classes, resolve_epoch
    from hetfield.analysis.truth import load_truth
    from hetfield.errors import check_output_location
    from hetfield.io.atomic import atomic_directory, write_json_atomic
    from hetfield.io.plain import to_plain

    k = parse_k(k)
    if n_traversal < 1:
        raise ConfigError(f"--n-traversal {n_traversal}: give a positive number of volumes")
    ctx = open_run(run_path, data=data)
    e, how, notes = resolve_epoch(ctx, epoch, convergence)
    classes = resolve_classes(class_idx, ctx.n_classes)
    out_given = out is not None
    if out is None:
        suffix = "" if len(classes) == ctx.n_classes else f".class_{classes[0]}"
        out = ctx.run.path / f"analysis.{e}{suffix}"
    out = Path(out)
    check_output_location(out, "--out" if out_given else "output directory", hint="" if out_given else " (or pass --out DIR)",
                          marker="summary.json", protect=_inputs(ctx))
    truth = load_truth(truth_dir) if truth_dir is not None else None
    ctx.latent(e)  # a damaged latent file stops here, before any work
    dev = resolve_device(device)
    with atomic_directory(out, replace=True) as tmp:
        (tmp / "latent").mkdir()
        res = analyze_epoch(ctx, tmp, e, classes, k=k, truth=truth, use_umap=use_umap, device=dev, n_traversal=n_traversal, progress=progress)
        private = res.pop("_private")
        summary = {
            **provenance("analysis", ctx=ctx),
            "epoch": e,
            "epoch_choice": how,
            "pixel_size_A": ctx.pixel_size_A,
            "box": ctx.box,
            **res,
        }
        summary["notes"] = list(ctx.notes) + notes + summary.get("notes", [])
        summary["files"]["report"] = "report.html"
        write_json_atomic(tmp / "summary.json", to_plain(summary))  # first, so that the report can link it
        summary["files"]["plots"] = write_report(ctx, summary, private, tmp)
        write_json_atomic(tmp / "summary.json", to_plain(summary))
    return out, to_plain(summary)
