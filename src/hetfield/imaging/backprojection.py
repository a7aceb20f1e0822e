"""Coarse back-projection of lattice values onto a grid of 3D points in the particle frame.

An image's Hartley values at the decoded points, placed at their 3D frequencies ``q = k @ A``,
summed with the Hartley kernel ``cas(2π q·r)`` at real-space points ``r``: a low-resolution
back-projection in the particle's own frame. The encoder reads these (so known poses reach it), and
the EM class start fits linear maps on the same grid with the same kernel.
"""

from __future__ import annotations

import torch

from hetfield.imaging.precision import at_least_fp32, full_precision

# The coarse grid of the linear low-resolution models (the mixture's EM class start, the encoder's
# factor-model latent start): 8³ over 80 % of the box resolves about 5 px of radius at any box, where
# nearly all the class signal of tomo-sim-50S lies and a J × J system (J ≤ 512) is small to solve.
LOWRES_GRID_POINTS = 8


def backprojection_grid(box: int, n: int) -> torch.Tensor:
    """``(J, 3)`` points ``(x, y, z)`` in pixels: an ``n³`` grid over 80 % of the box, inside its sphere."""
    step = 0.8 * box / n
    c = (torch.arange(n, dtype=torch.float32) - (n - 1) / 2) * step
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    pts = torch.stack([x, y, z], -1).reshape(-1, 3)
    return pts[pts.norm(dim=-1) <= 0.45 * box]


def grid_radius_px(box: int, n: int) -> float:
    """Largest lattice radius (pixels) the grid resolves: its Nyquist, never beyond the box's."""
    spacing = 0.8 * box / n
    return min(box / 2, box / (2 * spacing))


def backprojection_phase(q: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``θ = 2π q·r`` ``(n, m, J)`` for frequencies ``q (n, m, 3)`` cycles/px and points ``grid (J, 3)`` px,
    in ``q``'s dtype (fp32 at least, autocast or not): the phase of the Hartley kernel ``cas θ``."""
    q = at_least_fp32(q)
    with full_precision(q):
        return 2 * torch.pi * (q @ grid.T.to(q.dtype))


def backproject(h_k: torch.Tensor, h_mk: torch.Tensor, weight: torch.Tensor, q: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``(n, J)``: values ``h_k``/``h_mk`` ``(n, m)`` at ``q (n, m, 3)`` and ``-q``, times ``weight``, at ``grid``.

    All in fp32 at least under autocast too: it is the encoder's featurisation, not a network."""
    h_k, h_mk, weight = at_least_fp32(h_k), at_least_fp32(h_mk), at_least_fp32(weight)
    with full_precision(h_k):
        a, b = h_k * weight, h_mk * weight
        theta = backprojection_phase(q, grid)
        # H(k) cas(θ) + H(-k) cas(-θ) = (H(k) + H(-k)) cos θ + (H(k) - H(-k)) sin θ
        return torch.einsum("nm,nmj->nj", a + b, torch.cos(theta)) + torch.einsum("nm,nmj->nj", a - b, torch.sin(theta))
