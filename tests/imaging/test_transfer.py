"""The one imaging transfer function: CTF × exposure for ordinary, premultiplied and dose-weighted
images, and the dose-mask radius the batches decode up to."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hetfield.imaging.ctf import ctf_2d
from hetfield.imaging.exposure import dose_filter, dose_mask
from hetfield.imaging.lattice import Lattice
from hetfield.imaging.transfer import TRANSFER_PARAMETERS, dose_cutoff_radius_px, transfer, transfer_of


def _params(n=4):
    return {
        "pixel_size_A": torch.full((n,), 4.0, dtype=torch.float64),
        "defocus_u_A": torch.linspace(15000, 30000, n, dtype=torch.float64),
        "defocus_v_A": torch.linspace(14000, 29000, n, dtype=torch.float64),
        "defocus_angle_deg": torch.linspace(0, 90, n, dtype=torch.float64),
        "voltage_kV": torch.tensor([300.0, 300.0, 200.0, 250.0][:n], dtype=torch.float64),
        "cs_mm": torch.full((n,), 2.7, dtype=torch.float64),
        "amplitude_contrast": torch.full((n,), 0.1, dtype=torch.float64),
        "phase_shift_deg": torch.zeros(n, dtype=torch.float64),
        "ctf_bfactor_A2": torch.linspace(0, -40, n, dtype=torch.float64),
        "ctf_scale": torch.linspace(1.0, 0.5, n, dtype=torch.float64),
        "dose_e_per_A2": torch.linspace(3, 60, n, dtype=torch.float64),
        "ctf_premultiplied": torch.tensor([False, True, False, True][:n]),
        "dose_weighted": torch.tensor([False, False, True, True][:n]),
    }


def test_the_factor_is_ctf_and_exposure_once_more_for_what_the_images_already_carry():
    p = _params()
    lat = Lattice(32)
    k = torch.as_tensor(lat.coords[lat.circular_mask()], dtype=torch.float64)
    t = transfer_of(p, k, dose_weight=True, dose_mask=True)
    assert t.ctf.shape == t.factor.shape == t.keep.shape == (4, k.shape[0]) and t.keep.dtype == torch.bool
    ctf = ctf_2d(k, p["pixel_size_A"], p["defocus_u_A"], p["defocus_v_A"], p["defocus_angle_deg"], p["voltage_kV"], p["cs_mm"],
                 p["amplitude_contrast"], p["phase_shift_deg"], p["ctf_bfactor_A2"]) * p["ctf_scale"][:, None]
    g = dose_filter(k, p["pixel_size_A"], p["dose_e_per_A2"], p["voltage_kV"])
    assert torch.allclose(t.ctf, ctf)
    expected = torch.stack([ctf[0] * g[0], ctf[1] ** 2 * g[1], ctf[2] * g[2] ** 2, ctf[3] ** 2 * g[3] ** 2])
    assert torch.allclose(t.factor, expected)
    assert torch.equal(t.keep, dose_mask(k, p["pixel_size_A"], p["dose_e_per_A2"], p["voltage_kV"]))
    assert not t.keep[3].all() and t.keep[0].all()  # 60 e/Å² masks the outer shells, 3 e/Å² nothing
    # Without dose weighting or mask: the CTF part alone, every point kept; the positional form agrees.
    plain = transfer(k, *(p[name] for name in TRANSFER_PARAMETERS), dose_weight=False, dose_mask=False)
    assert torch.allclose(plain.factor, torch.where(p["ctf_premultiplied"][:, None], ctf * ctf, ctf))
    assert bool(plain.keep.all()) and torch.equal(plain.exposure, torch.ones_like(ctf))


@pytest.mark.parametrize("box, pixel_size_A", [(32, 4.0), (64, 1.5)])
def test_the_dose_cutoff_radius_is_the_edge_of_the_dose_mask(box, pixel_size_A):
    lat = Lattice(box)
    k = torch.as_tensor(lat.coords, dtype=torch.float64)
    dose = np.array([1.0, 10.0, 40.0, 120.0])
    volt = np.array([300.0, 200.0, 300.0, 300.0])
    keep = dose_mask(k, torch.full((4,), pixel_size_A, dtype=torch.float64), torch.as_tensor(dose), torch.as_tensor(volt)).numpy()
    cutoff = dose_cutoff_radius_px(dose, np.full(4, pixel_size_A), volt, box)
    for i in range(4):
        inside = lat.radius_px <= cutoff[i]
        away = np.abs(lat.radius_px - cutoff[i]) > 1e-6  # points on the edge may round either way
        assert np.array_equal(keep[i][away], inside[away]), i
    assert np.isinf(cutoff[0]) and np.isfinite(cutoff[3])
