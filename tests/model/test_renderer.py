"""The forward model against an analytic volume: slice theorem, rotation, origin, CTF, exposure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hetfield.data.batching import ParticleBatches
from hetfield.imaging.shifts import translate_hartley_pair
from hetfield.imaging.transfer import transfer_of
from hetfield.model.decode import decode_volumes
from hetfield.model.points import LatticePoints
from hetfield.model.reconstruction import Reconstruction
from hetfield.model.shape import ModelShape

from .synthetic import blob_transform, blob_volume, tilt_series_dataset


def _render_analytic(batch, points, rotation):
    q = points.frequencies_3d(rotation.double(), batch.extent)
    f = blob_transform(q)
    t = transfer_of(batch, points.k[: batch.extent], dose_weight=True, dose_mask=True)
    factor, keep = t.factor, t.keep
    factor = factor.double()
    return factor * (f.real - f.imag), factor * (f.real + f.imag), keep


def _corr(a, b):
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.mark.parametrize("premultiplied, dose_weighted", [(False, False), (True, False), (False, True)])
def test_rendered_slices_match_images(premultiplied, dose_weighted):
    ds = tilt_series_dataset(n_particles=4, ctf_premultiplied=premultiplied, dose_weighted=dose_weighted)
    points = LatticePoints(ds.box)
    batch = ParticleBatches(ds, points, 4, shuffle=False, prefetch=False).make_batch(np.arange(4))
    pk, pmk, _ = _render_analytic(batch, points, batch.rotation)
    yk, ymk = translate_hartley_pair(batch.y_k.double(), batch.y_mk.double(), points.k[: batch.extent].double(), batch.origin_px.double())
    cc = [_corr(np.r_[pk[i], pmk[i]], np.r_[yk[i], ymk[i]]) for i in range(batch.n_images)]
    assert min(cc) > 0.99
    # Each convention, broken on purpose, breaks the match.
    yk2, ymk2 = translate_hartley_pair(batch.y_k.double(), batch.y_mk.double(), points.k[: batch.extent].double(), -batch.origin_px.double())
    assert np.mean([_corr(np.r_[pk[i], pmk[i]], np.r_[yk2[i], ymk2[i]]) for i in range(batch.n_images)]) < 0.9
    pk3, pmk3, _ = _render_analytic(batch, points, batch.rotation.transpose(1, 2))
    assert np.mean([_corr(np.r_[pk3[i], pmk3[i]], np.r_[yk[i], ymk[i]]) for i in range(batch.n_images)]) < 0.9


def test_decode_volume_keeps_every_fourier_line():
    """Decoding the analytic transform returns the volume itself (Hydra zeroed the central line)."""
    box = 24
    model = Reconstruction(ModelShape(box=box, n_particles=1, n_images=1, zdim=0, conf_estimation="none", field_hidden=8, field_layers=1, pe_features=4))

    def analytic(q, z):
        f = blob_transform(q)
        return torch.stack([f.real, f.imag], -1).float()[:, None]

    model.field_values = analytic
    vol = decode_volumes(model, None, 0)[0]
    truth = blob_volume(box)
    assert _corr(vol, truth) > 0.999
    # every z-plane keeps its mean (a zeroed central Fourier line would make them all zero-mean)
    assert np.allclose(vol.mean(axis=(1, 2)), truth.mean(axis=(1, 2)), atol=0.02 * truth.max())


def test_batches_hold_whole_particles_with_ragged_tilts():
    ds = tilt_series_dataset(n_particles=7, n_tilts=6, ragged=True, seed=3)
    points = LatticePoints(ds.box)
    loader = ParticleBatches(ds, points, 3, seed=5)
    seen = []
    for b in loader.epoch(0):
        counts = np.bincount(b.image_particle.numpy())
        assert counts.tolist() == np.diff(ds.offsets)[b.particles.numpy()].tolist()
        assert b.n_slots == counts.max()
        # images come with their own rows of the cache, in particle order
        assert np.array_equal(b.images.numpy(), np.concatenate([np.arange(ds.offsets[p], ds.offsets[p + 1]) for p in b.particles.numpy()]))
        seen += b.particles.tolist()
    assert sorted(seen) == list(range(7))
    # the order is seeded per epoch: reproducible, and different between epochs
    assert [b.particles.tolist() for b in loader.epoch(1)] == [b.particles.tolist() for b in ParticleBatches(ds, points, 3, seed=5).epoch(1)]
    assert [b.particles.tolist() for b in loader.epoch(1)] != [b.particles.tolist() for b in loader.epoch(2)]
    # resuming at a step yields the remaining batches of that epoch
    all_batches = [b.particles.tolist() for b in loader.epoch(4)]
    assert [b.particles.tolist() for b in loader.epoch(4, start_particle=3)] == all_batches[1:]
