"""Data-driven start of a mixture of K fields (K > 1): low-resolution 3D classification by EM.

Trained from uniform class scores, a mixture sits at a saddle: every field learns the consensus
and nothing tells them apart, or one field fits first and takes every particle (Hydra's collapse).
Clustering back-projected residual maps was not enough either: on the low-SNR tomo-sim-50S set
(per-image SNR ≈ 0.09) it locked a wrong partition. Yet nearly all of the class signal there lies
below 5 px of radius, where a linear model is small enough to fit exactly. So, as RELION's 3D
classification does, we start from EM on coarse maps:

1. the fields are trained together as one consensus for ``class_init_epochs``;
2. each particle's images, up to the radius a ``GRID_POINTS³`` real-space grid resolves, give its
   sufficient statistics for a linear map ``V`` on that grid: ``A_i = Σ Pᵀ W P``, ``b_i = Σ Pᵀ W y``,
   ``P`` the CTF- and exposure-weighted Hartley projection of the grid at the image's pose;
3. EM over K maps (ridge-regularised M-step, Gaussian E-step with the noise variance re-estimated
   each iteration) from ``EM_RESTARTS`` random soft partitions of a particle subset; the restart
   with the highest penalised likelihood wins, and its maps classify every particle;
4. the result becomes the prior of the score table, and every field restarts from the consensus.

Only training particles take part: held-out (validation) particles are neither fitted nor given an
EM prior (their scores stay uniform), or the validation loss would see a partition learned from them.
Every loop calls ``check()`` (the trainer's signal check), so a stop request is honoured within a
batch or an EM iteration, before anything of the model has changed.

The fields then specialise on their particles and the calibrated posterior refines the partition.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from hetfield.data.batching import ParticleBatches
from hetfield.imaging.backprojection import LOWRES_GRID_POINTS, backprojection_grid, backprojection_phase, grid_radius_px
from hetfield.imaging.shifts import translate_hartley_pair
from hetfield.imaging.transfer import transfer_of

GRID_POINTS = LOWRES_GRID_POINTS
SCORE_STRENGTH = 3.0  # initial prior: softmax gives 0.95 to the EM class when K = 2
EM_RESTARTS = 8
EM_ITERATIONS = 30
EM_MAX_PARTICLES = 1000  # EM is fitted on at most this many particles (A_i packed: 0.3 MB each); the rest are assigned
RIDGE = 1e-2  # M-step ridge, relative to the mean diagonal of the data term per class


def _lowres_grid(model, box: int, device) -> tuple[torch.Tensor, int]:
    """The coarse grid ``(J, 3)`` (float64) and how many radius-sorted lattice points it resolves."""
    grid = backprojection_grid(box, GRID_POINTS).to(device=device, dtype=torch.float64)
    return grid, model.points.count_within(grid_radius_px(box, GRID_POINTS))


def _batch_statistics(model, batch, grid: torch.Tensor, n_low: int, dose_weight: bool, dose_mask: bool):
    """``A (P, J, J)`` (float32), ``b (P, J)``, ``yy (P,)``, ``n_values (P,)`` (float64) of one batch's particles."""
    pts = model.points
    m = min(batch.extent, n_low)
    rot, origin = model.poses_of(batch)
    yk, ymk = translate_hartley_pair(batch.y_k[:, :m], batch.y_mk[:, :m], pts.k[:m], origin)
    t = transfer_of(batch, pts.k[:m], dose_weight=dose_weight, dose_mask=dose_mask)
    factor, keep = t.factor, t.keep
    theta = backprojection_phase(pts.frequencies_3d(rot.double(), m), grid)  # (n, m, J)
    c, s = torch.cos(theta), torch.sin(theta)
    p_k, p_mk = c + s, c - s  # cas(θ) at k, cas(−θ) at −k
    pw = pts.partner_weight[:m].double()
    w, f = keep.double(), factor.double()
    b_img = torch.einsum("nmj,nm->nj", p_k, w * f * yk.double()) + torch.einsum("nmj,nm->nj", p_mk, w * pw * f * ymk.double())
    yy_img = (w * yk.double() ** 2).sum(1) + (w * pw * ymk.double() ** 2).sum(1)
    nv_img = (w * (1 + pw)).sum(1)
    idx, n_p = batch.image_particle, batch.n_particles

    def per_particle(x):
        return x.new_zeros(n_p, *x.shape[1:]).index_add_(0, idx, x)

    # A_p = Σ_i P_iᵀ W_i P_i = X_pᵀ X_p with the rows of all of p's images (at k and at -k) stacked,
    # each scaled by √weight: one product per particle, in float32 as A_p is kept (sums of ~10³
    # terms: relative error ~1e-6, far below the data's). Per-image (J, J) float64 blocks summed
    # afterwards wrote 11× as much memory (190 particles × 11 tilts, J = 360: 62 s → 28 s in float64).
    rows = torch.cat([p_k * (w * f * f).sqrt()[..., None], p_mk * (w * pw * f * f).sqrt()[..., None]], 1).float()  # (n, 2m, J)
    stacked = rows.new_zeros(n_p, batch.n_slots, *rows.shape[1:])
    stacked[idx, batch.slot] = rows
    stacked = stacked.reshape(n_p, -1, rows.shape[-1])
    return stacked.transpose(1, 2) @ stacked, per_particle(b_img), per_particle(yy_img), per_particle(nv_img)


