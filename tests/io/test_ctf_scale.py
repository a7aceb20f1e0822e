"""One rule for the CTF scale factor (issue 9, item 10): every reader multiplies the CTF by it.

RELION defines ``_rlnCtfScalefactor`` as a linear scale of the CTF; cryoSPARC's ``ctf/scale`` is
the same. Before, the image-series and NextPYP readers dropped it (``ctf_scale = 1``) while the
optimisation-set reader kept it; the measurements below (docs/internals.md, "CTF scale factor")
show that the images do fall with it.
"""

from __future__ import annotations

import numpy as np
import pytest

from hetfield.errors import InputError
from hetfield.io.readers import read_particles

from iohelpers import write_image_series, write_optimisation_set, write_relion31, write_stack


def test_every_reader_keeps_the_scale_factor(tmp_path):
    series = read_particles(write_image_series(tmp_path / "s", n_particles=2, n_tilts=4)).images
    np.testing.assert_allclose(series["ctf_scale"], np.cos(np.radians(series["stage_tilt_deg"])), atol=1e-6)
    assert series["ctf_scale"].min() < 0.9  # cos(30°): it was 1 before

    spa = read_particles(write_relion31(tmp_path / "r", extra_cols={"rlnCtfScalefactor": 0.8})).images
    assert (spa["ctf_scale"] == 0.8).all()
    assert (read_particles(write_relion31(tmp_path / "r1")).images["ctf_scale"] == 1).all()  # absent: 1

    s = write_optimisation_set(tmp_path / "o", n_frames=5)
    opt = read_particles(s["optimisation_set"]).images
    np.testing.assert_allclose(opt.groupby("frame")["ctf_scale"].first(), np.round(np.cos(np.radians(s["tilts"])), 3))

    from test_nextpyp_cryosparc import _cs, write_nextpyp

    nx = read_particles(write_nextpyp(tmp_path / "n")).images
    np.testing.assert_allclose(nx["ctf_scale"], np.cos(np.radians(nx["stage_tilt_deg"])), atol=1e-9)
    from numpy.lib import recfunctions

    arr = recfunctions.append_fields(_cs(3), "ctf/scale", np.array([1.0, 0.7, 1.2]), usemask=False)
    write_stack(tmp_path / "c/J1/extract/stack.mrc", 3, box=8)
    p = tmp_path / "c" / "p.cs"
    with open(p, "wb") as fh:
        np.save(fh, arr)
    np.testing.assert_allclose(read_particles(p).images["ctf_scale"], [1.0, 0.7, 1.2])


def test_a_non_positive_scale_is_an_error(tmp_path):
    p = write_relion31(tmp_path, extra_cols={"rlnCtfScalefactor": 0.0})
    with pytest.raises(InputError, match=r"row 1: _rlnCtfScalefactor = 0; a CTF scale factor must be positive.*fix"):
        read_particles(p)


@pytest.mark.shared_data
def test_tomo_sim_image_amplitude_falls_with_the_scale_factor(shared_data, quiet_mrc_warnings):
    """Fit each noisy image as a·(CTF·dose filter·clean image) (least squares over all frequencies)
    and regress a on the scale factor s, weighting by each fit's precision. d ln a / d s is 1 if the
    amplitude is proportional to s and 0 if it ignores it. Measured: class D 1.50 ± 0.55, class E
    0.63 ± 0.32, together 0.85 ± 0.28: proportional, and 3 standard errors from ignoring it."""
    import torch

    from hetfield.imaging.ctf import ctf_2d
    from hetfield.imaging.exposure import dose_filter
    from hetfield.io.mrc import open_stack

    d = shared_data / "tomo-sim-50S"
    est = []
    for cls in "DE":
        df = read_particles(d / f"10076_class{cls}_32_sim.star", datadir=d).images
        n = len(df)
        y = np.fft.fft2(open_stack(d / f"10076_class{cls}_32_sim.mrcs").read(np.arange(n)).astype(np.float64)).reshape(n, -1)
        c = np.fft.fft2(open_stack(d / f"10076_class{cls}_32_clean.mrcs").read(np.arange(n)).astype(np.float64)).reshape(n, -1)
        k = np.fft.fftfreq(32)
        kx, ky = np.meshgrid(k, k)
        freqs = torch.tensor(np.stack([kx, ky], -1).reshape(-1, 2))[None].expand(n, -1, -1)
        col = {name: torch.tensor(df[name].to_numpy()) for name in df.columns if df[name].dtype.kind == "f"}
        ctf = ctf_2d(freqs, col["pixel_size_A"], col["defocus_u_A"], col["defocus_v_A"], col["defocus_angle_deg"],
                     col["voltage_kV"], col["cs_mm"], col["amplitude_contrast"], col["phase_shift_deg"]).numpy()
        ctf *= dose_filter(freqs, col["pixel_size_A"], col["dose_e_per_A2"], col["voltage_kV"]).numpy()
        m = ctf * c
        num, den = (np.conj(m) * y).real.sum(1), (np.abs(m) ** 2).sum(1)
        a = num / den
        noise = (np.abs(y - a[:, None] * m) ** 2).mean(1)
        s = df["ctf_scale"].to_numpy()
        X = np.stack([np.ones(n), s], 1)
        xtw = X.T * (den / noise)
        cov = np.linalg.inv(xtw @ X)
        b = cov @ (xtw @ a)
        est.append((b[1] / b.sum(), np.sqrt(cov[1, 1]) / b.sum()))
    w = np.array([1 / e[1] ** 2 for e in est])
    slope = float(np.sum(w * [e[0] for e in est]) / w.sum())
    se = float(1 / np.sqrt(w.sum()))
    assert slope == pytest.approx(0.85, abs=0.05) and se == pytest.approx(0.28, abs=0.03), (slope, se, est)
    assert slope / se > 2.5  # the amplitude does depend on the factor: multiplying the CTF by it is right


