"""Volumes as Fourier coefficients on a cube of frequencies: a decoded field (:class:`FourierGrid`,
sliced by trilinear interpolation) and a running direct-inversion reconstruction
(:class:`FourierAccumulator`, the low-resolution ab initio's map).

A pose search compares many candidate slices of one volume: decoding a neural field once onto an
oversampled grid and interpolating its slices costs one decoding per class however many rotations
are scored (the field itself would be evaluated at every candidate's lattice).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F


class FourierGrid:
    """Fourier coefficients of ``K`` volumes on a cube of frequencies, sliced by trilinear interpolation.

    ``values (K, 2, G, G, G)`` ``[z, y, x]`` with ``G = 2 ceil(radius_px · oversample) + 1``: index ``i``
    is at ``(i - G//2) / oversample`` lattice pixels, i.e. ``q = (i - G//2) / (oversample · box)``
    cycles/px. Outside the cube the volume is zero. Oversampling by 2 keeps the interpolation error
    small for a particle filling the box (the real-space taper of trilinear interpolation is
    ``sinc²(x / (2 · oversample · box))`` at ``x`` pixels, 0.81 at the box edge for oversample 2).
    """

    def __init__(self, values: torch.Tensor, box: int, oversample: float):
        if values.ndim != 5 or values.shape[1] != 2:
            raise ValueError(f"values must be (K, 2, G, G, G), got {tuple(values.shape)}")
        self.values = values
        self.box = int(box)
        self.oversample = float(oversample)
        self.half = (values.shape[-1] - 1) // 2

    @property
    def n_classes(self) -> int:
        return int(self.values.shape[0])

    @property
    def radius_px(self) -> float:
        return self.half / self.oversample

    @classmethod
    @torch.no_grad()
    def from_function(
        cls,
        fn: Callable[[torch.Tensor], torch.Tensor],
        box: int,
        radius_px: float,
        oversample: float = 2.0,
        chunk: int = 1 << 15,
        device=None,
    ) -> "FourierGrid":
        """Evaluate ``fn(q (N, 3)) -> (K, N, 2)`` on the cube's points within ``radius_px`` (+ margin).

        Only the half-space ``q_z >= 0`` is evaluated; the rest is its conjugate (a real volume).
        """
        half = int(math.ceil(radius_px * oversample)) + 1  # one extra point for the interpolation
        g = 2 * half + 1
        c = (torch.arange(g, dtype=torch.float32, device=device) - half) / (oversample * box)
        qz, qy, qx = torch.meshgrid(c[half:], c, c, indexing="ij")
        q = torch.stack([qx, qy, qz], -1).reshape(-1, 3)
        inside = (q.norm(dim=-1) * box <= radius_px + 1.5 / oversample).nonzero()[:, 0]
        out = None
        for s in range(0, inside.shape[0], chunk):
            idx = inside[s : s + chunk]
            v = fn(q[idx]).float()  # (K, n, 2)
            if out is None:
                out = torch.zeros(v.shape[0], q.shape[0], 2, device=v.device)
            out[:, idx] = v
        k = out.shape[0]
        upper = out.reshape(k, half + 1, g, g, 2).permute(0, 4, 1, 2, 3)  # (K, 2, z >= 0, y, x)
        values = torch.zeros(k, 2, g, g, g, device=out.device)
        values[:, :, half:] = upper
        # F(-q) = conj F(q): the lower half is the upper one mirrored through the centre.
        mirrored = torch.flip(upper[:, :, 1:], dims=(2, 3, 4))
        values[:, 0, :half] = mirrored[:, 0]
        values[:, 1, :half] = -mirrored[:, 1]
        return cls(values, box, oversample)

    def __call__(self, q: torch.Tensor, c: int) -> torch.Tensor:
        """``q (..., 3)`` cycles/px → ``(..., 2)`` Fourier coefficients of class ``c``."""
        shape = q.shape[:-1]
        u = q.reshape(1, 1, 1, -1, 3).to(self.values.dtype) * (self.box * self.oversample / self.half)
        v = F.grid_sample(self.values[c : c + 1], u, mode="bilinear", padding_mode="zeros", align_corners=True)
        return v.reshape(2, -1).T.reshape(*shape, 2)



def ridge_inverse(num: torch.Tensor, den: torch.Tensor, ridge: float) -> torch.Tensor:
    """``num / (den + λ)`` with ``λ = ridge · mean(den > 0)`` (1 where nothing was splatted): the
    direct inversion of :meth:`FourierAccumulator.volume`, for callers that hold ``symmetrised()``."""
    lam = ridge * float(den[den > 0].mean()) if bool((den > 0).any()) else 1.0
    return num / (den + lam)


class FourierAccumulator:
    """Running direct-inversion reconstruction on a ``(G, G, G)`` grid ``[z, y, x]`` (see module doc)."""

    def __init__(self, box: int, radius_px: float, oversample: float = 2.0, device=None):
        self.box, self.oversample = int(box), float(oversample)
        self.half = int(math.ceil(radius_px * oversample)) + 1
        g = 2 * self.half + 1
        self.num = torch.zeros(2, g, g, g, device=device)
        self.den = torch.zeros(g, g, g, device=device)

    def decay(self, factor: float) -> None:
        self.num *= factor
        self.den *= factor

    def add(self, q: torch.Tensor, value: torch.Tensor, weight: torch.Tensor) -> None:
        """Splat ``value (N, 2)`` (``f·w·Y``) and ``weight (N,)`` (``f²·w``) at ``q (N, 3)`` cycles/px."""
        g = self.den.shape[0]
        p = q.float() * (self.box * self.oversample) + self.half
        i0 = p.floor()
        fr = p - i0
        i0 = i0.long()
        num_r, num_i, den = self.num[0].view(-1), self.num[1].view(-1), self.den.view(-1)
        for dz in (0, 1):
            wz = fr[:, 2] if dz else 1 - fr[:, 2]
            for dy in (0, 1):
                wy = fr[:, 1] if dy else 1 - fr[:, 1]
                for dx in (0, 1):
                    wx = fr[:, 0] if dx else 1 - fr[:, 0]
                    ix, iy, iz = i0[:, 0] + dx, i0[:, 1] + dy, i0[:, 2] + dz
                    ok = (ix >= 0) & (ix < g) & (iy >= 0) & (iy < g) & (iz >= 0) & (iz < g)
                    flat = ((iz * g + iy) * g + ix)[ok]
                    ww = (wz * wy * wx)[ok]
                    num_r.index_add_(0, flat, ww * value[ok, 0])
                    num_i.index_add_(0, flat, ww * value[ok, 1])
                    den.index_add_(0, flat, ww * weight[ok])

    def symmetrised(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(num (2, G, G, G), den (G, G, G))`` with every splat also counted, conjugated, at ``-q``
        (a real map: ``F(-q) = conj F(q)``)."""
        num = self.num + torch.stack([torch.flip(self.num[0], (0, 1, 2)), -torch.flip(self.num[1], (0, 1, 2))])
        return num, self.den + torch.flip(self.den, (0, 1, 2))

    def volume(self, ridge: float = 1e-3) -> FourierGrid:
        """The current map: Hermitian-symmetrised ``num / (den + λ)``, ``λ = ridge · mean(den > 0)``."""
        return FourierGrid(ridge_inverse(*self.symmetrised(), ridge)[None], self.box, self.oversample)
