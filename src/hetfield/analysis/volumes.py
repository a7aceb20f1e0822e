"""Volumes after decoding (:func:`hetfield.model.decode.decode_volumes`): MRC output, low-pass, hand
flip, contrast inversion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


# -- post-processing ----------------------------------------------------------------------------
def lowpass(vol: np.ndarray, pixel_size_A: float, resolution_A: float, edge_shells: float = 2.0) -> np.ndarray:
    """Fourier low-pass to ``resolution_A`` with a cosine edge ``edge_shells`` Fourier voxels wide.

    The edge is centred on the cutoff (1 inside ``cutoff - edge/2``, 0 beyond ``cutoff + edge/2``).
    """
    vol = np.asarray(vol, np.float64)
    d = vol.shape[0]
    if resolution_A <= 0:
        raise ValueError(f"low-pass resolution must be positive, got {resolution_A}")
    cutoff = d * pixel_size_A / resolution_A  # in Fourier voxels (shells)
    c = np.arange(d) - d // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    r = np.sqrt(x * x + y * y + z * z)
    t = np.clip((r - (cutoff - edge_shells / 2)) / max(edge_shells, 1e-6), 0, 1)
    filt = 0.5 + 0.5 * np.cos(np.pi * t)
    f = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(vol)))
    return np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(f * filt))).real.astype(np.float32)


def flip_hand(vol: np.ndarray) -> np.ndarray:
    """Mirror along z about the box centre ``D // 2`` (changes the hand, keeps the centre)."""
    return np.roll(np.asarray(vol)[::-1], 1, axis=0).copy()


def invert_contrast(vol: np.ndarray) -> np.ndarray:
    return -np.asarray(vol)


def postprocess(vol: np.ndarray, pixel_size_A: float, lowpass_A: float | None = None, flip: bool = False, invert: bool = False) -> np.ndarray:
    out = np.asarray(vol, np.float32)
    if lowpass_A:
        out = lowpass(out, pixel_size_A, lowpass_A)
    if flip:
        out = flip_hand(out)
    if invert:
        out = invert_contrast(out)
    return out.astype(np.float32)


def write_volume(path: str | Path, vol: np.ndarray, voxel_size_A: float) -> Path:
    """float32 MRC, voxel size set, origin 0 (opens in place in ChimeraX); atomic."""
    from hetfield.io.mrc import write_mrc

    return write_mrc(path, np.asarray(vol, np.float32), voxel_size_A)