@pytest.mark.shared_data
def test_warptools_image_amplitude_falls_with_the_scale_factor(shared_data, quiet_mrc_warnings):
    """WarpTools' premultiplied images against CTF²·projection of its consensus map (12–64 Å band):
    the pooled amplitude per quartile of the frames' scale factor (0.65, 0.82, 0.94, 0.99) was
    18, 53, 88, 115: it falls with the factor, faster than the factor itself."""
    import torch

    from hetfield.imaging.ctf import ctf_2d
    from hetfield.imaging.projection import project
    from hetfield.imaging.rotations import euler_to_matrix
    from hetfield.io.mrc import open_stack, read_volume

    d = shared_data / "warptools-70S"
    vol, _ = read_volume(d / "warptools_test_box-32_angpix-12_reconstruct.mrc")
    df = read_particles(d / "warptools_test_4-tomos_10-ptcls_box-32_angpix-12_optimisation_set.star").images
    df = df.iloc[::2].reset_index(drop=True)
    n = len(df)
    imgs = np.empty((n, 32, 32), np.float64)
    for path, g in df.groupby("image_path", sort=False):
        imgs[g.index.to_numpy()] = open_stack(path).read(g["image_index"].to_numpy())
    c = (np.arange(32) - 16) / 32
    ky, kx = np.meshgrid(c, c, indexing="ij")
    freqs = torch.tensor(np.stack([kx, ky], -1).reshape(-1, 2))[None].expand(n, -1, -1)
    col = {name: torch.tensor(df[name].to_numpy()) for name in df.columns if df[name].dtype.kind == "f"}
    ctf = ctf_2d(freqs, col["pixel_size_A"], col["defocus_u_A"], col["defocus_v_A"], col["defocus_angle_deg"],
                 col["voltage_kV"], col["cs_mm"], col["amplitude_contrast"], col["phase_shift_deg"]).numpy()
    a = euler_to_matrix(df["euler_rot_deg"], df["euler_tilt_deg"], df["euler_psi_deg"])
    proj = project(torch.tensor(vol), torch.tensor(a)).numpy().astype(np.float64)
    band = ((np.hypot(kx, ky) * 32 >= 1) & (np.hypot(kx, ky) * 32 <= 6)).ravel()

    def ft(x):
        return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(-2, -1))), axes=(-2, -1)).reshape(n, -1)[:, band]

    m = ft(proj) * (ctf.reshape(n, -1) ** 2)[:, band]
    y = ft(imgs)
    num, den = (np.conj(m) * y).real.sum(1), (np.abs(m) ** 2).sum(1)
    s = df["ctf_scale"].to_numpy()
    edges = np.quantile(s, [0, 0.25, 0.5, 0.75, 1])
    pooled = [num[(s >= lo) & (s <= hi)].sum() / den[(s >= lo) & (s <= hi)].sum() for lo, hi in zip(edges[:-1], edges[1:])]
    assert np.all(np.diff(pooled) > 0), pooled
    assert pooled[0] / pooled[-1] < s[s <= edges[1]].mean() / s[s >= edges[3]].mean(), pooled  # faster than s
