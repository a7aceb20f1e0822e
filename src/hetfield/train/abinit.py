"""``--pose-estimation abinit``: the schedule, and the adapter between training and the pose search.

Schedule (epochs counted from 0; ``S = pose_search_epochs``; the input poses are never read):

* epoch 0 starts with the **low-resolution ab initio** (:mod:`hetfield.model.abinit_lowres`):
  images centred against the rotational average, then stochastic projection matching on a Fourier
  voxel map up to ``box/4`` from several random starts, the best start kept. Its poses fill the
  pose table, and the fields train on them for the epoch;
* epochs ``1 … S``, **search**: every training batch is searched (global coarse-to-fine search,
  :mod:`hetfield.model.pose_search`) against the fields just before its training step, and the
  step uses the poses found. The fields are decoded onto the search grid once per epoch. The
  band widens with the round, the coarsest level from ``0.20`` to ``0.25 · box`` and the finest
  from ``0.35`` to ``0.45 · box``;
* epochs ``S + 1 …``, **refine**: the pose table is trained by gradient with the fields
  (``lr_pose``), as ``--pose-estimation refine`` does.

K > 1: the low-resolution ab initio and the first ``ceil(S / 2)`` search rounds belong to the
consensus (field 0 alone); the classes start at epoch ``max(class_init_epochs, 1 + ceil(S / 2))``
from low-resolution EM on the searched poses (:mod:`hetfield.model.class_init`, the guard against
a collapse into one class), and the remaining rounds search every class: each particle takes the
pose found under its most probable class. Fields with a per-particle latent are searched at a
consensus latent (the prior mean ``z = 0`` for an encoder, the class mean of the table for an
autodecoder).

Tilt series: the search keeps each particle's tilt geometry and searches one rotation per particle,
scored over all its tilts. The geometry is each image's rotation relative to the particle's first
image (``G_i = R_i R_first^T``) from the metadata (the relative tilt geometry, not the particle's
pose), or from the stage tilts (about y) when the input has no poses.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from hetfield.imaging.rotations import matrix_to_rot6d, random_rotations, rotation_y
from hetfield.imaging.transfer import transfer_of
from hetfield.model.fourier_grid import FourierGrid
from hetfield.model.pose_search import search_poses
from hetfield.model.search_data import SearchData, SearchSettings

SEARCH_BATCH_PARTICLES = 256  # particles read per search call (the search chunks them further)
# Bands (coarsest level, finest level) as fractions of the box, in the first and in the last round.
BAND_FIRST = (0.20, 0.35)
BAND_LAST = (0.25, 0.45)


# -- schedule -------------------------------------------------------------------------------------
def phase(cfg, epoch: int) -> str:
    """``lowres`` (epoch 0) | ``search`` | ``refine`` for ``epoch`` (0-based)."""
    if epoch == 0:
        return "lowres"
    if epoch <= cfg.pose_search_epochs:
        return "search"
    return "refine"


def poses_trainable(cfg, epoch: int) -> bool:
    return phase(cfg, epoch) == "refine"


def class_init_epoch(cfg) -> int:
    """First epoch of the classes (K > 1): after half of the search rounds on the consensus."""
    return max(cfg.class_init_epochs, 1 + math.ceil(cfg.pose_search_epochs / 2))


def search_settings(cfg, box: int, round_index: int) -> SearchSettings:
    """Level radii of search round ``round_index`` (0-based): see the module docstring."""
    n_rounds = max(cfg.pose_search_epochs, 1)
    frac = round_index / (n_rounds - 1) if n_rounds > 1 else 1.0
    lo = box * (BAND_FIRST[0] + (BAND_LAST[0] - BAND_FIRST[0]) * frac)
    hi = box * (BAND_FIRST[1] + (BAND_LAST[1] - BAND_FIRST[1]) * frac)
    radii = tuple(float(r) for r in np.linspace(lo, hi, 5))
    max_shift = cfg.pose_search_max_shift_px if cfg.pose_search_max_shift_px is not None else box / 10
    return SearchSettings(base_nside=cfg.pose_search_base_nside, radius_px=radii, max_shift_px=float(max_shift), n_keep=8)


def lowres_settings(cfg, box: int):
    from hetfield.model.abinit_lowres import LowresSettings

    kw = {"seed": cfg.seed}
    if cfg.pose_search_max_shift_px is not None:
        kw["max_shift_px"] = float(cfg.pose_search_max_shift_px)
    s = LowresSettings.for_box(box)
    from dataclasses import replace

    return replace(s, **kw)


# -- geometry and initial poses --------------------------------------------------------------------
def tilt_geometry(ds) -> np.ndarray | None:
    """``(n_images, 3, 3)`` rotation of every image relative to its particle's first image, or None
    when every particle has one image (single particles)."""
    offsets = np.asarray(ds.offsets)
    counts = np.diff(offsets)
    if counts.max() <= 1:
        return None
    first = np.repeat(offsets[:-1], counts)
    if ds.has_poses:
        rot = np.asarray(ds.arrays["rotation"], np.float64)
        return (rot @ np.transpose(rot[first], (0, 2, 1))).astype(np.float32)
    tilt = np.asarray(ds.arrays["stage_tilt_deg"], np.float64)
    return (rotation_y(tilt) @ np.transpose(rotation_y(tilt[first]), (0, 2, 1))).astype(np.float32)


def initial_poses(ds, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random particle rotations (uniform, seeded) within the tilt geometry, zero origins."""
    counts = np.diff(np.asarray(ds.offsets))
    a = random_rotations(ds.n_particles, np.random.default_rng([seed, 15]))
    rot = np.repeat(a, counts, axis=0)
    geo = tilt_geometry(ds)
    if geo is not None:
        rot = geo @ rot
    return torch.as_tensor(rot, dtype=torch.float32), torch.zeros(ds.n_images, 2)


