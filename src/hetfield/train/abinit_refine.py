"""Gold-standard refinement of the low-resolution start's poses (epoch 0, before the fields train).

The start's final search matches every particle against maps that hold its own images, so its
poses are self-consistent rather than accurate: a map fits the noise of the images it was built
from at the poses it was built at. ``pose_search_refine_rounds`` rounds then run without the fields:

* the particles fall into two fixed random halves (seeded by ``seed``);
* **pass 1** reads every particle once and adds its images, at its current pose, to the map of its
  class (the start's) and half: direct inversion up to ``REFINE_BAND · box`` (at most
  ``REFINE_MAX_RADIUS_PX``), Wiener-filtered per shell by the two halves' FSC
  (:class:`~hetfield.model.half_maps.HalfMaps`);
* **pass 2** reads every particle again and searches it against the *other* half's map of its
  class, locally around its current pose (rotation steps 8, 4, 2, 1°, shift steps 1 … 0.125 px);
  the last ``GLOBAL_ROUNDS`` rounds also search globally (HEALPix nside 2, 5 levels from the
  start's coarsest band to the refinement band, shifts within the start's centring range) and keep
  whichever error is smaller. A class whose halves disagree at the start's finest band (FSC below
  ``FSC_MIN``) keeps its poses that round.

Global searches in every round flipped particles of a nearly symmetric shape between equivalent
poses by noise while the maps were still blurred (poses 12° from the truth came out at 9.1° / 6.2°
per class with a global search every round, 6.5° / 4.9° searched locally first; 1 000 particles);
searched globally once the local rounds have sharpened the maps, they keep that and still repair
gross errors (docs/internals.md, ab initio, for the figures).

Each pass streams the loader (one batch of images in memory, as the training does); the maps are
``K × 2`` accumulators.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from hetfield.model.abinit_lowres import add_images, image_rotations
from hetfield.model.half_maps import HalfMaps
from hetfield.model.pose_search import refine_poses, search_poses
from hetfield.model.search_data import SearchResult, SearchSettings
from hetfield.train.abinit_search import SEARCH_BATCH_PARTICLES, better_of, local_levels, search_data, tilt_geometry

REFINE_BAND = 0.45  # of the box: the search rounds' finest band
# The maps' memory is 2K accumulators of (2·ceil(2r) + 3)³ voxels × 3 floats: 27 MB each at 32 px.
REFINE_MAX_RADIUS_PX = 32.0
# A class is searched in a round only where its halves agree at the start's finest band: below the
# FSC 0.143 its maps hold no more than noise there, and a search against them would only jitter.
FSC_MIN = 0.143
HALVES_SEED = 1516
GLOBAL_ROUNDS = 1  # the last rounds also search globally, the others only locally (module docstring)


def refine_bands(box: int, lowres_band: tuple[float, float]) -> tuple[list[tuple[float, float, float]], tuple[float, ...]]:
    """The local search's levels ``(rotation step °, shift step px, band px)`` and the global
    search's level radii, both ending at the refinement band."""
    b = min(REFINE_BAND * box, REFINE_MAX_RADIUS_PX)
    local = local_levels(np.linspace(0.5 * b, b, 4))
    return local, tuple(float(r) for r in np.linspace(min(lowres_band[0], b), b, 5))


