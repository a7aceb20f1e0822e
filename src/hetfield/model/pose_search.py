"""Coarse-to-fine pose search: the best rotation of every particle and shift of every image, per class.

What is searched. A particle ``p`` has images ``i`` whose rotations are ``R_i = G_i @ A_p``: ``G_i``
is fixed tilt geometry (identity for single particles), ``A_p`` the particle's rotation, searched.
Every image also has its own origin ``t_i`` (pixels; the particle sits at ``-t_i``, as ``origin_px``).
The score of class ``c`` is the weighted squared error of the particle's images under the slices of
its volume, summed over the particle's images (all its tilts)::

    E_pc(A, t) = Σ_i u_i Σ_k w_ik |f_ik F_c(k @ G_i A) - Y_i(k) e^{-2πi k·t_i}|²

``Y_i`` the image's Fourier coefficients on the half lattice (one point per ``(k, -k)`` pair), ``f``
the CTF × exposure factor the forward model applies, ``w`` the point weights (0 masked, 2 for a pair
since the Hartley error of a pair is twice the Fourier one, 1 for the origin), ``u_i`` the image
weight (cos tilt). Each image takes its own best shift for every candidate rotation.

Expanding the square, ``E = Σ w|Y|² - 2 Re Σ (w f Ȳ e^{2πik·t}) F + Σ w f² |F|²``: the cross term of
every image, shift and candidate rotation is one real matrix product ``[Re G, -Im G] @ [Re F; Im F]``
and the slice energy another, so a batch of images is compared with every candidate slice at once.

How. Level 0 scores every rotation of :class:`~hetfield.imaging.so3_grid.SO3Grid` (nside
``base_nside``) and a square shift grid on the low band ``|k| <= radius[0]``. Slices at level 0 do not
depend on the image (only on its geometry, and images sharing ``G`` share them), so they are computed
once per class and geometry and compared with every image. The ``n_keep`` best candidates of each
particle go on; each later level replaces every candidate by its 8 children in the next grid (or a
local cube of offsets, ``refine="local"``), halves the shift step around each image's best shift,
widens the band, and keeps the best ``n_keep`` again. The last level gives the pose.

Volumes are read through a callable ``volume(q (N, 3), c) -> (N, 2)`` (Fourier coefficient of class
``c`` at ``q`` cycles/px, real and imaginary parts), so the search knows nothing of the fields.
:class:`FourierGrid` makes one from any batched function of ``q`` (a neural field): it evaluates the
function once on an oversampled cube of frequencies and interpolates slices from it, so a search
costs one decoding of the volume per class however many candidates it scores.

Shapes: ``n`` images, ``P`` particles, ``M`` lattice points, ``K`` classes, ``C`` kept candidates.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from hetfield.imaging.so3_grid import SO3Grid, local_rotation_offsets, local_shift_offsets, shift_grid
from hetfield.model.search_data import SearchData, SearchResult, SearchSettings

VolumeFn = Callable[[torch.Tensor, int], torch.Tensor]


# --------------------------------------------------------------------------------------------------
# The search
# --------------------------------------------------------------------------------------------------

def _weights(data):
    """``(u, w, w·f, w·f², yy_cum, geometry)`` of a search's images: the image weight (ones when
    none), the point weight, with the transfer once and twice, the data term of every band (shifts
    leave |Y| unchanged: ``yy_cum[:, m - 1]`` sums the first ``m`` points) and the tilt geometry."""
    n = data.n_images
    u = data.image_weight.float() if data.image_weight is not None else torch.ones(n, device=data.y.device)
    w = data.weight.float()
    wf = w * data.factor.float()
    yy_cum = torch.cumsum(w * (data.y.float() ** 2).sum(-1), dim=1)
    return u, w, wf, wf * data.factor.float(), yy_cum, data.geometry.float() if data.geometry is not None else None

def _particle_chunks(image_particle: torch.Tensor, n_particles: int, max_images: int) -> list[tuple[int, int, int, int]]:
    """``(p0, p1, i0, i1)`` ranges of whole particles with at most ``max_images`` images (or one particle)."""
    counts = torch.bincount(image_particle, minlength=n_particles).cpu().numpy()
    offsets = np.concatenate([[0], np.cumsum(counts)])
    chunks, p0 = [], 0
    while p0 < n_particles:
        p1 = int(np.searchsorted(offsets, offsets[p0] + max_images, side="right")) - 1
        p1 = min(max(p1, p0 + 1), n_particles)
        chunks.append((p0, p1, int(offsets[p0]), int(offsets[p1])))
        p0 = p1
    return chunks


def _unique_geometry(geometry: torch.Tensor | None, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct geometries ``(U, 3, 3)`` and each image's index into them ``(n,)``."""
    if geometry is None:
        return torch.eye(3, device=device)[None], torch.zeros(n, dtype=torch.long, device=device)
    key = torch.round(geometry.reshape(n, 9).double() * 1e4)
    uniq, inverse = torch.unique(key, dim=0, return_inverse=True)
    first = torch.full((uniq.shape[0],), n, dtype=torch.long, device=device).scatter_reduce(0, inverse, torch.arange(n, device=device), "amin")
    return geometry[first].float(), inverse