# -- adapter ---------------------------------------------------------------------------------------
def search_data(batch, points, geometry: torch.Tensor | None, box: int, dose_weight: bool, dose_mask: bool, tilt_weight: bool) -> SearchData:
    """A training batch as :class:`SearchData` (Hartley pairs → Fourier coefficients, masks → weights)."""
    m = batch.extent
    t = transfer_of(batch, points.k[:m], dose_weight=dose_weight, dose_mask=dose_mask)
    factor, keep = t.factor, t.keep
    y = torch.stack([(batch.y_k + batch.y_mk) / 2, (batch.y_mk - batch.y_k) / 2], -1)
    w = keep.float() * (1 + points.partner_weight[:m])[None]
    u = torch.cos(torch.deg2rad(batch.stage_tilt_deg)) if tilt_weight else None
    return SearchData(
        y=y, k=points.k[:m], factor=factor, weight=w, image_particle=batch.image_particle, n_particles=batch.n_particles,
        box=box, image_weight=u, geometry=None if geometry is None else geometry[batch.images],
    )


def consensus_latent(model, resp: torch.Tensor | None, n_classes: int) -> torch.Tensor | None:
    """``(K, zdim)`` latent at which each class's field is searched, or None without a latent."""
    if not model.zdim:
        return None
    dev = next(model.fields.parameters()).device
    if model.latents is None:  # encoder: the prior's mean
        return torch.zeros(n_classes, model.zdim, device=dev)
    z = model.latents.z.weight.detach()
    if resp is None or n_classes == 1:
        return z.mean(0, keepdim=True).expand(n_classes, -1)
    cls = resp.argmax(1)
    return torch.stack([z[cls == c].mean(0) if (cls == c).any() else z.mean(0) for c in range(n_classes)])


def field_grid(model, radius_px: float, n_classes: int, z: torch.Tensor | None, oversample: float = 2.0) -> FourierGrid:
    """The fields' Fourier coefficients on an oversampled cube (one decoding per class)."""
    box = model.shape.box

    def fn(q):
        if z is None:
            return model.field_values(q[None], None, n_classes)[0]  # (K, N, 2)
        out = model.field_values(q[None].expand(n_classes, -1, -1), z, n_classes)  # (K rows, K classes, N, 2)
        return out[torch.arange(n_classes), torch.arange(n_classes)]

    return FourierGrid.from_function(fn, box, radius_px, oversample, device=next(model.fields.parameters()).device)


