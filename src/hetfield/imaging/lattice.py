"""The odd ``(D+1) x (D+1)`` frequency lattice, its masks, and the pairing of ``k`` with ``-k``.

Hartley values of a real image at ``k`` and ``-k`` together determine its Fourier coefficient, so the
forward model decodes only one point of every ``(k, -k)`` pair (``half`` below) and derives the partner.
Every mask used here is point-symmetric, so each kept point keeps its partner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np


def lattice_coords_1d(box: int) -> np.ndarray:
    """Frequencies of the ``box + 1`` lattice points along one axis, in cycles/pixel, [-0.5, 0.5]."""
    if box < 2 or box % 2:
        raise ValueError(f"box size must be even and >= 2, got {box}")
    return np.linspace(-0.5, 0.5, box + 1)


@dataclass(frozen=True)
class Lattice:
    """The 2D frequency lattice of images of even box size ``box`` (``box + 1`` points per axis).

    Flat indices run row-major over ``[ky, kx]``, like the cached images ``[..., y, x]``.
    """

    box: int
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def n(self) -> int:
        """Points per axis: ``box + 1``."""
        return self.box + 1

    @cached_property
    def coords(self) -> np.ndarray:
        """``(n*n, 2)`` float64 ``(kx, ky)`` in cycles/pixel."""
        c = lattice_coords_1d(self.box)
        ky, kx = np.meshgrid(c, c, indexing="ij")
        return np.stack([kx.ravel(), ky.ravel()], axis=1)

    @cached_property
    def radius_px(self) -> np.ndarray:
        """``(n*n,)`` distance from the origin in lattice pixels (Nyquist on the axes is ``box/2``)."""
        return np.linalg.norm(self.coords, axis=1) * self.box

    def circular_mask(self, radius_px: float | None = None) -> np.ndarray:
        """``(n*n,)`` bool: points with ``|k| <= radius_px`` lattice pixels (default Nyquist, box/2)."""
        r = self.box / 2 if radius_px is None else float(radius_px)
        return self.radius_px <= r + 1e-6

    @cached_property
    def partner(self) -> np.ndarray:
        """``(n*n,)`` flat index of ``-k`` for every point ``k``."""
        iy, ix = np.divmod(np.arange(self.n * self.n), self.n)
        return (self.box - iy) * self.n + (self.box - ix)

    @cached_property
    def is_half(self) -> np.ndarray:
        """``(n*n,)`` bool: one representative of every ``(k, -k)`` pair, the origin included.

        ``ky > 0``, or ``ky == 0`` and ``kx >= 0``.
        """
        iy, ix = np.divmod(np.arange(self.n * self.n), self.n)
        c = self.box // 2
        return (iy > c) | ((iy == c) & (ix >= c))

    @cached_property
    def origin_index(self) -> int:
        c = self.box // 2
        return c * self.n + c

    def half_points(self, mask: np.ndarray) -> "HalfPoints":
        """Split a point-symmetric ``mask`` into decoded half-points and their partners."""
        mask = np.asarray(mask, dtype=bool)
        if not np.array_equal(mask, mask[self.partner]):
            raise ValueError("mask is not point-symmetric")
        half = np.flatnonzero(mask & self.is_half)
        partner = self.partner[half]
        return HalfPoints(half=half, partner=partner, is_origin=half == self.origin_index)


@dataclass(frozen=True)
class HalfPoints:
    """Decoded lattice points: ``half[i]`` and its partner ``partner[i]`` (``-k``), flat indices.

    For the origin both are the same point (``is_origin``), which the loss counts once.
    """

    half: np.ndarray
    partner: np.ndarray
    is_origin: np.ndarray

    @property
    def n_half(self) -> int:
        return int(self.half.size)

    @property
    def n_points(self) -> int:
        """Distinct lattice points covered: every pair twice, the origin once."""
        return 2 * self.n_half - int(self.is_origin.sum())


def shell_index(box: int) -> np.ndarray:
    """``(D, D, D)`` integer shell (rounded radius in voxels of the centred transform)."""
    c = np.arange(box) - box // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    return np.rint(np.sqrt(x * x + y * y + z * z)).astype(np.int64)


def volume_frequency_grid(box: int) -> np.ndarray:
    """``(box, box, box, 3)`` frequencies ``(qx, qy, qz)`` in cycles/voxel of a centred ``[z, y, x]``
    transform of size ``box`` (index ``i`` has frequency ``(i - box//2) / box``)."""
    c = (np.arange(box) - box // 2) / box
    qz, qy, qx = np.meshgrid(c, c, c, indexing="ij")
    return np.stack([qx, qy, qz], axis=-1)
