"""Unit tests of the metrics, latent-space tools and volume post-processing (no training)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from hetfield.analysis import latent as L
from hetfield.analysis import metrics as M
from hetfield.analysis import volumes as V


def _blob(box=24, centre=(0, 0, 0), sigma=3.0):
    c = np.arange(box) - box // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    return np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) / (2 * sigma**2)).astype(np.float32)


def _chiral(box=24):
    return _blob(box, (5, 0, 0), 2) + 0.8 * _blob(box, (0, 5, 0), 2) + 0.6 * _blob(box, (0, 0, 5), 2)


def test_fsc_identical_is_one_and_noise_is_low():
    rng = np.random.default_rng(0)
    v = _chiral() + 0.05 * rng.normal(size=(24,) * 3).astype(np.float32)
    f = M.fsc(v, v, pixel_size_A=5.0)
    assert np.allclose(f.fsc, 1.0)
    assert f.reaches_nyquist(0.143) and f.resolution_A(0.143) == pytest.approx(10.0)
    a, b = rng.normal(size=(2, 24, 24, 24))
    g = M.fsc(a, b)
    assert np.abs(g.fsc[2:]).max() < 0.3


def test_fsc_crossing_is_interpolated():
    f = M.FSC(freq=np.arange(5) / 8, fsc=np.array([1.0, 0.9, 0.7, 0.3, 0.1]), pixel_size_A=2.0)
    # 0.5 lies half-way between shells 2 (0.7) and 3 (0.3)
    assert f.crossing(0.5) == pytest.approx(2.5 / 8)
    assert f.resolution_A(0.5) == pytest.approx(2.0 / (2.5 / 8))
    assert f.at(2.5 / 8) == pytest.approx(0.5)


def test_masked_correlation_and_matching():
    a, b = _blob(), _blob(centre=(4, 0, 0))
    assert M.masked_correlation(a, a) == pytest.approx(1.0)
    assert M.masked_correlation(a, -a) == pytest.approx(-1.0)
    assert M.masked_correlation(a, np.zeros_like(a)) == 0.0
    assert M.masked_correlation(a, b, M.soft_sphere_mask(24)) < 0.9
    assert M.match_best(np.array([[0.1, 0.9], [0.8, 0.2]])) == [(0, 1), (1, 0)]
    assert M.ari([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0
    assert M.abs_spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(1.0)
    assert M.abs_spearman([1, 1, 1], [1, 2, 3]) is None


def test_flip_lowpass_invert():
    v = _chiral()
    f = V.flip_hand(v)
    assert np.array_equal(V.flip_hand(f), v)
    assert f[12, 12, 12] == v[12, 12, 12]  # the centre stays the centre
    assert M.masked_correlation(f, v) < 0.9  # a chiral object is not its mirror image
    lp = V.lowpass(v, 4.0, 16.0)
    spec = M.fsc(lp, v, 4.0)
    assert spec.at(0.1) > 0.99  # below the cutoff (0.25 cycles/px): untouched
    assert np.abs(np.fft.fftn(lp))[np.abs(np.fft.fftfreq(24)) > 0.3].max() < 1e-4
    assert np.array_equal(V.invert_contrast(v), -v)


def test_pca_kmeans_and_fallbacks():
    rng = np.random.default_rng(1)
    z = np.concatenate([rng.normal(-3, 0.3, (30, 3)), rng.normal(3, 0.3, (30, 3))])
    p = L.pca(z)
    assert p.explained_variance_ratio[0] > 0.9 and p.projection.shape == (60, 3)
    km = L.kmeans(z, 2)
    assert M.ari(np.repeat([0, 1], 30), km.labels) == 1.0
    for c in range(km.k):  # on-data centres are members of their own cluster
        assert km.labels[km.on_data[c]] == c
    # more clusters asked than distinct particles
    small = L.kmeans(z[:4], 20)
    assert small.k == 4 and small.k_requested == 20 and sorted(small.on_data) == [0, 1, 2, 3]
    # one particle, one dimension
    one = L.pca(np.array([[0.5]]))
    assert one.n_components == 1 and one.explained_variance_ratio[0] == 0
    assert L.kmeans(np.array([[0.5]]), 20).k == 1
    emb, name = L.embed_2d(z[:6])
    assert name == "PCA" and emb.shape == (6, 2)
    emb1, _ = L.embed_2d(rng.normal(size=(5, 1)))
    assert emb1.shape == (5, 2)


def test_density_maxima_find_two_populations():
    rng = np.random.default_rng(2)
    emb = np.concatenate([rng.normal(-4, 0.5, (80, 2)), rng.normal(4, 0.5, (40, 2))])
    dm = L.density_maxima(emb)
    assert len(dm.particles) == 2
    assert dm.density[0] == pytest.approx(1.0)
    assert emb[dm.particles[0], 0] < 0 < emb[dm.particles[1], 0]  # densest population first
    assert len(L.density_maxima(emb[:2]).particles) == 1


def test_traversal_and_alignment():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(50, 3)) * [3.0, 1.0, 0.2]
    tr = L.pc_traversal(z, pc=1, n=5)
    assert tr.z.shape == (5, 3) and np.all(np.diff(tr.coordinates) > 0)
    # a rotated, shifted copy of the same latent has (almost) no aligned shift
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    moved = z @ q * 2.0 + 5.0
    assert np.median(L.normalised_shifts(z, moved)) > 0.5
    assert np.median(L.normalised_shifts(z, moved, align=True)) < 1e-6
    with pytest.raises(ValueError):
        L.pc_traversal(z[:, :1], pc=2)


def test_wiener_bound_is_what_a_wiener_filter_reaches():
    """Noisy half maps of a known volume: the bound from their FSC is the correlation the Wiener-
    filtered full map reaches (and 1 for noiseless data, the power share for a band-limited FSC)."""
    rng = np.random.default_rng(0)
    box = 32
    truth = sum(_blob(box, tuple(rng.integers(-8, 9, 3)), sigma) for sigma in (1.0, 2.0, 4.0, 1.5, 3.0))
    sigma_noise = 8 * truth.std()
    halves = [truth + np.sqrt(2) * sigma_noise * rng.standard_normal(truth.shape) for _ in range(2)]
    half_fsc = M.fsc(*halves).fsc
    full = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift((halves[0] + halves[1]) / 2)))
    from hetfield.imaging.lattice import shell_index

    shells = np.minimum(shell_index(box), box // 2)
    c = np.clip(half_fsc, 0, 0.999)[shells]
    snr = 2 * c / (1 - c)
    filtered = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(full * snr / (1 + snr)))).real
    reached = M.masked_correlation(filtered, truth)
    bound = M.wiener_correlation_bound(truth, half_fsc)
    assert 0.5 < bound < 0.95 and abs(reached - bound) < 0.02, (reached, bound)
    # FSC 1 to shell 4 and 0 beyond: the share of the truth's power in shells 0-4 (of the whole cube)
    ft = np.abs(np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(truth - truth.mean())))) ** 2
    share = ft[shell_index(box) <= 4].sum() / ft.sum()
    assert M.wiener_correlation_bound(truth, [1, 1, 1, 1, 1]) == pytest.approx(np.sqrt(share), rel=1e-6)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 CPUs: with one, every thread count is 1")
def test_umap_leaves_torchs_threads_as_the_job_set_them():
    """numba (UMAP) set the process's OpenMP threads to every CPU of the machine, so everything torch
    did after one UMAP ran on all cores whatever OMP_NUM_THREADS said (3x slower on busy cores).
    One process (numba's compilation costs seconds): torch loaded first, as analyze does."""
    import subprocess
    import sys

    code = "\n".join([
        "import numpy as np",
        "import torch",
        "from hetfield.analysis.latent import umap_embedding",
        "assert umap_embedding(np.random.default_rng(0).normal(size=(60, 3))) is not None",
        "print(torch.get_num_threads())",
    ])
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "1"