@torch.no_grad()
def lowres_start(model, ds, cfg, device, log=None) -> dict:
    """Epoch 0: the low-resolution ab initio of every particle; its poses go into the pose table."""
    from hetfield.data.batching import ParticleBatches
    from hetfield.model.abinit_lowres import lowres_abinit

    settings = lowres_settings(cfg, ds.box)
    geo = tilt_geometry(ds)
    geometry = torch.as_tensor(geo, device=device) if geo is not None else None
    m_max = max(int((model.points.radius_px <= settings.band[1] + 1e-4).sum()), 1)
    parts = []
    loader = ParticleBatches(ds, model.points, SEARCH_BATCH_PARTICLES, shuffle=False, prefetch=False, dose_mask=cfg.dose_mask)
    for batch in loader.epoch(0):  # the whole dataset, only its low band
        batch = batch.to(device)
        d = search_data(batch, model.points, geometry, ds.box, cfg.dose_weight, cfg.dose_mask, cfg.tilt_weight)
        m = min(m_max, d.k.shape[0])
        parts.append((d, m, batch.particles))
    m = min(p[1] for p in parts)
    data = SearchData(
        y=torch.cat([d.y[:, :m] for d, _, _ in parts]), k=parts[0][0].k[:m], factor=torch.cat([d.factor[:, :m] for d, _, _ in parts]),
        weight=torch.cat([d.weight[:, :m] for d, _, _ in parts]),
        image_particle=torch.cat([d.image_particle + int(p[0]) for d, _, p in parts]), n_particles=ds.n_particles, box=ds.box,
        image_weight=None if parts[0][0].image_weight is None else torch.cat([d.image_weight for d, _, _ in parts]),
        geometry=None if geometry is None else geometry,
    )
    res = lowres_abinit(data, settings, log=log)
    rot_img = res["rotation"][data.image_particle]
    if geometry is not None:
        rot_img = geometry @ rot_img
    model.poses.rot6d.weight.copy_(matrix_to_rot6d(rot_img).to(model.poses.rot6d.weight.dtype))
    model.poses.origin.weight.copy_((res["origin_px"] / model.poses.origin_unit_px).to(model.poses.origin.weight.dtype))
    stats = {"lowres_seconds": round(res["seconds"], 3), "lowres_restart_errors": [round(e, 6) for e in res["restart_errors"]]}
    if log is not None:
        log(f"low-resolution ab initio: {res['seconds']:.1f} s, {settings.restarts} starts (mean errors {', '.join(f'{e:.4g}' for e in res['restart_errors'])}); the best one kept")
    return stats


