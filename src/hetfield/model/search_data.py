"""The pose search's inputs, settings and results (:mod:`hetfield.model.pose_search`)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from hetfield.imaging.so3_grid import SO3Grid


@dataclass
class SearchData:
    """The images of whole particles, flat and grouped by particle (``image_particle`` non-decreasing).

    y              (n, M, 2) Fourier coefficients (re, im) of each image at the half-lattice points
                   ``k``, *not* centred (the search finds the origin)
    k              (M, 2) (kx, ky) cycles/px, sorted by radius
    factor         (n, M) what multiplies the volume's slice in the forward model (CTF × exposure)
    weight         (n, M) point weights: 0 where masked, 2 for a (k, -k) pair, 1 for the origin
    image_particle (n,) long, particle of each image in ``0 .. n_particles - 1``
    n_particles    P
    box            D, the image size in pixels (band radii are in lattice pixels, ``|k| · D``)
    image_weight   (n,) or None (ones): weight of each image in its particle's score (cos tilt)
    geometry       (n, 3, 3) or None (identity): image rotation = ``geometry @ particle rotation``
    """

    y: torch.Tensor
    k: torch.Tensor
    factor: torch.Tensor
    weight: torch.Tensor
    image_particle: torch.Tensor
    n_particles: int
    box: int
    image_weight: torch.Tensor | None = None
    geometry: torch.Tensor | None = None

    @property
    def n_images(self) -> int:
        return int(self.y.shape[0])

    def band(self, radius_px: float) -> int:
        """Number of leading (radius-sorted) points with ``|k| · box <= radius_px`` (at least 1)."""
        r = self.k.norm(dim=-1) * self.box
        return max(int(torch.searchsorted(r.contiguous(), torch.tensor(radius_px + 1e-4, dtype=r.dtype, device=r.device), right=True)), 1)

    def within(self, radius_px: float) -> SearchData:
        """The same images on the leading points ``|k| · box <= radius_px`` only (:meth:`band`)."""
        m = self.band(radius_px)
        return replace(self, y=self.y[:, :m], k=self.k[:m], factor=self.factor[:, :m], weight=self.weight[:, :m])

    def particle_offsets(self) -> np.ndarray:
        """(P + 1,) the first image of each particle, and ``n_images`` last."""
        counts = torch.bincount(self.image_particle, minlength=self.n_particles).cpu().numpy()
        return np.concatenate([[0], np.cumsum(counts)])

    def subset(self, particles: np.ndarray, offsets: np.ndarray | None = None) -> tuple[SearchData, torch.Tensor]:
        """The images of ``particles`` (sorted) as their own SearchData, and their image indices.

        ``offsets`` is :meth:`particle_offsets`, passed by callers that take many subsets.
        """
        offsets = self.particle_offsets() if offsets is None else offsets
        particles = np.asarray(particles, dtype=np.int64)
        counts = offsets[particles + 1] - offsets[particles]
        img = np.concatenate([np.arange(offsets[p], offsets[p + 1]) for p in particles]) if len(particles) else np.zeros(0, np.int64)
        ti = torch.as_tensor(img, dtype=torch.long, device=self.y.device)
        sub = SearchData(
            y=self.y[ti], k=self.k, factor=self.factor[ti], weight=self.weight[ti],
            image_particle=torch.as_tensor(np.repeat(np.arange(len(particles)), counts), device=self.y.device),
            n_particles=len(particles), box=self.box,
            image_weight=None if self.image_weight is None else self.image_weight[ti],
            geometry=None if self.geometry is None else self.geometry[ti],
        )
        return sub, ti


@dataclass(frozen=True)
class SearchSettings:
    """The coarse-to-fine ladder. Level ``l`` uses the band ``|k| <= radius_px[l]`` (lattice pixels)
    and grid level ``l`` (spacing ≈ ``58.6° / (base_nside · 2^l)``); ``len(radius_px)`` levels.

    The shift grid of level 0 spans ``±max_shift_px`` with ``shift_points`` per side; each later level
    tries the 3 × 3 offsets at half the previous step around each image's best shift.

    Each level keeps the ``n_keep`` best children of all candidates (a beam).
    """

    base_nside: int = 4
    radius_px: tuple[float, ...] = (6.0, 8.0, 10.0, 12.0, 14.0)
    n_keep: int = 8
    max_shift_px: float = 3.0
    shift_points: int = 7
    refine: str = "children"  # children (nested grid) | local (cube of offsets)
    chunk_images: int = 128

    def __post_init__(self):
        if not self.radius_px:
            raise ValueError("radius_px needs at least one level")
        if self.refine not in ("children", "local"):
            raise ValueError("refine must be 'children' or 'local'")
        if self.n_keep < 1:
            raise ValueError("n_keep must be positive")

    @property
    def n_levels(self) -> int:
        return len(self.radius_px)

    def shift_step_px(self, level: int) -> float:
        step0 = 2 * self.max_shift_px / (self.shift_points - 1) if self.shift_points > 1 else 0.0
        return step0 / (2**level)

    def final_spacing_deg(self) -> float:
        return SO3Grid(self.base_nside).spacing_deg(self.n_levels - 1)


@dataclass
class SearchResult:
    """rotation (P, K, 3, 3) best particle rotation per class; shift_px (n, K, 2) the best origin of
    every image under it; error (P, K) the weighted squared error there (last level's band);
    candidate_error (P, K, C) the kept candidates' errors at the last level (ascending), their
    rotations and shifts; n_values (P,) the weighted number of values the errors sum over (so that
    ``error / n_values`` estimates the noise variance per value where the fit is good)."""

    rotation: torch.Tensor
    shift_px: torch.Tensor
    error: torch.Tensor
    candidate_error: torch.Tensor
    candidate_rotation: torch.Tensor | None = None  # (P, K, C, 3, 3)
    candidate_shift_px: torch.Tensor | None = None  # (n, K, C, 2)
    n_values: torch.Tensor | None = None  # (P,) weighted count of the values in the last band
    seconds: dict = field(default_factory=dict)


