"""Tiny in-memory datasets of Gaussian-blob volumes, whose Fourier transforms are analytic.

A volume ``sum_j a_j exp(-|r - c_j|^2 / (2 s^2))`` (pixels) has the continuous transform
``F(q) = sum_j a_j (2π s²)^{3/2} exp(-2π² s² |q|²) exp(-2πi q·c_j)`` (q in cycles/pixel), which the
discrete transform of the sampled volume matches closely for blobs well inside the box.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from hetfield.data.dataset import Dataset
from hetfield.imaging.ctf import ctf_2d
from hetfield.imaging.exposure import dose_filter
from hetfield.imaging.hartley import fft2_center, ht2_center, ifft2_center, symmetrize
from hetfield.imaging.projection import project, translate_images
from hetfield.imaging.rotations import random_rotations, rotation_y

SIGMA_PX = 1.5
# Inside radius 0.3 box at box 24, so the blobs' tails stay within the box (no truncation).
CENTRES = [(0, 0, 0), (3, 0, 0), (-3, 1, 0), (0, 4, -1), (1, -3, 2), (0, 0, 4), (4, 4, 0)]


def blob_volume(box: int, centres=CENTRES, sigma: float = SIGMA_PX) -> np.ndarray:
    c = np.arange(box) - box // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    v = sum(np.exp(-((x - a) ** 2 + (y - b) ** 2 + (z - d) ** 2) / (2 * sigma**2)) for a, b, d in centres)
    return v.astype(np.float32)


def blob_transform(q: torch.Tensor, centres=CENTRES, sigma: float = SIGMA_PX) -> torch.Tensor:
    """Complex ``F(q)`` of :func:`blob_volume` at ``q (..., 3)`` = (qx, qy, qz) cycles/pixel."""
    q = q.double()
    env = (2 * np.pi * sigma**2) ** 1.5 * torch.exp(-2 * np.pi**2 * sigma**2 * (q * q).sum(-1))
    c = torch.tensor(centres, dtype=torch.float64)
    phases = torch.exp(-2j * np.pi * (q @ c.T))  # (..., J)
    return env * phases.sum(-1)


def tilt_series_dataset(n_particles=6, n_tilts=5, box=24, apix=6.0, seed=0, ctf_premultiplied=False, noise=0.0, ragged=False, dose_weighted=False) -> Dataset:
    """Noise-free (or noisy) tilt series of :func:`blob_volume`, already "set up" (Hartley, D+1)."""
    rng = np.random.default_rng(seed)
    vol = blob_volume(box)
    tilts_all = np.array([0, 12, -12, -24, 24, 36, -36, -48][:n_tilts], float)
    dose_per_tilt = 4.0 if not dose_weighted else 25.0  # strong exposure: filter² must matter
    rots, origins, tilts, doses, counts = [], [], [], [], []
    for p in range(n_particles):
        n = int(rng.integers(2, n_tilts + 1)) if ragged else n_tilts
        a = random_rotations(1, rng)[0]
        rots.append(rotation_y(tilts_all[:n]) @ a)
        origins.append(rng.uniform(-1.5, 1.5, (n, 2)))
        tilts.append(tilts_all[:n])
        doses.append(np.arange(n) * dose_per_tilt)
        counts.append(n)
    rot = np.concatenate(rots)
    origin = np.concatenate(origins)
    n_img = rot.shape[0]
    proj = translate_images(project(vol, rot), torch.from_numpy(-origin)).double()
    c = (torch.arange(box) - box // 2) / box
    ky, kx = torch.meshgrid(c, c, indexing="ij")
    freqs = torch.stack([kx, ky], -1).reshape(-1, 2).double()
    du = torch.from_numpy(rng.uniform(12000, 20000, n_img))
    dose = torch.from_numpy(np.concatenate(doses))
    ctf = ctf_2d(freqs, apix, du, du * 0.95, torch.full((n_img,), 30.0), 300.0, 2.7, 0.1, 0.0)
    exposure = dose_filter(freqs, apix, dose, 300.0)
    f = fft2_center(proj).reshape(n_img, -1) * ctf * exposure
    if ctf_premultiplied:
        f = f * ctf
    if dose_weighted:  # exposure-filtered by the software on top of the physical attenuation
        f = f * exposure
    img = ifft2_center(f.reshape(n_img, box, box)).real
    if noise:
        img = img + noise * img.std() * torch.randn(img.shape, generator=torch.Generator().manual_seed(seed), dtype=img.dtype)
    h = symmetrize(ht2_center(img)).float().numpy()
    offsets = np.concatenate([[0], np.cumsum(counts)])
    arrays = {
        "particle": np.repeat(np.arange(n_particles), counts),
        "particle_offsets": offsets,
        "rotation": rot.astype(np.float32),
        "origin_px": origin.astype(np.float32),
        "pixel_size_A": np.full(n_img, apix, np.float32),
        "voltage_kV": np.full(n_img, 300.0, np.float32),
        "cs_mm": np.full(n_img, 2.7, np.float32),
        "amplitude_contrast": np.full(n_img, 0.1, np.float32),
        "defocus_u_A": du.float().numpy(),
        "defocus_v_A": (du * 0.95).float().numpy(),
        "defocus_angle_deg": np.full(n_img, 30.0, np.float32),
        "phase_shift_deg": np.zeros(n_img, np.float32),
        "ctf_bfactor_A2": np.zeros(n_img, np.float32),
        "ctf_scale": np.ones(n_img, np.float32),
        "dose_e_per_A2": dose.float().numpy(),
        "stage_tilt_deg": np.concatenate(tilts).astype(np.float32),
        "ctf_premultiplied": np.full(n_img, ctf_premultiplied),
        "dose_weighted": np.full(n_img, dose_weighted),
    }
    meta = {"box": box, "lattice": box + 1, "pixel_size_A": apix, "n_images": n_img, "n_particles": n_particles, "fingerprint": "synthetic", "has_poses": True}
    return Dataset(Path("synthetic"), meta, h, arrays)
