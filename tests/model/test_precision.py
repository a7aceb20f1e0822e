"""Under bf16 autocast the phases, rotated frequencies and Fourier features stay fp32.

CPU autocast (bf16) stands in for the GPU's: the same ops are cast on both. The reference for the
old error is the same computation left to autocast (what the code did before imaging.precision).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hetfield.imaging.backprojection import backproject, backprojection_grid, backprojection_phase
from hetfield.imaging.rotations import random_rotations
from hetfield.imaging.shifts import translate_hartley_pair
from hetfield.model.fields import FourierFeatures, NeuralFields
from hetfield.model.points import LatticePoints


def _bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _setup(box: int, n: int = 4):
    pts = LatticePoints(box)
    rot = torch.as_tensor(random_rotations(n, np.random.default_rng(box)), dtype=torch.float32)
    return pts, rot


def _wrapped(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest phase difference, modulo 2π."""
    d = torch.remainder(a.double() - b.double() + math.pi, 2 * math.pi) - math.pi
    return float(d.abs().max())


@pytest.mark.parametrize("box", [32, 64, 128])
def test_feature_phases_under_autocast_equal_fp32_and_the_bf16_ones_were_wrong(box):
    pts, rot = _setup(box)
    ff = FourierFeatures(64, box)
    q32 = pts.frequencies_3d(rot)
    feat32 = ff(q32)
    with _bf16():
        q = pts.frequencies_3d(rot)
        feat = ff(q)
        # What autocast made of the same products before: q and the phases 2π q·b in bf16.
        q_old = torch.einsum("mj,njd->nmd", pts.k, rot[:, :2, :])
        phase_old = 2 * math.pi * (q_old @ ff.b)
    assert q.dtype == feat.dtype == torch.float32
    assert torch.allclose(q, q32, rtol=0, atol=1e-7)
    assert torch.allclose(feat, feat32, rtol=0, atol=1e-6)
    phase32 = 2 * math.pi * (q32.double() @ ff.b.double())
    assert phase_old.dtype == torch.bfloat16
    old_error = _wrapped(phase_old.float(), phase32)
    assert old_error > 0.3  # measured 0.5 / 1.2 / 2.4 rad at box 32 / 64 / 128
    new_error = _wrapped(torch.atan2(feat[..., :64], feat[..., 64:128]), phase32)  # the phase the features encode
    assert new_error < 1e-3, new_error


@pytest.mark.parametrize("box", [32, 128])
def test_backprojection_phases_and_sums_under_autocast_equal_fp32(box):
    pts, rot = _setup(box)
    grid = backprojection_grid(box, 8)
    q32 = pts.frequencies_3d(rot)
    theta32 = backprojection_phase(q32, grid)
    h_k, h_mk = torch.randn(2, rot.shape[0], pts.n_half, generator=torch.Generator().manual_seed(1))
    w = torch.ones_like(h_k)
    bp32 = backproject(h_k, h_mk, w, q32, grid)
    with _bf16():
        q = pts.frequencies_3d(rot)
        theta = backprojection_phase(q, grid)
        bp = backproject(h_k, h_mk, w, q, grid)
        theta_old = 2 * torch.pi * (torch.einsum("mj,njd->nmd", pts.k, rot[:, :2, :]) @ grid.T)
    assert theta.dtype == bp.dtype == torch.float32
    assert torch.allclose(theta, theta32, rtol=0, atol=1e-5)
    assert torch.allclose(bp, bp32, rtol=1e-6, atol=1e-4)
    assert _wrapped(theta_old.float(), theta32) > 0.3


def test_shift_phases_and_low_precision_inputs_stay_fp32():
    """A guard: the centring phases are elementwise (autocast leaves them alone) and stay so."""
    pts, _ = _setup(64)
    h = torch.randn(2, 3, pts.n_half, generator=torch.Generator().manual_seed(2))
    origin = torch.tensor([[20.3, -17.9], [5.5, 31.25], [-30.1, 0.7]])
    ref = translate_hartley_pair(h[0], h[1], pts.k, origin)
    with _bf16():
        got = translate_hartley_pair(h[0], h[1], pts.k, origin)
        q = pts.frequencies_3d(torch.eye(3).expand(2, 3, 3).bfloat16())  # a half-precision pose
    assert q.dtype == torch.float32
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, ref))


def test_only_the_mlp_runs_in_bf16():
    torch.manual_seed(0)
    pts, rot = _setup(32, 3)
    fields = NeuralFields(32, n_classes=2, zdim=2, hidden=32, layers=2, n_features=16)
    z = torch.randn(3, 2)
    q = pts.frequencies_3d(rot)
    ref = fields(q, z)
    with _bf16():
        out = fields(q, z)
    assert out.dtype == torch.bfloat16  # the networks did run in bf16 ...
    err = (out.float() - ref).abs().max() / ref.abs().max()
    assert 0 < err < 0.05  # ... and differ from fp32 by bf16's rounding, not by noise
