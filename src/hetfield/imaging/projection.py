"""Real-space projections of volumes, and image translation (torch).

``project(volume, A)`` computes ``P(x, y) = sum_z V(A.T @ [x, y, z])`` by trilinear interpolation
(``grid_sample``), with the volume ``[z, y, x]`` centred at ``D // 2``. It is the reference the Fourier
code paths are tested against, and the simulator's projector.
"""

from __future__ import annotations

import numpy as np


def _as_tensor(x, dtype=None):
    import torch

    if isinstance(x, torch.Tensor):
        return x.to(dtype) if dtype is not None else x
    return torch.as_tensor(np.asarray(x), dtype=dtype or torch.float32)


def project(volume, rotations, batch_size: int = 64):
    """Project ``volume (D, D, D)`` at ``rotations (B, 3, 3)`` -> ``(B, D, D)`` float32 tensor."""
    import torch
    import torch.nn.functional as F

    vol = _as_tensor(volume, torch.float32)
    rots = _as_tensor(rotations, torch.float32).to(vol.device)
    d = vol.shape[-1]
    if vol.shape != (d, d, d):
        raise ValueError(f"volume must be a cube, got {tuple(vol.shape)}")
    c = torch.arange(d, dtype=torch.float32, device=vol.device) - d // 2
    z, y, x = torch.meshgrid(c, c, c, indexing="ij")
    pts = torch.stack([x, y, z], dim=-1).reshape(-1, 3)  # image-frame [x, y, z], z-major
    out = []
    for start in range(0, rots.shape[0], batch_size):
        r = rots[start : start + batch_size]
        vol_xyz = pts @ r  # row vectors: (A.T @ p).T = p.T @ A
        grid = (vol_xyz + d // 2) * (2.0 / (d - 1)) - 1.0  # align_corners=True: index i -> 2i/(d-1)-1
        grid = grid.reshape(r.shape[0], d, d, d, 3)
        inp = vol.expand(r.shape[0], 1, d, d, d)
        sampled = F.grid_sample(inp, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        out.append(sampled[:, 0].sum(dim=1))  # sum over the image-frame z
    return torch.cat(out, dim=0)


def translate_images(images, shift_px):
    """Translate ``images (B, D, D)`` by ``shift_px (B, 2)`` pixels (x, y) with a Fourier phase ramp."""
    import torch

    from hetfield.imaging.hartley import fft2_center, ifft2_center
    from hetfield.imaging.shifts import translate_fourier

    imgs = _as_tensor(images, torch.float32)
    d = imgs.shape[-1]
    # Built where the images are: a CPU ramp would be copied to the GPU on every call.
    c = (torch.arange(d, dtype=torch.float32, device=imgs.device) - d // 2) / d
    ky, kx = torch.meshgrid(c, c, indexing="ij")
    freqs = torch.stack([kx, ky], -1).reshape(-1, 2)
    f = fft2_center(imgs).reshape(imgs.shape[0], -1)
    f = translate_fourier(f, freqs, _as_tensor(shift_px, torch.float32).to(imgs.device))
    return ifft2_center(f.reshape(imgs.shape)).real