def residual_energy(a: torch.Tensor, b: torch.Tensor, yy: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``(P, K)``: weighted squared error of every particle under every map ``maps (K, J)`` (dense ``a (P, J, J)``)."""
    m = maps.to(a.dtype)
    quad = (torch.matmul(a, m.T) * m.T[None]).sum(1).to(b.dtype)  # V_kᵀ A_p V_k; matmul is ~6× einsum's speed here
    return yy[:, None] - 2 * b @ maps.to(b.dtype).T + quad


class LowResStatistics:
    """Per-particle sufficient statistics of the linear low-resolution model.

    ``A_p (J, J)`` is symmetric: only its upper triangle is kept, packed, in float32 (``packed (P,
    J(J+1)/2)``, 0.3 MB a particle at J = 387; :meth:`A` unpacks it), in one array allocated up front
    when ``n_particles`` is given and filled batch by batch. Collecting dense float64 blocks and
    concatenating them held 3 MB a particle at the peak: 3 GB of the K = 2 SPA run's 3.5 GB (1 000
    fitted particles). Also ``b (P, J)``, ``yy (P,)`` (weighted data energy) and ``n_values (P,)``
    for the particles of ``batches``, whose global indices are ``particles (P,)``.
    """

    def __init__(self, model, batches, box: int, dose_weight: bool, dose_mask: bool, device, check=None, n_particles: int | None = None):
        grid, n_low = _lowres_grid(model, box, device)
        j = grid.shape[0]
        rows, cols = torch.triu_indices(j, j, device=device)
        self.j = j
        self._rows, self._cols = rows, cols
        self._upper = rows * j + cols  # flat indices of the packed entries
        # V_kᵀ A V_k from the packed triangle: off-diagonal entries count twice.
        self._pair_weight = torch.where(rows == cols, 1.0, 2.0).to(device)
        # With ``n_particles`` every array is allocated before the first batch: per-batch pieces kept
        # alive between the batches' large temporaries fragmented the heap (+17 MB a batch measured).
        arrays = None
        if n_particles is not None:
            arrays = [torch.empty(n_particles, dtype=torch.long, device=device), torch.empty(n_particles, len(self._upper), device=device)]
            arrays += [torch.empty(n_particles, j, dtype=torch.float64, device=device)] + [torch.empty(n_particles, dtype=torch.float64, device=device) for _ in range(2)]
        pieces: list[list[torch.Tensor]] = [[] for _ in range(5)]
        filled = 0
        for batch in batches:
            if check is not None:
                check()
            batch = batch.to(device)
            a, *rest = _batch_statistics(model, batch, grid, n_low, dose_weight, dose_mask)
            values = [batch.particles, a.reshape(a.shape[0], -1)[:, self._upper].float(), *rest]
            del a
            for i, x in enumerate(values):
                if arrays is None:
                    pieces[i].append(x)
                else:
                    arrays[i][filled : filled + x.shape[0]] = x
            filled += int(batch.n_particles)
        if arrays is None:
            arrays = [torch.cat(p) for p in pieces]
        self.particles, self.packed, self.b, self.yy, self.n_values = (x[:filled] for x in arrays)
        self._b32, self._yy32 = self.b.float(), self.yy.float()  # for the float32 quadratic form

    def unpack(self, packed: torch.Tensor) -> torch.Tensor:
        """``(n, J, J)`` symmetric matrices from ``packed (n, J(J+1)/2)`` upper triangles."""
        out = packed.new_zeros(packed.shape[0], self.j * self.j)
        out[:, self._upper] = packed
        out = out.view(-1, self.j, self.j)
        return out + out.transpose(1, 2) - torch.diag_embed(out.diagonal(dim1=1, dim2=2))

    def A(self, weights: torch.Tensor) -> torch.Tensor:
        """``Σ_p weights_pk A_p`` ``(K, J, J)`` (float64) for ``weights (P, K)``."""
        return self.unpack((weights.T.to(self.packed.dtype) @ self.packed).double())

    def quadratic(self, vectors: torch.Tensor) -> torch.Tensor:
        """``(P, r, r)`` float64: ``vectorsᵀ A_p vectors`` for every particle, ``vectors (J, r)``, in one
        product over the packed triangles (off-diagonal entries count for both of their places)."""
        v = vectors.float()
        pairs = v[self._rows][:, :, None] * v[self._cols][:, None, :]
        pairs = (pairs + pairs.transpose(1, 2)) * (self._pair_weight / 2)[:, None, None]
        r = v.shape[1]
        return (self.packed @ pairs.reshape(-1, r * r)).double().reshape(-1, r, r)

    def residual_energy(self, maps: torch.Tensor) -> torch.Tensor:
        maps = maps.float()
        pairs = (maps[:, :, None] * maps[:, None, :]).reshape(maps.shape[0], -1)[:, self._upper] * self._pair_weight
        quad = self.packed @ pairs.T  # V_kᵀ A_p V_k
        return (self._yy32[:, None] - 2 * self._b32 @ maps.T + quad).double()


def _solve_spd(lhs: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``lhs (K, J, J)`` symmetric positive definite, ``rhs (K, J)`` → ``(K, J)``, by NumPy's LAPACK.

    torch 2.13's CPU ``linalg.solve`` fails ("Pivots given to lu_solve…") for J ≥ 360 once
    ``torch.set_num_threads`` has been called in the process; these systems are tiny anyway.
    """
    x = np.linalg.solve(lhs.cpu().numpy(), rhs.cpu().numpy()[..., None])[..., 0]
    return torch.from_numpy(x).to(rhs.device)


