"""Uniform grids on SO(3) and on image shifts, with the hierarchy a coarse-to-fine search walks.

SO(3) grid at level ``l``: viewing directions at the centres of the nested HEALPix pixels of
``nside = base_nside * 2**l`` (``12 nside²`` equal-area pixels, Górski et al. 2005) times ``6 nside``
in-plane angles ``psi_j = (j + 1/2) * 2π / (6 nside)``. Directions are equal-area and psi is
uniform, so the product samples the Haar measure uniformly (``dφ sinθ dθ dψ``). The spacing is about
``58.6° / nside`` in direction and ``60° / nside`` in psi; ``nside = 4`` gives 4 608 rotations at ~15°.

Index of a rotation: ``pixel * n_psi + j``. Its **children** at level ``l + 1`` are the 4 nested
sub-pixels ``4 * pixel + a`` times the 2 sub-intervals ``2 j + b`` of its psi interval: 8 rotations
that tile the parent's cell, so walking children never leaves a cell and never revisits one.

Matrices follow :mod:`hetfield.imaging.rotations` (RELION): a grid point ``(θ, φ, ψ)`` is
``euler_to_matrix(rot=φ, tilt=θ, psi=ψ)``, whose third row is the viewing direction
``(sinθ cosφ, sinθ sinφ, cosθ)`` in the volume frame.

Shift grids are square lattices of ``(x, y)`` pixel offsets; a search narrows them by halving the step
around its best shift (:func:`local_shift_offsets`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from hetfield.imaging.rotations import euler_to_matrix, rotvec_to_matrix

# Face layout of the HEALPix base pixels (ring number and longitude index of each face's corner).
_JRLL = np.array([2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4])
_JPLL = np.array([1, 3, 5, 7, 0, 2, 4, 6, 1, 3, 5, 7])


def _check_nside(nside: int) -> None:
    if nside < 1 or nside & (nside - 1):
        raise ValueError(f"nside must be a power of 2, got {nside}")


def _deinterleave(v: np.ndarray) -> np.ndarray:
    """The even bits of ``v`` packed together (the x coordinate of a nested index)."""
    out = np.zeros_like(v)
    for b in range(31):
        out |= ((v >> (2 * b)) & 1) << b
    return out


@lru_cache(maxsize=16)
def _healpix_nested_angles(nside: int) -> tuple[np.ndarray, np.ndarray]:
    theta, phi = _compute_nested_angles(nside)
    theta.flags.writeable = False
    phi.flags.writeable = False
    return theta, phi


def healpix_nested_angles(nside: int) -> tuple[np.ndarray, np.ndarray]:
    """``(theta, phi)`` in radians of the ``12 nside²`` nested-scheme pixel centres, in index order."""
    _check_nside(nside)
    return _healpix_nested_angles(int(nside))


def _compute_nested_angles(nside: int) -> tuple[np.ndarray, np.ndarray]:
    npix = 12 * nside * nside
    pix = np.arange(npix, dtype=np.int64)
    face, ipf = np.divmod(pix, nside * nside)
    ix, iy = _deinterleave(ipf), _deinterleave(ipf >> 1)
    jr = _JRLL[face] * nside - ix - iy - 1  # ring number, 1 .. 4 nside - 1
    nr = np.where(jr < nside, jr, np.where(jr > 3 * nside, 4 * nside - jr, nside))
    z = np.where(
        jr < nside,
        1 - nr * nr / (3.0 * nside * nside),
        np.where(jr > 3 * nside, nr * nr / (3.0 * nside * nside) - 1, (2 * nside - jr) * 2.0 / (3.0 * nside)),
    )
    kshift = np.where((jr >= nside) & (jr <= 3 * nside), (jr - nside) & 1, 0)
    jp = (_JPLL[face] * nr + ix - iy + 1 + kshift) // 2
    jp = np.where(jp > 4 * nside, jp - 4 * nside, jp)
    jp = np.where(jp < 1, jp + 4 * nside, jp)
    phi = (jp - (kshift + 1) * 0.5) * (math.pi / 2 / nr)
    return np.arccos(np.clip(z, -1, 1)), phi


def healpix_vectors(nside: int) -> np.ndarray:
    """``(12 nside², 3)`` unit vectors of the nested pixel centres."""
    theta, phi = healpix_nested_angles(nside)
    return np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=1)


class SO3Grid:
    """The hierarchy of rotation grids ``level = 0, 1, …`` above a base ``nside`` (see module doc)."""

    def __init__(self, base_nside: int = 4):
        _check_nside(base_nside)
        self.base_nside = int(base_nside)

    def nside(self, level: int) -> int:
        return self.base_nside << level

    def n_psi(self, level: int) -> int:
        return 6 * self.nside(level)

    def size(self, level: int) -> int:
        """Rotations at ``level``: ``12 nside² × 6 nside``."""
        n = self.nside(level)
        return 12 * n * n * 6 * n

    def spacing_deg(self, level: int) -> float:
        """Nominal angular spacing: the square root of a pixel's solid angle (≈ the psi step)."""
        return math.degrees(math.sqrt(4 * math.pi / (12 * self.nside(level) ** 2)))

    def euler_deg(self, level: int, index) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """RELION ``(rot, tilt, psi)`` in degrees of grid points ``index`` (any integer array)."""
        index = np.asarray(index, dtype=np.int64)
        n_psi = self.n_psi(level)
        if index.size and (index.min() < 0 or index.max() >= self.size(level)):
            raise IndexError(f"rotation index out of range for level {level} ({self.size(level)} rotations)")
        pix, j = np.divmod(index, n_psi)
        theta, phi = healpix_nested_angles(self.nside(level))
        psi = (j + 0.5) * (360.0 / n_psi)
        return np.degrees(phi[pix]), np.degrees(theta[pix]), psi

    def matrices(self, level: int, index=None) -> np.ndarray:
        """``index.shape + (3, 3)`` RELION matrices (all of the level's rotations when ``index`` is None)."""
        if index is None:
            return _all_matrices(self.base_nside, level).copy()
        return euler_to_matrix(*self.euler_deg(level, index))

    def children(self, level: int, index) -> np.ndarray:
        """``index.shape + (8,)`` indices at ``level + 1`` of the rotations tiling each one's cell."""
        index = np.asarray(index, dtype=np.int64)
        n_psi = self.n_psi(level)
        pix, j = np.divmod(index, n_psi)
        sub_pix = 4 * pix[..., None] + np.arange(4)  # (..., 4)
        sub_psi = 2 * j[..., None] + np.arange(2)  # (..., 2)
        child = sub_pix[..., :, None] * (2 * n_psi) + sub_psi[..., None, :]
        return child.reshape(index.shape + (8,))

    def parent(self, level: int, index) -> np.ndarray:
        """Index at ``level - 1`` of the cell containing each rotation of ``level`` (inverse of children)."""
        if level < 1:
            raise ValueError("level 0 has no parent level")
        index = np.asarray(index, dtype=np.int64)
        pix, j = np.divmod(index, self.n_psi(level))
        return (pix // 4) * self.n_psi(level - 1) + j // 2


@lru_cache(maxsize=8)
def _all_matrices(base_nside: int, level: int) -> np.ndarray:
    m = SO3Grid(base_nside).matrices(level, np.arange(SO3Grid(base_nside).size(level)))
    m.flags.writeable = False
    return m


def local_rotation_offsets(step_deg: float, reach: int = 1) -> np.ndarray:
    """``((2 reach + 1)³, 3, 3)`` rotations ``exp(step · ω)``, ``ω`` on the integer cube ``[-reach, reach]³``.

    A uniform neighbourhood of the identity (index ``len // 2`` is the identity) for local search
    around a rotation ``A`` as ``offsets @ A`` (bi-invariant metric: left or right is the same ball).
    """
    r = np.arange(-reach, reach + 1)
    w = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3).astype(np.float64)
    return rotvec_to_matrix(w * math.radians(step_deg))


def shift_grid(max_shift_px: float, n_per_side: int = 7) -> np.ndarray:
    """``(n², 2)`` ``(x, y)`` shifts on a square grid of ``n_per_side`` points spanning ``±max_shift_px``."""
    if n_per_side < 1:
        raise ValueError("n_per_side must be positive")
    c = np.linspace(-max_shift_px, max_shift_px, n_per_side) if n_per_side > 1 else np.zeros(1)
    y, x = np.meshgrid(c, c, indexing="ij")
    return np.stack([x.ravel(), y.ravel()], axis=1)


def local_shift_offsets(step_px: float) -> np.ndarray:
    """``(9, 2)`` offsets ``{-step, 0, step}²`` (index 4 is zero)."""
    return shift_grid(step_px, 3)


def angular_distance_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Geodesic distance in degrees between rotation matrices ``a (..., 3, 3)`` and ``b (..., 3, 3)``."""
    tr = np.einsum("...ij,...ij->...", np.asarray(a, np.float64), np.asarray(b, np.float64))
    return np.degrees(np.arccos(np.clip((tr - 1) / 2, -1.0, 1.0)))
