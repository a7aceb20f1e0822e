"""The EM class start's per-particle statistics: packed (symmetric, float32), the same numbers as dense.

The dense float64 blocks it used to collect held 3 MB a particle at the peak: 3 GB of a K = 2 SPA
run's 3.5 GB (1 296 images, 1 000 fitted particles).
"""

from __future__ import annotations

import numpy as np
import torch

import hetfield.train.class_start as class_start
from hetfield.data.batching import ParticleBatches
from hetfield.train.config import TrainConfig
from hetfield.train.factory import build_model

from .synthetic import tilt_series_dataset


def test_packed_statistics_equal_the_dense_ones_in_a_quarter_of_the_memory():
    ds = tilt_series_dataset(n_particles=5, n_tilts=4, box=24, noise=0.5, seed=3)
    model, _ = build_model(ds, TrainConfig(n_classes=2, zdim=0, field_hidden=16, field_layers=1, pe_features=8, device="cpu"))
    loader = ParticleBatches(ds, model.points, 2, shuffle=False, prefetch=False)
    grid, n_low = class_start._lowres_grid(model, ds.box, torch.device("cpu"))
    dense = [class_start._batch_statistics(model, b, grid, n_low, True, True) for b in loader.epoch(0)]
    a, b, yy = (torch.cat([d[i] for d in dense]) for i in range(3))
    stats = class_start.LowResStatistics(model, loader.epoch(0), ds.box, True, True, torch.device("cpu"), n_particles=5)
    j = grid.shape[0]
    assert stats.packed.dtype == torch.float32 and stats.packed.shape == (5, j * (j + 1) // 2)
    assert stats.packed.element_size() * stats.packed.shape[1] <= 4 * j * j / 2 + 4 * j  # vs 8·J² dense float64
    weights = torch.rand(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expect = torch.einsum("pk,pjl->kjl", weights, a.double())
    assert torch.allclose(stats.A(weights), expect, rtol=1e-5, atol=1e-5 * float(expect.abs().max()))
    maps = torch.randn(2, j, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = class_start.residual_energy(a, b, yy, maps)
    assert torch.allclose(stats.residual_energy(maps), ref, rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    # the factor model's quadratic forms, from the packed triangles
    vectors = maps.T[:, :2]
    expect = torch.einsum("ja,pjl,lb->pab", vectors, a.double(), vectors)
    assert torch.allclose(stats.quadratic(vectors), expect, rtol=1e-4, atol=1e-4 * float(expect.abs().max()))
    # Without a size given (tests, small sets) the arrays are collected: the same numbers.
    collected = class_start.LowResStatistics(model, loader.epoch(0), ds.box, True, True, torch.device("cpu"))
    assert torch.equal(collected.packed, stats.packed) and np.array_equal(collected.particles.numpy(), np.arange(5))