def em_classes(stats: LowResStatistics, n_classes: int, seed: int = 0, restarts: int = EM_RESTARTS, iterations: int = EM_ITERATIONS, check=None):
    """Best of ``restarts`` EM runs (highest penalised likelihood): ``(maps (K, J), noise variance)``."""
    n, j = stats.b.shape
    k = n_classes
    dtype, device = stats.b.dtype, stats.b.device
    eye = torch.eye(j, dtype=dtype, device=device)
    ridge = float(RIDGE * stats.A(torch.ones(n, 1, dtype=dtype, device=device))[0].diagonal().mean() / k)
    total_values = stats.n_values.sum().clamp_min(1.0)
    gen = torch.Generator().manual_seed(seed)
    best = None
    for _ in range(restarts):
        resp = -torch.log(torch.rand(n, k, generator=gen, dtype=dtype)).to(device)
        resp = resp / resp.sum(1, keepdim=True)
        for _ in range(iterations):
            if check is not None:
                check()
            lhs = stats.A(resp) + ridge * eye
            maps = _solve_spd(lhs, resp.T @ stats.b)
            err = stats.residual_energy(maps).clamp_min(0.0)
            var = float((resp * err).sum() / total_values)
            post = -err / (2 * var) + torch.log(resp.mean(0) + 1e-12)
            new_resp = torch.softmax(post, dim=1)
            moved = float((new_resp - resp).abs().max())
            resp = new_resp
            if moved < 1e-4:
                break
        # Penalised Gaussian log-likelihood; the log-variance term matters: restarts end with different noise levels.
        score = float(torch.logsumexp(post, 1).sum() - 0.5 * total_values * math.log(var) - 0.5 * ridge * (maps * maps).sum() / var)
        if best is None or score > best[0]:
            best = (score, maps, var)
    return best[1], best[2]


