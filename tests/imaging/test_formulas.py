"""Imaging formulas, each checked against its definition evaluated independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hetfield.imaging.ctf import ctf_2d, electron_wavelength_A
from hetfield.imaging.exposure import OPTIMAL_EXPOSURE_FACTOR, critical_exposure, dose_filter, dose_mask, tilt_weight
from hetfield.imaging.hartley import fft2_center, ht2_center, ht3_center, iht2_center, iht3_center, symmetrize
from hetfield.imaging.lattice import Lattice
from hetfield.imaging.rotations import euler_to_matrix, matrix_to_euler, matrix_to_rot6d, random_rotations, rot6d_to_matrix, rotvec_to_matrix
from hetfield.imaging.shifts import translate_fourier, translate_hartley


def test_wavelength_300kV():
    # Relativistic wavelength at 300 kV is 0.019687 Å (textbook value).
    assert electron_wavelength_A(300.0) == pytest.approx(0.019687, abs=2e-6)
    assert electron_wavelength_A(200.0) == pytest.approx(0.025079, abs=2e-6)


def test_ctf_matches_its_formula_at_a_point():
    apix, du, dv, ang, kv, cs, w, phase = 1.5, 20000.0, 18000.0, 30.0, 300.0, 2.7, 0.1, 20.0
    kx, ky = 0.11, -0.07  # cycles/px
    got = ctf_2d(torch.tensor([[kx, ky]], dtype=torch.float64), apix, du, dv, ang, kv, cs, w, phase)[0].item()
    s2 = (kx**2 + ky**2) / apix**2
    alpha = math.atan2(ky, kx)
    dz = 0.5 * (du + dv) + 0.5 * (du - dv) * math.cos(2 * (alpha - math.radians(ang)))
    lam = 12.2639 / math.sqrt(kv * 1e3 + 0.97845e-6 * (kv * 1e3) ** 2)
    gamma = -math.pi * dz * lam * s2 + math.pi / 2 * cs * 1e7 * lam**3 * s2**2 - math.radians(phase) - math.asin(w)
    assert got == pytest.approx(math.sin(gamma), abs=1e-12)


def test_ctf_sign_and_envelope():
    k = torch.zeros(1, 2, dtype=torch.float64)
    assert ctf_2d(k, 1.0, 15000, 15000, 0, 300, 2.7, 0.07).item() == pytest.approx(-0.07)
    k = torch.tensor([[0.2, 0.0]], dtype=torch.float64)
    plain = ctf_2d(k, 2.0, 15000, 15000, 0, 300, 2.7, 0.07)
    damped = ctf_2d(k, 2.0, 15000, 15000, 0, 300, 2.7, 0.07, bfactor_A2=100.0)
    assert (damped / plain).item() == pytest.approx(math.exp(-100 * (0.1**2) / 4))


def test_ctf_is_even_in_k():
    k = torch.randn(50, 2, dtype=torch.float64) * 0.2
    a = ctf_2d(k, 2.0, 21000, 17000, 40, 300, 2.7, 0.1, 10)
    b = ctf_2d(-k, 2.0, 21000, 17000, 40, 300, 2.7, 0.1, 10)
    assert torch.allclose(a, b)


def test_critical_exposure_values():
    s = torch.tensor([0.05, 0.1, 0.25], dtype=torch.float64)
    expected = 0.24499 * s.numpy() ** -1.6649 + 2.8141
    assert np.allclose(critical_exposure(s, 300.0).numpy(), expected)
    assert np.allclose(critical_exposure(s, 200.0).numpy(), 0.8 * expected)


def test_dose_filter_and_mask_cutoff():
    apix = 2.0
    k = torch.tensor([[0.0, 0.0], [0.1, 0.0], [0.2, 0.0]], dtype=torch.float64)  # s = 0, 0.05, 0.1 1/Å
    dose = 40.0
    f = dose_filter(k, apix, dose, 300.0)
    ne = 0.24499 * np.array([0.05, 0.1]) ** -1.6649 + 2.8141
    assert f[0].item() == 1.0
    assert np.allclose(f[1:].numpy(), np.exp(-dose / (2 * ne)))
    m = dose_mask(k, apix, dose, 300.0)
    assert m.tolist() == [True, *(dose <= OPTIMAL_EXPOSURE_FACTOR * ne).tolist()]
    # the mask boundary sits exactly at dose = 2.51284 Ne(s)
    s_cut = ((dose / OPTIMAL_EXPOSURE_FACTOR - 2.8141) / 0.24499) ** (-1 / 1.6649)
    k_in = torch.tensor([[s_cut * apix * 0.999, 0.0]], dtype=torch.float64)
    k_out = torch.tensor([[s_cut * apix * 1.001, 0.0]], dtype=torch.float64)
    assert dose_mask(k_in, apix, dose).item() and not dose_mask(k_out, apix, dose).item()


def test_tilt_weight_takes_degrees():
    # tomoDRGN's defect 1: radians passed to a degrees function made this a no-op.
    assert tilt_weight(60.0).item() == pytest.approx(0.5)
    assert tilt_weight(torch.tensor([0.0, -45.0])).tolist() == pytest.approx([1.0, math.sqrt(0.5)])


@pytest.mark.parametrize("lib", ["numpy", "torch"])
def test_hartley_round_trip_and_definition(lib):
    rng = np.random.default_rng(0)
    img = rng.standard_normal((3, 16, 16))
    vol = rng.standard_normal((12, 12, 12))
    if lib == "torch":
        img, vol = torch.from_numpy(img), torch.from_numpy(vol)
    back = iht2_center(ht2_center(img))
    assert np.allclose(np.asarray(back), np.asarray(img))
    assert np.allclose(np.asarray(iht3_center(ht3_center(vol))), np.asarray(vol))
    f = np.fft.fftshift(np.fft.fft2(np.fft.fftshift(np.asarray(img), axes=(-2, -1))), axes=(-2, -1))
    assert np.allclose(np.asarray(ht2_center(img)), f.real - f.imag)


def test_symmetrize_repeats_nyquist():
    h = np.arange(16.0).reshape(4, 4)
    s = symmetrize(h)
    assert s.shape == (5, 5)
    assert np.array_equal(s[4, :4], h[0]) and np.array_equal(s[:4, 4], h[:, 0]) and s[4, 4] == h[0, 0]


def test_lattice_pairs_and_half():
    lat = Lattice(8)
    c = lat.coords
    assert np.allclose(c[lat.partner], -c)
    mask = lat.circular_mask()
    hp = lat.half_points(mask)
    covered = np.union1d(hp.half, hp.partner)
    assert np.array_equal(covered, np.flatnonzero(mask))
    assert hp.n_points == mask.sum()
    assert hp.is_origin.sum() == 1
    with pytest.raises(ValueError):
        lat.half_points(lat.coords[:, 0] > 0.1)  # not point-symmetric


def test_hartley_values_at_k_and_minus_k_give_the_fourier_coefficient():
    rng = np.random.default_rng(1)
    img = rng.standard_normal((8, 8))
    f = symmetrize(fft2_center(img)).ravel()
    h = symmetrize(ht2_center(img)).ravel()
    lat = Lattice(8)
    re, im = (h + h[lat.partner]) / 2, (h[lat.partner] - h) / 2
    assert np.allclose(re, f.real) and np.allclose(im, f.imag)


def test_hartley_translation_equals_fourier_translation():
    rng = np.random.default_rng(2)
    img = rng.standard_normal((16, 16))
    lat = Lattice(16)
    k = lat.coords
    t = np.array([[1.7, -2.3]])
    f = symmetrize(fft2_center(img)).ravel()
    h = symmetrize(ht2_center(img)).ravel()
    ft = translate_fourier(f[None], k, t)[0]
    ht = translate_hartley(h[None], h[lat.partner][None], k, t)[0]
    assert np.allclose(ht, ft.real - ft.imag)


def test_translation_moves_content_by_plus_t():
    img = np.zeros((16, 16))
    img[8, 8] = 1.0
    from hetfield.imaging.projection import translate_images

    moved = translate_images(img[None], np.array([[3.0, -2.0]]))[0].numpy()
    assert np.unravel_index(moved.argmax(), moved.shape) == (8 - 2, 8 + 3)


def test_rotations_match_scipy_and_round_trip():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(3)
    e = np.stack([rng.uniform(-180, 180, 200), rng.uniform(0, 180, 200), rng.uniform(-180, 180, 200)], 1)
    a = euler_to_matrix(e[:, 0], e[:, 1], e[:, 2])
    assert np.allclose(a, Rotation.from_euler("ZYZ", e, degrees=True).as_matrix().transpose(0, 2, 1))
    assert np.allclose(euler_to_matrix(*matrix_to_euler(a)), a)
    # gimbal lock (tilt 0 and 180)
    for tilt in (0.0, 180.0):
        m = euler_to_matrix(30.0, tilt, 20.0)
        assert np.allclose(euler_to_matrix(*matrix_to_euler(m)), m)


def test_random_rotations_are_rotations_and_uniform():
    r = random_rotations(20000, np.random.default_rng(4))
    assert np.allclose(r @ r.transpose(0, 2, 1), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(r), 1.0)
    # uniform on SO(3): the rotated z axis is uniform on the sphere (mean 0, E[z^2] = 1/3)
    zaxis = r[:, :, 2]
    assert np.abs(zaxis.mean(0)).max() < 0.02 and abs((zaxis[:, 2] ** 2).mean() - 1 / 3) < 0.01


def test_rot6d_round_trip_and_rotvec():
    r = torch.from_numpy(random_rotations(50, np.random.default_rng(5)))
    assert torch.allclose(rot6d_to_matrix(matrix_to_rot6d(r)), r, atol=1e-10)
    v = np.array([0.0, 0.0, math.pi / 2])
    assert np.allclose(rotvec_to_matrix(v), [[0, -1, 0], [1, 0, 0], [0, 0, 1]])
