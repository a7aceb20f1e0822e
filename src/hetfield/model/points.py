"""The decoded lattice points: half of the circular mask, sorted by radius, with their partners.

Only one point of every ``(k, -k)`` pair is decoded: the field's Fourier coefficient there gives the
Hartley values at both. Points are sorted by radius, and every dose mask is a radius cutoff, so a
batch decodes only up to the largest radius any of its images keeps (``Batch.extent``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hetfield.imaging.lattice import Lattice
from hetfield.imaging.precision import at_least_fp32, full_precision


class LatticePoints(nn.Module):
    """Half of the circular mask's lattice points, sorted by radius, with their partners ``-k``."""

    def __init__(self, box: int, radius_px: float | None = None):
        super().__init__()
        lat = Lattice(box)
        hp = lat.half_points(lat.circular_mask(radius_px))
        order = np.argsort(lat.radius_px[hp.half], kind="stable")
        half, partner, is_origin = hp.half[order], hp.partner[order], hp.is_origin[order]
        self.box = box
        self.register_buffer("k", torch.as_tensor(lat.coords[half], dtype=torch.float32), persistent=False)
        self.register_buffer("half_index", torch.as_tensor(half, dtype=torch.long), persistent=False)
        self.register_buffer("partner_index", torch.as_tensor(partner, dtype=torch.long), persistent=False)
        # The origin is its own partner: count it once.
        self.register_buffer("partner_weight", torch.as_tensor(~is_origin, dtype=torch.float32), persistent=False)
        self.register_buffer("radius_px", torch.as_tensor(lat.radius_px[half], dtype=torch.float32), persistent=False)
        self.half_index_np, self.partner_index_np = half, partner

    @property
    def n_half(self) -> int:
        return int(self.k.shape[0])

    def frequencies_3d(self, rotation: torch.Tensor, m: int | None = None) -> torch.Tensor:
        """The rotated lattice ``q = [k, 0] @ A`` for ``rotation (n, 3, 3)`` → ``(n, m, 3)`` cycles/px,
        in fp32 at least, autocast or not (:mod:`hetfield.imaging.precision`)."""
        k = self.k[:m] if m is not None else self.k
        rotation = at_least_fp32(rotation)
        with full_precision(rotation):
            return torch.einsum("mj,njd->nmd", k.to(rotation.dtype), rotation[:, :2, :])

    def count_within(self, radius_px: float) -> int:
        """How many of the radius-sorted points lie within ``radius_px`` (at least one)."""
        return max(int((self.radius_px <= radius_px + 1e-6).sum()), 1)