def refine_start(points, ds, cfg, device, rotation: torch.Tensor, origin_px: torch.Tensor, classes: torch.Tensor,
                 settings, log=None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """:func:`_refine_start` in fp32 whatever the caller's autocast (the pose table takes fp32 rows,
    and a bf16 search would score poses with bf16 errors)."""
    from hetfield.imaging.precision import full_precision

    with full_precision(torch.empty(0, device=device)):
        return _refine_start(points, ds, cfg, device, rotation, origin_px, classes, settings, log)


@torch.no_grad()
def _refine_start(points, ds, cfg, device, rotation: torch.Tensor, origin_px: torch.Tensor, classes: torch.Tensor,
                  settings, log=None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """``rotation (P, 3, 3)`` particle rotations, ``origin_px (n, 2)`` image origins, refined for
    ``cfg.pose_search_refine_rounds`` rounds under ``classes (P,)`` (module docstring); ``settings``
    are the start's :class:`~hetfield.model.abinit_lowres.LowresSettings` (its bands and shift range).
    Returns the new poses and the figures for metrics.jsonl."""
    from hetfield.data.batching import ParticleBatches

    rounds = int(cfg.pose_search_refine_rounds)
    rotation, origin_px, classes = rotation.to(device).float(), origin_px.to(device).float(), classes.to(device).long()
    if rounds == 0:
        return rotation, origin_px, {"refine_rounds": 0}
    k = max(int(cfg.n_classes), 1)
    half = torch.as_tensor(np.random.default_rng([cfg.seed, HALVES_SEED]).integers(0, 2, ds.n_particles), device=device)
    group_of = classes * 2 + half  # (P,) class and half
    local_levels, global_radii = refine_bands(ds.box, settings.band)
    radius = local_levels[-1][2]
    global_settings = SearchSettings(base_nside=2, radius_px=global_radii, n_keep=8, max_shift_px=float(settings.max_shift_px), shift_points=7)
    check_shell = int(round(min(settings.band[1], radius)))
    geo = tilt_geometry(ds)
    geometry = torch.as_tensor(geo, device=device) if geo is not None else None
    loader = ParticleBatches(ds, points, SEARCH_BATCH_PARTICLES, shuffle=False, prefetch=False, dose_mask=cfg.dose_mask)

    def batches():
        for batch in loader.epoch(0):
            batch = batch.to(device)
            yield batch, search_data(batch, points, geometry, ds.box, cfg.dose_weight, cfg.dose_mask, cfg.tilt_weight).within(radius)

    t0 = time.perf_counter()
    fsc_at, searched, took_global, moved_deg = [], [], [], []
    for j in range(rounds):
        maps = HalfMaps(k, ds.box, radius, settings.oversample, device)
        for batch, d in batches():  # pass 1: the half maps at the current poses
            rot_img = image_rotations(d, rotation[batch.particles])
            group = group_of[batch.particles][d.image_particle]
            for g in range(2 * k):
                sel = (group == g).nonzero()[:, 0]
                add_images(maps.accumulator(g // 2, g % 2), d, sel, rot_img[sel], origin_px[batch.images[sel]])
        grids, fsc = maps.wiener()
        fsc_at.append([[round(float(f[int(r)]), 3) for r in (check_shell, 0.5 * radius, radius)] for f in fsc])
        classes_now = [c for c in range(k) if float(fsc[c, check_shell]) >= FSC_MIN]
        searched.append(classes_now)
        new_rotation, new_origin = rotation.clone(), origin_px.clone()
        caches = [{}, {}]  # the level-0 slices of each half's maps, for this round
        n_global = 0
        for batch, d in batches():  # pass 2: each half against the other half's maps
            offsets = d.particle_offsets()
            group = group_of[batch.particles]
            for c in classes_now:
                for h in (0, 1):
                    local_p = (group == 2 * c + h).nonzero()[:, 0]
                    if len(local_p) == 0:
                        continue
                    sub, ti = d.subset(local_p.cpu().numpy(), offsets)
                    parts, images = batch.particles[local_p], batch.images[ti]
                    volume = grids[1 - h]
                    best = refine_poses(volume, sub, rotation[parts], origin_px[images], c, local_levels)
                    if j >= rounds - GLOBAL_ROUNDS:
                        g = search_poses(volume, sub, k, global_settings, classes=[c], cache=caches[1 - h])
                        glob = SearchResult(rotation=g.rotation[:, c : c + 1], shift_px=g.shift_px[:, c : c + 1], error=g.error[:, c : c + 1],
                                            candidate_error=g.candidate_error[:, c : c + 1])
                        best, took = better_of(best, glob, sub.image_particle)
                        n_global += int(took.sum())
                    new_rotation[parts], new_origin[images] = best.rotation[:, 0], best.shift_px[:, 0]
        moved_deg.append(_median_angle_deg(rotation, new_rotation))
        took_global.append(n_global)
        rotation, origin_px = new_rotation, new_origin
    seconds = time.perf_counter() - t0
    stats = {
        "refine_rounds": rounds, "refine_seconds": round(seconds, 3), "refine_radius_px": round(radius, 2),
        "refine_classes_searched": searched, "refine_fsc": fsc_at, "refine_fsc_shells_px": [check_shell, int(0.5 * radius), int(radius)],
        "refine_global_taken": took_global, "refine_median_change_deg": moved_deg,
    }
    if log is not None:
        log(f"start refinement against half maps: {rounds} rounds to {radius:.1f} px in {seconds:.1f} s, classes searched per round "
            + f"{searched}; median change per round " + ", ".join(f"{a:.1f}°" for a in moved_deg)
            + f"; the last round's global search taken for {took_global[-1]} particles; half-map FSC at "
            + " / ".join(f"{r} px" for r in stats["refine_fsc_shells_px"]) + " in the last round: "
            + ", ".join(f"class {c} " + " / ".join(f"{x:.2f}" for x in f) for c, f in enumerate(fsc_at[-1])))
    return rotation, origin_px, stats


def _median_angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    """Median angle between rotations ``a`` and ``b (P, 3, 3)``."""
    tr = (a.transpose(-1, -2) @ b).diagonal(dim1=-2, dim2=-1).sum(-1)
    return round(float(torch.rad2deg(torch.arccos(((tr - 1) / 2).clamp(-1, 1))).median()), 3)
