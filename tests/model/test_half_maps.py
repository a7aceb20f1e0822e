"""Half maps (model/half_maps.py): the Wiener filter from the halves' FSC keeps what the halves agree
on and suppresses the shells where noise dominates, so a filtered half map is closer to the truth
than the direct inversion it comes from."""

from __future__ import annotations

import math

import numpy as np
import torch

from hetfield.imaging.rotations import random_rotations
from hetfield.model.half_maps import HalfMaps

BOX, RADIUS = 24, 10.0


def _truth(q: torch.Tensor) -> torch.Tensor:
    """``(N, 2)`` Fourier coefficients at ``q (N, 3)`` cycles/px of three Gaussian blobs (σ 1.5 px)."""
    centres = torch.tensor([[0.0, 0.0, 0.0], [4.0, 1.0, -2.0], [-3.0, 3.0, 2.0]])
    amp = torch.exp(-2 * math.pi**2 * 1.5**2 * (q * q).sum(-1))
    phase = -2 * math.pi * q @ centres.T  # (N, 3)
    return torch.stack([amp * torch.cos(phase).sum(-1), amp * torch.sin(phase).sum(-1)], -1)


def test_wiener_half_maps_beat_direct_inversion_and_their_fsc_falls_with_resolution():
    gen = torch.Generator().manual_seed(0)
    c = torch.arange(-BOX // 2, BOX // 2, dtype=torch.float32) / BOX
    ky, kx = torch.meshgrid(c, c, indexing="ij")
    k = torch.stack([kx, ky], -1).reshape(-1, 2)
    k = k[k.norm(dim=-1) * BOX <= RADIUS]
    k3 = torch.cat([k, torch.zeros(len(k), 1)], 1)
    maps = HalfMaps(1, BOX, RADIUS)
    rot = torch.as_tensor(random_rotations(600, np.random.default_rng(1)), dtype=torch.float32)
    for i in range(600):
        q = k3 @ rot[i]
        y = _truth(q) + 0.5 * torch.randn(len(k), 2, generator=gen)
        maps.accumulator(0, i % 2).add(q, y, torch.ones(len(k)))
    filtered, fsc = maps.wiener()
    assert fsc.shape[0] == 1 and fsc[0, 2] > 0.9 and fsc[0, 9] < 0.5  # signal at low resolution, noise at high

    acc = maps.accumulator(0, 0)
    g = acc.den.shape[0]
    cc = (torch.arange(g, dtype=torch.float32) - acc.half) / (acc.oversample * BOX)
    qz, qy, qx = torch.meshgrid(cc, cc, cc, indexing="ij")
    q = torch.stack([qx, qy, qz], -1).reshape(-1, 3)
    inside = q.norm(dim=-1) * BOX <= RADIUS
    truth = _truth(q).T.reshape(2, g, g, g)
    raw = acc.volume().values[0]
    wiener = filtered[0].values[0]
    err = lambda v: float(((v - truth) ** 2).sum(0).reshape(-1)[inside].sum())  # noqa: E731
    assert err(wiener) < 0.5 * err(raw)
    # nothing beyond the band's last whole shell (half a pixel more: the search interpolates there)
    beyond = q.norm(dim=-1) * BOX > RADIUS + 0.501
    assert float(wiener.abs().reshape(2, -1)[:, beyond].max()) == 0.0 and float(wiener.abs().reshape(2, -1)[:, ~beyond].max()) > 0