def _cross_terms(y: torch.Tensor, wf: torch.Tensor, k: torch.Tensor, shifts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``w f Ȳ e^{2πi k·t}`` for ``y (n, M, 2)``, ``wf (n, M)``, ``shifts (n, S, 2)`` or ``(S, 2)``: (re, im) ``(n, S, M)``."""
    if shifts.ndim == 2:
        phi = 2 * math.pi * (shifts @ k.T)[None]  # (1, S, M)
    else:
        phi = 2 * math.pi * torch.einsum("nsd,md->nsm", shifts, k)
    c, s = torch.cos(phi), torch.sin(phi)
    yr, yi = (wf * y[..., 0])[:, None], (wf * y[..., 1])[:, None]
    return yr * c + yi * s, yr * s - yi * c


def _top_candidates(err_p: torch.Tensor, n_keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    k = min(n_keep, err_p.shape[1])
    val, idx = torch.topk(err_p, k, dim=1, largest=False, sorted=True)
    return val, idx


def _level0(volume: VolumeFn, cls: int, data: SearchData, grid: SO3Grid, settings: SearchSettings, m: int,
            geoms: torch.Tensor, geom_idx: torch.Tensor, u: torch.Tensor, yy: torch.Tensor, wf: torch.Tensor, wff: torch.Tensor,
            cache: dict | None = None):
    """Every grid rotation × the shift grid: ``(cand_index (P, C), shifts (n, C, 2))``."""
    dev = data.y.device
    rots = torch.as_tensor(grid.matrices(0), dtype=torch.float32, device=dev)  # (R, 3, 3)
    k3 = torch.cat([data.k[:m], torch.zeros(m, 1, device=dev)], 1).float()  # (m, 3)
    shifts = torch.as_tensor(shift_grid(settings.max_shift_px, settings.shift_points), dtype=torch.float32, device=dev)
    n_rot = rots.shape[0]
    slices = {}

    def slice_of(g: int):
        key = (cls, m, grid.base_nside, tuple(torch.round(geoms[g].reshape(-1) * 1e4).tolist()))
        if cache is not None and key in cache:
            return cache[key]
        if g not in slices:
            q = torch.einsum("md,rde->rme", k3, geoms[g] @ rots)  # q = k @ (G A)
            f = volume(q.reshape(-1, 3), cls).reshape(n_rot, m, 2)
            slices[g] = torch.cat([f[..., 0], f[..., 1], (f * f).sum(-1)], 1).T.contiguous()  # (3m, R)
            if cache is not None and len(cache) < 64:
                cache[key] = slices[g]
        return slices[g]

    cand = torch.empty(data.n_particles, min(settings.n_keep, n_rot), dtype=torch.long, device=dev)
    cand_shift = torch.empty(data.n_images, cand.shape[1], 2, device=dev)
    for p0, p1, i0, i1 in _particle_chunks(data.image_particle, data.n_particles, settings.chunk_images):
        err_p = torch.zeros(p1 - p0, n_rot, device=dev)
        best_t = torch.empty(i1 - i0, n_rot, dtype=torch.long, device=dev)
        gi = geom_idx[i0:i1]
        for g in torch.unique(gi).tolist():
            sel = (gi == g).nonzero()[:, 0]
            img = sel + i0
            gr, gim = _cross_terms(data.y[img, :m], wf[img, :m], data.k[:m], shifts)  # (s, T, m)
            # One product gives cross - quad/2 for every image, shift and rotation:
            # [Re G, -Im G, -w f²/2] @ [Re F; Im F; |F|²]; then E = Σw|Y|² - 2 max over shifts.
            half_quad = (-0.5 * wff[img, :m])[:, None].expand(-1, gr.shape[1], -1)
            x = torch.cat([gr, -gim, half_quad], -1)  # (s, T, 3m)
            score, t = torch.matmul(x, slice_of(g)).max(1)  # (s, R)
            e = yy[img, None] - 2 * score
            best_t[sel] = t
            err_p.index_add_(0, data.image_particle[img] - p0, u[img, None] * e)
        if len(slices) > 64:  # many distinct geometries: do not keep their slices
            slices.clear()
        _, idx = _top_candidates(err_p, settings.n_keep)
        cand[p0:p1] = idx
        img_part = data.image_particle[i0:i1] - p0
        t_idx = torch.gather(best_t, 1, idx[img_part])  # (n_c, C)
        cand_shift[i0:i1] = shifts[t_idx]
    return cand, cand_shift


def _refine_level(volume: VolumeFn, cls: int, data: SearchData, rot: torch.Tensor, children_rot: torch.Tensor,
                  shifts: torch.Tensor, offsets_px: torch.Tensor, m: int, settings: SearchSettings,
                  geometry: torch.Tensor | None, u: torch.Tensor, yy: torch.Tensor, wf: torch.Tensor, wff: torch.Tensor):
    """Score every candidate's children with local shifts.

    ``children_rot (P, C, J, 3, 3)``, ``shifts (n, C, 2)``, ``offsets_px (D, 2)`` →
    ``(err (P, C·J), best shift (n, C·J, 2))``.
    """
    dev = data.y.device
    p_all, c, j = children_rot.shape[:3]
    k3 = torch.cat([data.k[:m], torch.zeros(m, 1, device=dev)], 1).float()
    err = torch.zeros(p_all, c * j, device=dev)
    best_shift = torch.empty(data.n_images, c * j, 2, device=dev)
    for p0, p1, i0, i1 in _particle_chunks(data.image_particle, data.n_particles, max(settings.chunk_images // 4, 1)):
        img_part = data.image_particle[i0:i1]
        r = children_rot[img_part]  # (n_c, C, J, 3, 3)
        if geometry is not None:
            r = geometry[i0:i1, None, None] @ r
        q = torch.einsum("md,ncjde->ncjme", k3, r)
        f = volume(q.reshape(-1, 3), cls).reshape(i1 - i0, c, j, m, 2)
        t = shifts[i0:i1, :, None, :] + offsets_px[None, None]  # (n_c, C, D, 2)
        gr, gim = _cross_terms(data.y[i0:i1, :m], wf[i0:i1, :m], data.k[:m], t.reshape(i1 - i0, -1, 2))
        gr, gim = gr.reshape(i1 - i0, c, -1, m), gim.reshape(i1 - i0, c, -1, m)
        cross = torch.einsum("ncdm,ncjm->ncjd", gr, f[..., 0]) - torch.einsum("ncdm,ncjm->ncjd", gim, f[..., 1])
        quad = torch.einsum("nm,ncjm->ncj", wff[i0:i1, :m], (f * f).sum(-1))
        e, d = (quad[..., None] - 2 * cross).min(-1)  # (n_c, C, J)
        e = e + yy[i0:i1, None, None]
        err[p0:p1].index_add_(0, img_part - p0, (u[i0:i1, None, None] * e).reshape(i1 - i0, -1))
        best_shift[i0:i1] = (shifts[i0:i1, :, None, :] + offsets_px[d]).reshape(i1 - i0, -1, 2)
    return err, best_shift


@torch.no_grad()
def search_poses(volume: VolumeFn, data: SearchData, n_classes: int = 1, settings: SearchSettings | None = None,
                 classes: list[int] | None = None, cache: dict | None = None) -> SearchResult:
    """Global coarse-to-fine search of every particle's rotation and every image's origin, per class.

    ``classes`` restricts the search to some classes (the others' results are NaN), e.g. only the
    consensus field while a mixture trains as one. ``cache``: a dict kept by the caller *for as long
    as ``volume`` does not change*, in which the level-0 slices (which depend only on the volume, the
    band and the geometry) are kept between calls, e.g. between the batches of one decoded grid.
    """
    import time

    settings = settings or SearchSettings()
    dev = data.y.device
    grid = SO3Grid(settings.base_nside)
    n, p = data.n_images, data.n_particles
    u, w, wf, wff, yy_cum, geometry = _weights(data)
    geoms, geom_idx = _unique_geometry(data.geometry, n, dev)
    classes = list(range(n_classes)) if classes is None else list(classes)
    c_keep = min(settings.n_keep, grid.size(0))
    rotation = torch.full((p, n_classes, 3, 3), float("nan"), device=dev)
    shift_px = torch.full((n, n_classes, 2), float("nan"), device=dev)
    error = torch.full((p, n_classes), float("nan"), device=dev)
    cand_err = torch.full((p, n_classes, c_keep), float("nan"), device=dev)
    cand_rot = torch.full((p, n_classes, c_keep, 3, 3), float("nan"), device=dev)
    cand_shift = torch.full((n, n_classes, c_keep, 2), float("nan"), device=dev)
    m_last = data.band(settings.radius_px[-1])
    n_values = torch.zeros(p, device=dev).index_add_(0, data.image_particle, u * w[:, :m_last].sum(1))
    seconds = {f"level{l}": 0.0 for l in range(settings.n_levels)}

    def band(level: int) -> int:
        return data.band(settings.radius_px[level])

    for cls in classes:
        t0 = time.perf_counter()
        idx, shifts = _level0(volume, cls, data, grid, settings, band(0), geoms, geom_idx, u, yy_cum[:, band(0) - 1], wf, wff, cache)
        seconds["level0"] += time.perf_counter() - t0
        rot = torch.as_tensor(grid.matrices(0, idx.cpu().numpy()), dtype=torch.float32, device=dev)  # (P, C, 3, 3)
        err_last = None
        for level in range(1, settings.n_levels):
            t0 = time.perf_counter()
            if settings.refine == "children":
                child = grid.children(level - 1, idx.cpu().numpy())  # (P, C, 8)
                children_rot = torch.as_tensor(grid.matrices(level, child), dtype=torch.float32, device=dev)
            else:
                offs = torch.as_tensor(local_rotation_offsets(grid.spacing_deg(level)), dtype=torch.float32, device=dev)
                children_rot = offs[None, None] @ rot[:, :, None]
                child = None
            offsets_px = torch.as_tensor(local_shift_offsets(settings.shift_step_px(level)), dtype=torch.float32, device=dev)
            err, best_shift = _refine_level(volume, cls, data, rot, children_rot, shifts, offsets_px, band(level), settings, geometry, u, yy_cum[:, band(level) - 1], wf, wff)
            val, top = _top_candidates(err, c_keep)
            rot = children_rot.reshape(p, -1, 3, 3)[torch.arange(p, device=dev)[:, None], top]
            if child is not None:
                idx = torch.as_tensor(child.reshape(p, -1), device=dev)[torch.arange(p, device=dev)[:, None], top]
            shifts = best_shift[torch.arange(n, device=dev)[:, None], top[data.image_particle]]
            err_last = val
            seconds[f"level{level}"] += time.perf_counter() - t0
        if err_last is None:  # a single level: score the kept grid rotations as they are
            offsets_px = torch.zeros(1, 2, device=dev)
            err, best_shift = _refine_level(volume, cls, data, rot, rot[:, :, None], shifts, offsets_px, band(0), settings, geometry, u, yy_cum[:, band(0) - 1], wf, wff)
            err_last, order = torch.sort(err, dim=1)
            rot = rot[torch.arange(p, device=dev)[:, None], order]
            shifts = best_shift[torch.arange(n, device=dev)[:, None], order[data.image_particle]]
        rotation[:, cls] = rot[:, 0]
        shift_px[:, cls] = shifts[:, 0]
        error[:, cls] = err_last[:, 0]
        cand_err[:, cls, : err_last.shape[1]] = err_last
        cand_rot[:, cls, : rot.shape[1]] = rot
        cand_shift[:, cls, : shifts.shape[1]] = shifts
    return SearchResult(rotation=rotation, shift_px=shift_px, error=error, candidate_error=cand_err, candidate_rotation=cand_rot,
                        candidate_shift_px=cand_shift, n_values=n_values, seconds=seconds)


@torch.no_grad()
def refine_poses(volume: VolumeFn, data: SearchData, rotation: torch.Tensor, shift_px: torch.Tensor, cls: int,
                 levels: list[tuple[float, float, float]], n_keep: int = 4, chunk_images: int = 128) -> SearchResult:
    """Local search around given poses: ``rotation (P, 3, 3)``, ``shift_px (n, 2)``.

    ``levels``: ``(rotation step deg, shift step px, band radius px)`` per level, coarse to fine; each
    level tries the 27 rotations ``exp(step·ω)``, ``ω ∈ {-1, 0, 1}³``, around every kept candidate and
    the 3 × 3 shifts around each image's best. Returns the result for class ``cls`` only (K = 1 axis).
    """
    dev = data.y.device
    n, p = data.n_images, data.n_particles
    u, w, wf, wff, yy_cum, geometry = _weights(data)
    settings = SearchSettings(n_keep=n_keep, chunk_images=chunk_images)
    rot = rotation.float()[:, None]  # (P, 1, 3, 3)
    shifts = shift_px.float()[:, None]
    val = None
    for step_deg, step_px, radius_px in levels:
        m = data.band(radius_px)
        offs = torch.as_tensor(local_rotation_offsets(step_deg), dtype=torch.float32, device=dev)
        children = offs[None, None] @ rot[:, :, None]
        offsets_px = torch.as_tensor(local_shift_offsets(step_px), dtype=torch.float32, device=dev)
        err, best_shift = _refine_level(volume, cls, data, rot, children, shifts, offsets_px, m, settings, geometry, u, yy_cum[:, m - 1], wf, wff)
        val, top = _top_candidates(err, n_keep)
        rot = children.reshape(p, -1, 3, 3)[torch.arange(p, device=dev)[:, None], top]
        shifts = best_shift[torch.arange(n, device=dev)[:, None], top[data.image_particle]]
    return SearchResult(rotation=rot[:, :1], shift_px=shifts[:, :1], error=val[:, :1], candidate_error=val[:, None])