class BatchSearch:
    """The search of one epoch, batch by batch: each training batch is searched just before its step.

    The fields are decoded onto the search grid (:class:`FourierGrid`) at the epoch's first batch
    and, with ``refresh``, again every ``refresh`` batches; one decoding per epoch is enough once
    the low-resolution start has put the fields near the answer (decoding costs more than
    searching a batch). Held-out particles, which no training batch visits, are searched at the
    end of the epoch (:meth:`search_all`).
    """

    def __init__(self, model, ds, cfg, device, epoch: int, resp: torch.Tensor | None, refresh: int | None = None):
        self.model, self.ds, self.cfg, self.device, self.resp = model, ds, cfg, device, resp
        self.round_index = epoch - 1
        self.settings = search_settings(cfg, ds.box, self.round_index)
        consensus = cfg.n_classes > 1 and epoch < class_init_epoch(cfg)
        self.k_eval = 1 if consensus else cfg.n_classes
        geo = tilt_geometry(ds)
        self.geometry = torch.as_tensor(geo, device=device) if geo is not None else None
        self.refresh = max(int(refresh), 1) if refresh else None
        self.volume = None
        self.cache: dict = {}
        self.steps = 0
        self.seconds = {"decode": 0.0, "search": 0.0}
        self.levels: dict[str, float] = {}
        self.n_images = 0

    @torch.no_grad()
    def __call__(self, batch) -> None:
        """Search ``batch``'s particles and write their poses into the pose table."""
        model = self.model
        was_training = model.training
        model.eval()
        t0 = time.perf_counter()
        if self.volume is None or (self.refresh and self.steps % self.refresh == 0):
            z = consensus_latent(model, self.resp, self.k_eval)
            self.volume = field_grid(model, self.settings.radius_px[-1], self.k_eval, z)
            self.cache = {}
        t1 = time.perf_counter()
        data = search_data(batch, model.points, self.geometry, self.ds.box, self.cfg.dose_weight, self.cfg.dose_mask, self.cfg.tilt_weight)
        res = search_poses(self.volume, data, self.k_eval, self.settings, cache=self.cache)
        write_poses(model, batch, data, res, self.resp, self.k_eval)
        t2 = time.perf_counter()
        self.seconds["decode"] += t1 - t0
        self.seconds["search"] += t2 - t1
        for name, sec in res.seconds.items():
            self.levels[name] = self.levels.get(name, 0.0) + sec
        self.n_images += batch.n_images
        self.steps += 1
        model.train(was_training)

    def search_all(self, particles) -> None:
        """Search ``particles`` (e.g. the held-out ones, which no training batch visits)."""
        from hetfield.data.batching import ParticleBatches

        if len(particles) == 0:
            return
        self.volume = None
        loader = ParticleBatches(self.ds, self.model.points, SEARCH_BATCH_PARTICLES, shuffle=False, particles=particles, prefetch=False, dose_mask=self.cfg.dose_mask)
        for batch in loader.epoch(0):
            self.steps = 1  # one decoding for all of them
            self(batch.to(self.device))

    def stats(self) -> dict:
        per = self.seconds["search"] / max(self.n_images * self.k_eval, 1)
        return {
            "search_seconds": round(self.seconds["search"] + self.seconds["decode"], 3),
            "search_decode_seconds": round(self.seconds["decode"], 3),
            "search_s_per_image_class": per,
            "search_radius_px": [round(r, 2) for r in self.settings.radius_px],
            "search_classes": self.k_eval,
        }

    def describe(self) -> str:
        st = self.stats()
        s = self.settings
        return (
            f"pose search (round {self.round_index + 1}/{self.cfg.pose_search_epochs}, band {s.radius_px[0]:.1f}–{s.radius_px[-1]:.1f} px, "
            f"{self.k_eval} class{'es' if self.k_eval > 1 else ''}, final spacing {s.final_spacing_deg():.1f}°): "
            f"{st['search_seconds']:.1f} s ({st['search_decode_seconds']:.1f} s decoding), "
            f"{1e3 * st['search_s_per_image_class']:.2f} ms per image per class"
        )


def write_poses(model, batch, data: SearchData, res, resp: torch.Tensor | None, k_eval: int) -> None:
    """Pose table rows of ``batch``'s images from the search result, under each particle's class."""
    dev = res.rotation.device
    if k_eval == 1:
        cls = torch.zeros(batch.n_particles, dtype=torch.long, device=dev)
    else:
        cls = resp[batch.particles].argmax(1) if resp is not None else res.error.argmin(1)
    a = res.rotation[torch.arange(batch.n_particles, device=dev), cls]  # (P, 3, 3)
    a_img = a[batch.image_particle]
    rot_img = a_img if data.geometry is None else data.geometry @ a_img
    shift = res.shift_px[torch.arange(batch.n_images, device=dev), cls[batch.image_particle]]
    rot6d, origin = model.poses.rot6d.weight, model.poses.origin.weight
    with torch.no_grad():
        rot6d[batch.images] = matrix_to_rot6d(rot_img).to(rot6d.dtype)
        origin[batch.images] = (shift / model.poses.origin_unit_px).to(origin.dtype)