@torch.no_grad()
def restart_fields_from_consensus(model, optimizer) -> None:
    """Every field (and its optimiser moments) becomes a copy of field 0."""
    fields = model.fields
    for name, p in fields.named_parameters():
        if p.ndim and p.shape[0] == fields.n_classes:
            p[1:] = p[:1]
            state = optimizer.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][1:] = state[key][:1]


@torch.no_grad()
def lowres_em_labels(model, ds, cfg, device, particles=None, check=None) -> np.ndarray:
    """Labels ``(N,)`` from EM on a subset of ``particles`` (default all; steps 2–3 of the module
    docstring); particles outside ``particles`` get ``-1``."""
    k = model.shape.n_classes
    n = ds.n_particles
    particles = np.arange(n) if particles is None else np.sort(np.asarray(particles, dtype=np.int64))
    rng = np.random.default_rng(cfg.seed + 101)
    subset = particles[np.sort(rng.choice(len(particles), size=min(len(particles), EM_MAX_PARTICLES), replace=False))]

    def batches(chosen):
        loader = ParticleBatches(ds, model.points, 16, shuffle=False, prefetch=False, particles=chosen, dose_mask=cfg.dose_mask)
        return loader.epoch(0)

    stats = LowResStatistics(model, batches(subset), ds.box, cfg.dose_weight, cfg.dose_mask, device, check=check, n_particles=len(subset))
    maps, var = em_classes(stats, k, seed=cfg.seed, check=check)
    labels = np.full(n, -1, dtype=np.int64)
    labels[stats.particles.cpu().numpy()] = stats.residual_energy(maps).argmin(1).cpu().numpy()
    del stats
    grid, n_low = _lowres_grid(model, ds.box, device)
    rest = np.setdiff1d(particles, subset)
    if len(rest):
        for batch in batches(rest):
            if check is not None:
                check()
            batch = batch.to(device)
            a, b, yy, _ = _batch_statistics(model, batch, grid, n_low, cfg.dose_weight, cfg.dose_mask)
            labels[batch.particles.cpu().numpy()] = residual_energy(a, b, yy, maps).argmin(1).cpu().numpy()
    return labels


@torch.no_grad()
def initialise_classes(model, optimizer, ds, cfg, device, log=None, particles=None, check=None) -> np.ndarray:
    """Steps 2–4 of the module docstring for ``particles`` (the training particles; default all);
    returns the labels (``-1`` for the others, whose scores stay uniform).

    ``check()`` may raise to stop; the model is changed only after the last check.
    """
    was_training = model.training
    model.eval()
    try:
        labels = lowres_em_labels(model, ds, cfg, device, particles=particles, check=check)
    finally:
        model.train(was_training)
    k = model.shape.n_classes
    table = model.scores.scores
    fitted = np.flatnonzero(labels >= 0)
    scores = torch.zeros(ds.n_particles, k, device=table.device)
    scores[torch.as_tensor(fitted, device=table.device), torch.as_tensor(labels[fitted], device=table.device)] = SCORE_STRENGTH
    table.copy_(scores)
    optimizer.reset_moments(table)
    restart_fields_from_consensus(model, optimizer)
    if log is not None:
        held = ds.n_particles - len(fitted)
        log(
            f"classes initialised by low-resolution EM ({EM_RESTARTS} restarts): sizes {np.bincount(labels[fitted], minlength=k).tolist()}"
            + (f"; {held} held-out particles keep uniform scores" if held else "")
        )
    return labels
