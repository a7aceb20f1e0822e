"""The linear part of the encoder: the posterior of a low-resolution factor model of the particles.

A particle's map on the coarse grid (:data:`~hetfield.imaging.backprojection.LOWRES_GRID_POINTS`³,
the grid of the mixture's EM start) is modelled as ``V_p = V0 + W z_p`` with ``z_p ~ N(0, I)`` and
Gaussian noise of variance ``σ²`` on the CTF- and exposure-weighted Hartley values of its images.
``[V0, W]`` (``basis``, ``(J, q + 1)``) and ``σ²`` are fitted once before training
(:mod:`hetfield.train.latent_start`). For the images of a particle, with ``u_i = P_i [V0, W]`` the
basis maps' projections at image ``i``'s pose (transfer applied), the posterior is exact::

    C_p = (I + Σ_i W_iᵀ W_i / σ²)⁻¹        m_p = C_p Σ_i W_iᵀ (y_i - P_i V0) / σ²

It accounts for each particle's own orientations, defocus and tilt coverage, which a network would
have to learn from a few hundred particles. The encoder returns ``m_p`` plus what its networks add
(their last layer starts at zero) and ``log diag C_p`` plus their log-variance correction.
"""

from __future__ import annotations

import torch

from hetfield.imaging.backprojection import backprojection_phase
from hetfield.imaging.precision import at_least_fp32, full_precision


def basis_projections(points, rotation: torch.Tensor, grid: torch.Tensor, m: int, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(u_k, u_mk)`` ``(n, m, q + 1)``: the Hartley values of the ``basis (J, q + 1)`` maps on
    ``grid (J, 3)`` at the first ``m`` lattice points of images at ``rotation (n, 3, 3)``, at ``k`` and ``-k``."""
    theta = backprojection_phase(points.frequencies_3d(rotation, m), grid)
    c, s = torch.cos(theta), torch.sin(theta)
    basis = basis.to(c.dtype)
    return (c + s) @ basis, (c - s) @ basis


def factor_posterior(points, grid: torch.Tensor, n_points: int, basis: torch.Tensor, noise_var: torch.Tensor, batch, obs) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, log variance)`` ``(P, q)`` of the factor model's posterior for ``batch``'s particles.

    ``obs`` is the batch's :class:`~hetfield.model.forward.Observation` (centred data, transfer,
    poses); only its first ``n_points`` radius-sorted points (what the grid resolves) are read. fp32
    whatever autocast says: the Gram matrices are inverted.
    """
    y_k = at_least_fp32(obs.y_k)
    with full_precision(y_k):
        m = min(y_k.shape[1], n_points)
        u_k, u_mk = basis_projections(points, at_least_fp32(obs.rotation), grid, m, basis)
        w = obs.mask[:, :m].float()
        f = obs.transfer.factor[:, :m].float()
        pw = points.partner_weight[:m]
        wf2 = w * f * f
        gram = torch.einsum("nma,nm,nmb->nab", u_k, wf2, u_k) + torch.einsum("nma,nm,nmb->nab", u_mk, wf2 * pw, u_mk)
        proj = torch.einsum("nma,nm->na", u_k, w * f * y_k[:, :m]) + torch.einsum("nma,nm->na", u_mk, w * pw * f * obs.y_mk[:, :m].float())
        idx, n_p = batch.image_particle, batch.n_particles
        gram = gram.new_zeros(n_p, *gram.shape[1:]).index_add_(0, idx, gram)
        proj = proj.new_zeros(n_p, proj.shape[1]).index_add_(0, idx, proj)
        var = noise_var.float()
        q = basis.shape[1] - 1
        precision = torch.eye(q, dtype=gram.dtype, device=gram.device) + gram[:, 1:, 1:] / var
        # Cholesky, not inv: precision is symmetric positive definite (I + a Gram matrix).
        chol = torch.linalg.cholesky(precision)
        mean = torch.cholesky_solve(((proj[:, 1:] - gram[:, 1:, 0]) / var)[..., None], chol)[..., 0]
        cov_diag = torch.cholesky_inverse(chol).diagonal(dim1=1, dim2=2)
        return mean, torch.log(cov_diag.clamp_min(1e-6))
