"""The adapter between training and the pose search: tilt geometry, initial poses, a batch as
:class:`~hetfield.model.search_data.SearchData`, the fields on a Fourier grid, search results back
into the pose table (schedule: :mod:`hetfield.train.abinit`; epoch 0: :mod:`hetfield.train.abinit_start`)."""

from __future__ import annotations

import numpy as np
import torch

from hetfield.imaging.rotations import matrix_to_rot6d, random_rotations, rotation_y
from hetfield.imaging.transfer import transfer_of
from hetfield.model.fourier_grid import FourierGrid
from hetfield.model.search_data import SearchData, SearchResult

SEARCH_BATCH_PARTICLES = 256  # particles read per search call (the search chunks them further)


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


def current_poses(model, batch, geometry: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P, 3, 3)`` particle rotations (``G_iᵀ R_i`` of each particle's first image in the batch) and
    ``(n, 2)`` image origins in pixels, from the pose table."""
    from hetfield.imaging.rotations import rot6d_to_matrix

    rot = rot6d_to_matrix(model.poses.rot6d.weight.detach()[batch.images]).float()
    if geometry is not None:
        rot = geometry.transpose(-1, -2) @ rot
    return rot[batch.slot == 0], model.poses.origin.weight.detach()[batch.images].float() * model.poses.origin_unit_px


def local_levels(radii) -> list[tuple[float, float, float]]:
    """The local refinement's ladder ``(rotation step °, shift step px, band px)``: steps 8, 4, 2, 1°
    and 1 … 0.125 px on the last four of ``radii``."""
    return [(8.0 / 2**i, 1.0 / 2**i, float(r)) for i, r in enumerate(radii[-4:])]


def local_search(volume: FourierGrid, data: SearchData, rotation: torch.Tensor, shift_px: torch.Tensor, n_classes: int, radii: tuple[float, ...]):
    """Every class's local refinement around the same poses (:func:`~hetfield.model.pose_search.refine_poses`),
    as one ``(P, K)`` :class:`SearchResult`: rotation steps 8, 4, 2, 1° (27 offsets each, ±1 step per
    axis), shift steps 1 … 0.125 px, on the last four of ``radii``."""
    from hetfield.model.pose_search import refine_poses

    levels = local_levels(radii)
    res = [refine_poses(volume, data, rotation, shift_px, c, levels) for c in range(n_classes)]
    return SearchResult(
        rotation=torch.cat([r.rotation for r in res], 1), shift_px=torch.cat([r.shift_px for r in res], 1),
        error=torch.cat([r.error for r in res], 1), candidate_error=torch.cat([r.candidate_error for r in res], 1),
    )


def better_of(a: SearchResult, b: SearchResult, image_particle: torch.Tensor) -> tuple[SearchResult, torch.Tensor]:
    """Per particle and class, the pose of whichever of two searches ``a``, ``b`` (same particles and
    classes, errors on the same band) found the smaller error (a tie keeps ``a``'s), with ``a``'s
    candidates; and ``(P, K)`` True where ``b``'s was taken."""
    take_b = b.error < a.error
    return SearchResult(
        rotation=torch.where(take_b[..., None, None], b.rotation, a.rotation),
        shift_px=torch.where(take_b[image_particle][..., None], b.shift_px, a.shift_px),
        error=torch.minimum(a.error, b.error), candidate_error=a.candidate_error, n_values=a.n_values, seconds=a.seconds,
    ), take_b


def held_classes(model, particles: torch.Tensor, error: torch.Tensor) -> torch.Tensor:
    """``(P,)`` class of ``particles`` in the held partition: the score table's (the start's), and for a
    particle it does not seed (held out: uniform scores) its best class by ``error (P, K)``."""
    scores = model.scores.scores.detach()[particles.to(model.scores.scores.device)].to(error.device)
    seeded = scores.max(1).values > scores.min(1).values
    return torch.where(seeded, scores.argmax(1), error.argmin(1))


def write_poses(model, batch, data: SearchData, res, resp: torch.Tensor | None, k_eval: int, held: bool = False) -> None:
    """Pose table rows of ``batch``'s images from the search result, under each particle's class
    (``held``: the held partition's, :func:`held_classes`; else its most probable one)."""
    dev = res.rotation.device
    if k_eval == 1:
        cls = torch.zeros(batch.n_particles, dtype=torch.long, device=dev)
    elif held:
        # During the hold the training posterior compares the classes at one class's pose (each
        # class's field has its own frame): its argmax then wrote class-0 poses for 81 % of a tilt
        # set split 96 / 104, and the other field trained on poses found under the first.
        cls = held_classes(model, batch.particles, res.error)
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
