"""Epoch 0 of ``--pose-estimation abinit``: the low-resolution start of every particle
(:mod:`hetfield.model.abinit_lowres`), its gold-standard refinement (:mod:`hetfield.train.abinit_refine`),
and its poses and classes into the model's tables."""

from __future__ import annotations

import numpy as np
import torch

from hetfield.imaging.rotations import matrix_to_rot6d
from hetfield.model.search_data import SearchData
from hetfield.train.abinit_refine import refine_start
from hetfield.train.abinit_search import SEARCH_BATCH_PARTICLES, search_data, tilt_geometry


def lowres_settings(cfg, box: int, tilts_per_particle: float = 1.0):
    """The low-resolution start's settings for ``box`` (shift range from ``pose_search_max_shift_px``)."""
    from dataclasses import replace

    from hetfield.model.abinit_lowres import LowresSettings

    kw = {"seed": cfg.seed}
    if cfg.pose_search_max_shift_px is not None:
        kw["max_shift_px"] = float(cfg.pose_search_max_shift_px)
    s = LowresSettings.for_box(box)
    if tilts_per_particle > 1:  # a tilt series particle carries its tilts' signal: mini-batches of ~50 images
        kw["batch_particles"] = max(8, int(round(s.batch_particles / tilts_per_particle)))
    return replace(s, **kw)


@torch.no_grad()
def start_data(points, ds, cfg, device, radius_px: float) -> SearchData:
    """Every particle of ``ds`` as one :class:`SearchData` on the band ``|k| <= radius_px`` (the
    low-resolution start's input: the whole dataset, only its low band)."""
    from hetfield.data.batching import ParticleBatches

    geo = tilt_geometry(ds)
    geometry = torch.as_tensor(geo, device=device) if geo is not None else None
    m_max = max(int((points.radius_px <= radius_px + 1e-4).sum()), 1)
    parts = []
    loader = ParticleBatches(ds, points, SEARCH_BATCH_PARTICLES, shuffle=False, prefetch=False, dose_mask=cfg.dose_mask)
    for batch in loader.epoch(0):
        batch = batch.to(device)
        d = search_data(batch, points, geometry, ds.box, cfg.dose_weight, cfg.dose_mask, cfg.tilt_weight)
        parts.append((d, min(m_max, d.k.shape[0]), batch.particles))
    m = min(p[1] for p in parts)
    return SearchData(
        y=torch.cat([d.y[:, :m] for d, _, _ in parts]), k=parts[0][0].k[:m], factor=torch.cat([d.factor[:, :m] for d, _, _ in parts]),
        weight=torch.cat([d.weight[:, :m] for d, _, _ in parts]),
        image_particle=torch.cat([d.image_particle + int(p[0]) for d, _, p in parts]), n_particles=ds.n_particles, box=ds.box,
        image_weight=None if parts[0][0].image_weight is None else torch.cat([d.image_weight for d, _, _ in parts]),
        geometry=geometry,
    )


@torch.no_grad()
def lowres_start(model, ds, cfg, device, log=None, resp=None, particles=None) -> dict:
    """Epoch 0: the low-resolution ab initio of every particle, refined against half maps
    (:mod:`hetfield.train.abinit_refine`); its poses go into the pose table and, K > 1, its classes
    into the score table (as the EM start of train.class_start does: held-out ``particles`` excluded
    keep uniform scores) and ``resp``."""
    from hetfield.model.abinit_lowres import lowres_abinit

    settings = lowres_settings(cfg, ds.box, ds.n_images / max(ds.n_particles, 1))
    data = start_data(model.points, ds, cfg, device, settings.band[1])
    geometry, image_particle = data.geometry, data.image_particle
    res = lowres_abinit(data, settings, log=log, n_classes=cfg.n_classes)
    del data  # the refinement streams the images on a wider band
    cls = res["classes"]
    stats = {"lowres_seconds": round(res["seconds"], 3), "lowres_restart_errors": [round(e, 6) for e in res["restart_errors"]]}
    if cfg.n_classes > 1:
        stats["lowres_class_sizes"] = torch.bincount(cls, minlength=cfg.n_classes).tolist()
    if log is not None:
        log(f"low-resolution ab initio: {res['seconds']:.1f} s, {settings.restarts} starts"
            + (f", {cfg.n_classes} classes of sizes {stats['lowres_class_sizes']}" if "lowres_class_sizes" in stats else "") + f" (mean errors {', '.join(f'{e:.4g}' for e in res['restart_errors'])}); the best one kept")
    rotation, origin_px, refined = refine_start(model.points, ds, cfg, device, res["rotation"], res["origin_px"], cls, settings, log)
    stats.update(refined)
    rot_img = rotation[image_particle.to(rotation.device)]
    if geometry is not None:
        rot_img = geometry @ rot_img
    model.poses.rot6d.weight.copy_(matrix_to_rot6d(rot_img).to(model.poses.rot6d.weight.dtype))
    model.poses.origin.weight.copy_((origin_px / model.poses.origin_unit_px).to(model.poses.origin.weight.dtype))
    if model.scores is not None:
        from hetfield.train.class_start import SCORE_STRENGTH

        cls = cls.to(model.scores.scores.device)
        scores = torch.zeros_like(model.scores.scores)
        scores[torch.arange(ds.n_particles, device=cls.device), cls] = SCORE_STRENGTH
        if particles is not None and len(particles):
            scores[torch.as_tensor(np.asarray(particles), device=cls.device)] = 0.0
        model.scores.scores.copy_(scores)
        if resp is not None:
            resp.copy_(torch.softmax(scores, -1).to(resp.dtype))
    return stats
