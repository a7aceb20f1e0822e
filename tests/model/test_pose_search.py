"""The pose search on noiseless data of an analytic volume: known poses are recovered, for single
particles and tilt series, and a tilt series' score is the weighted sum of its images' errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hetfield.analysis.pose_metrics import geodesic_deg
from hetfield.data.batching import ParticleBatches
from hetfield.imaging.shifts import translate_hartley_pair
from hetfield.imaging.transfer import transfer_of
from hetfield.model.fourier_grid import FourierGrid
from hetfield.model.points import LatticePoints
from hetfield.model.pose_search import refine_poses, search_poses
from hetfield.model.search_data import SearchSettings
from hetfield.train.abinit_search import search_data, tilt_geometry

from .synthetic import blob_transform, tilt_series_dataset


def _exact(q, c=0):
    f = blob_transform(q)
    return torch.stack([f.real, f.imag], -1).float()


def _batch(ds):
    points = LatticePoints(ds.box)
    batch = ParticleBatches(ds, points, ds.n_particles, shuffle=False, prefetch=False).make_batch(np.arange(ds.n_particles))
    geo = tilt_geometry(ds)
    data = search_data(batch, points, None if geo is None else torch.as_tensor(geo), ds.box, True, True, True)
    return batch, points, data


def _particle_rotations(ds):
    return np.asarray(ds.arrays["rotation"])[np.asarray(ds.offsets)[:-1]]


def test_fourier_grid_slices_match_the_analytic_transform():
    grid = FourierGrid.from_function(lambda q: _exact(q)[None], 24, 12.0, oversample=2)
    q = torch.rand(2000, 3, generator=torch.Generator().manual_seed(0)) - 0.5
    q = q[q.norm(dim=-1) * 24 < 11.5]
    a, b = _exact(q), grid(q, 0)
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999
    # Hermitian symmetry is built in: F(-q) = conj F(q).
    assert torch.allclose(grid(-q, 0) * torch.tensor([1.0, -1.0]), b, atol=1e-3 * float(b.abs().max()))


@pytest.mark.parametrize("n_tilts", [1, 5])
def test_search_recovers_known_poses_on_noiseless_data(n_tilts):
    ds = tilt_series_dataset(n_particles=12, n_tilts=n_tilts, box=24, seed=3)
    batch, _, data = _batch(ds)
    settings = SearchSettings(base_nside=4, radius_px=(5, 7, 9, 11, 12), max_shift_px=2.0)
    grid = FourierGrid.from_function(lambda q: _exact(q)[None], ds.box, 12.0)
    res = search_poses(grid, data, 1, settings)
    err = geodesic_deg(res.rotation[:, 0].numpy(), _particle_rotations(ds))
    shift = (res.shift_px[:, 0] - batch.origin_px).norm(dim=-1)
    assert settings.final_spacing_deg() < 1.0
    assert np.median(err) < 2.0 and err.max() < 4.0, err
    assert float(shift.max()) < 0.15
    # The best candidate is the best: its error is the smallest kept.
    assert torch.all(res.candidate_error[:, 0, 0] <= res.candidate_error[:, 0, 1:].min(-1).values + 1e-3)


def test_a_map_reconstructed_at_the_true_poses_gives_them_back():
    """The direct inversion (the low-resolution start's map, and benchmarks/abinit.py's bound):
    noiseless tilt series reconstructed at their poses match the analytic volume, and the search
    against that map finds the poses again."""
    from hetfield.model.abinit_lowres import reconstruct

    ds = tilt_series_dataset(n_particles=12, n_tilts=5, box=24, seed=6)
    batch, _, data = _batch(ds)
    true = torch.as_tensor(_particle_rotations(ds), dtype=torch.float32)
    maps = reconstruct(data, true, batch.origin_px, radius_px=9.0)
    q = torch.rand(3000, 3, generator=torch.Generator().manual_seed(1)) - 0.5
    q = q[q.norm(dim=-1) * 24 < 8.0]
    assert np.corrcoef(_exact(q).ravel(), maps(q, 0).ravel())[0, 1] > 0.95
    res = search_poses(maps, data, 1, SearchSettings(base_nside=4, radius_px=(5, 6, 7, 8, 9), max_shift_px=2.0))
    assert np.median(geodesic_deg(res.rotation[:, 0].numpy(), true.numpy())) < 2.0
    # Two classes: each map holds only its own particles (an empty class is an empty map).
    two = reconstruct(data, true, batch.origin_px, torch.zeros(ds.n_particles, dtype=torch.long), 2, radius_px=9.0)
    assert two.n_classes == 2 and float(two.values[1].abs().max()) == 0.0
    assert torch.allclose(two.values[0], maps.values[0])


def test_two_classes_are_searched_separately():
    """Class 1 is class 0 turned by a known rotation: its poses are the truth times that rotation."""
    ds = tilt_series_dataset(n_particles=8, n_tilts=1, box=24, seed=4)
    _, _, data = _batch(ds)
    from scipy.spatial.transform import Rotation

    turn = torch.as_tensor(Rotation.from_euler("zyz", [40, 70, -20], degrees=True).as_matrix(), dtype=torch.float32)
    # V1(x) = V0(x @ turn^T): F1(q) = F0(q @ turn^T), seen at R @ turn.
    grid = FourierGrid.from_function(lambda q: torch.stack([_exact(q), _exact(q @ turn.T)]), ds.box, 12.0)
    res = search_poses(grid, data, 2, SearchSettings(radius_px=(5, 7, 9, 11, 12), max_shift_px=2.0))
    true = _particle_rotations(ds)
    assert np.median(geodesic_deg(res.rotation[:, 0].numpy(), true)) < 2.0
    assert np.median(geodesic_deg(res.rotation[:, 1].numpy(), true @ turn.numpy())) < 2.0
    # Both fit the images equally well: residuals are a few % of the data's energy in the band.
    energy = (data.weight * (data.y**2).sum(-1))[:, : data.band(12)].sum(1)
    assert float((res.error.max(1).values / energy).max()) < 0.05


def test_tilt_series_score_is_the_weighted_sum_over_its_tilts():
    ds = tilt_series_dataset(n_particles=3, n_tilts=5, box=24, seed=5, noise=0.5)
    batch, points, data = _batch(ds)
    assert data.geometry is not None and torch.allclose(data.geometry[0], torch.eye(3), atol=1e-5)
    true = torch.as_tensor(_particle_rotations(ds), dtype=torch.float32)
    radius = 10.0
    res = refine_poses(_exact, data, true, batch.origin_px, 0, [(0.0, 0.0, radius)], n_keep=1)
    # Brute force, image by image, with the renderer's own centring, CTF, dose and Hartley pairs.
    m = batch.extent
    yk, ymk = translate_hartley_pair(batch.y_k, batch.y_mk, points.k[:m], batch.origin_px)
    t = transfer_of(batch, points.k[:m], dose_weight=True, dose_mask=True)
    factor, keep = t.factor, t.keep
    q = points.frequencies_3d(batch.rotation, m)
    f = _exact(q)
    hk, hmk = f[..., 0] - f[..., 1], f[..., 0] + f[..., 1]
    band = (points.radius_px[:m] <= radius + 1e-4).float() * keep
    se = (band * ((factor * hk - yk) ** 2 + points.partner_weight[:m] * (factor * hmk - ymk) ** 2)).sum(1)
    per_particle = torch.zeros(3).index_add_(0, batch.image_particle, torch.cos(torch.deg2rad(batch.stage_tilt_deg)) * se)
    assert torch.allclose(res.error[:, 0], per_particle, rtol=1e-3)
    # A tilted image alone would be scored at its own rotation G_i A, which the geometry supplies.
    assert not torch.allclose(batch.rotation[1], batch.rotation[0])
