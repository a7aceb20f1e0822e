"""The imaging forward model on the decoded lattice points.

Predicted Hartley value of image ``i`` at lattice point ``k`` for class ``c``::

    pred = CTF_i(k)^(1 + premultiplied) * dose_filter_i(k)^(1 + dose_weighted) * H_c(k @ A_i, z)

compared with the data translated by ``+origin`` (which centres the particle), on the circular mask
intersected with the image's dose mask, each image weighted by ``cos(tilt)``.

Only one point of every ``(k, -k)`` pair is decoded (:class:`LatticePoints`): the field's Fourier
coefficient there gives the Hartley values at both. Points are sorted by radius, and every dose mask
is a radius cutoff, so a batch decodes only up to the largest radius any of its images keeps.
"""

from __future__ import annotations

import torch
from torch import nn

from hetfield.imaging.ctf import ctf_2d
from hetfield.imaging.exposure import dose_filter, dose_mask
from hetfield.imaging.lattice import Lattice


class LatticePoints(nn.Module):
    """Half of the circular mask's lattice points, sorted by radius, with their partners ``-k``."""

    def __init__(self, box: int, radius_px: float | None = None):
        super().__init__()
        import numpy as np

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
        """``q = [k, 0] @ A`` for ``rotation (n, 3, 3)`` → ``(n, m, 3)`` cycles/px."""
        k = self.k[:m] if m is not None else self.k
        return torch.einsum("mj,njd->nmd", k.to(rotation.dtype), rotation[:, :2, :])


def centre_data(y_k, y_mk, k, origin_px):
    """Translate data Hartley values by ``+origin`` (centring the particle), for ``k`` and ``-k``."""
    phi = 2 * torch.pi * (k[None] * origin_px[:, None, :]).sum(-1)
    c, s = torch.cos(phi), torch.sin(phi)
    return y_k * c + y_mk * s, y_mk * c - y_k * s


def image_factors(batch, points: LatticePoints, *, dose_weight: bool, dose_mask_on: bool, m: int | None = None):
    """CTF, exposure factor and point mask per image: each ``(n, m)``.

    The factor multiplying the field's slice accounts for inputs already multiplied by their CTF
    (``ctf_premultiplied``: CTF²) or already exposure-filtered (``dose_weighted``: filter²).
    """
    k = points.k[:m] if m is not None else points.k
    k = k[None].expand(batch.n_images, -1, -1)
    ctf = ctf_2d(
        k,
        batch.pixel_size_A,
        batch.defocus_u_A,
        batch.defocus_v_A,
        batch.defocus_angle_deg,
        batch.voltage_kV,
        batch.cs_mm,
        batch.amplitude_contrast,
        batch.phase_shift_deg,
        batch.ctf_bfactor_A2,
    ) * batch.ctf_scale[:, None]
    factor = torch.where(batch.ctf_premultiplied[:, None], ctf * ctf, ctf)
    if dose_weight:
        f = dose_filter(k, batch.pixel_size_A, batch.dose_e_per_A2, batch.voltage_kV)
        factor = factor * torch.where(batch.dose_weighted[:, None], f * f, f)
    if dose_mask_on:
        keep = dose_mask(k, batch.pixel_size_A, batch.dose_e_per_A2, batch.voltage_kV)
    else:
        keep = torch.ones_like(factor, dtype=torch.bool)
    return ctf, factor, keep
