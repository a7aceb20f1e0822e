"""The field prior's per-shell weights (train.field_prior.shell_prior) against the formulas by hand."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

import hetfield.train.field_prior as fp
from hetfield.model.points import LatticePoints

BOX = 16
F = 0.5  # the CTF · exposure factor of every decoded value


@pytest.fixture()
def model(monkeypatch):
    pts = LatticePoints(BOX)
    # A constant transfer over every point: <f²>_r = F² in every shell the batch observes.
    monkeypatch.setattr(fp, "transfer_of", lambda batch, k, **_: SimpleNamespace(factor=torch.full((batch.n_images, k.shape[0]), F), keep=torch.ones(batch.n_images, k.shape[0], dtype=torch.bool)))
    n_shells = int(BOX * 0.5 * 3**0.5) + 2
    return SimpleNamespace(points=pts, amplitude=torch.ones(n_shells), shape=SimpleNamespace(box=BOX))


def _batches(model, n_images=10):
    return [SimpleNamespace(extent=model.points.n_half, n_images=n_images)]


def test_weights_are_the_consensus_wiener_filter_and_tau2_fudge_divides_them(model):
    fsc = np.array([1.0, 0.99, 0.9, 0.6, 0.3, 0.1, 0.02, 0.05, 0.0])  # a chance rise at shell 7
    lam1, s1 = fp.shell_prior(model, _batches(model), fsc, n_images=100, n_images_fsc=50)
    lam4, s4 = fp.shell_prior(model, _batches(model), fsc, n_images=100, n_images_fsc=50, tau2_fudge=4.0)
    c = np.minimum.accumulate(fsc).clip(fp.FSC_FLOOR, 0.999)
    snr = 2 * c / (1 - c) * (100 / 50)  # the FSC of half the images: the whole set's SNR is twice
    np.testing.assert_allclose(lam1[:9].numpy(), F**2 / snr, rtol=1e-5)
    assert lam1[7] == pytest.approx(lam1[6])  # the running minimum: a chance rise is not signal
    np.testing.assert_allclose(lam4.numpy(), lam1.numpy() / 4, rtol=1e-5)  # RELION's T: the SNR × T
    observed = lam1 > 0
    assert observed[1:9].all()
    # The signal's share of the amplitude grows with the prior's SNR, never past one.
    assert (s4[observed] > s1[observed]).all() and (s4 <= 1).all()


def test_unobserved_shells_get_no_prior(model):
    pts = model.points
    extent = pts.count_within(4.4)  # the batch decodes shells 0-4 only
    lam, s = fp.shell_prior(model, [SimpleNamespace(extent=extent, n_images=10)], np.full(9, 0.5), n_images=10, n_images_fsc=10)
    assert (lam[:5] > 0).all() and (lam[5:] == 0).all()
    assert (s[5:] == 1).all()  # no data there: the profile is left as it was
