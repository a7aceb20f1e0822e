"""Centred Fourier and Hartley transforms of images and volumes (numpy arrays or torch tensors).

"Centred" means the zero frequency and the real-space origin are both at index ``D // 2``
(``fftshift(fft(fftshift(x)))``), which for even ``D`` makes every transform here its own inverse up
to a factor ``D**ndim``. Hartley: ``H = Re F - Im F``. Images handed to the model live on the odd
``(D+1)`` lattice, made by :func:`symmetrize` (the Nyquist row/column repeated at the far edge).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch")


def _centred(x, ndim: int, inverse: bool = False):
    """Centred (inverse) FFT over the last ``ndim`` axes, for numpy arrays and torch tensors alike."""
    axes = tuple(range(-ndim, 0))
    if _is_torch(x):
        import torch

        fft = torch.fft.ifftn if inverse else torch.fft.fftn
        return torch.fft.fftshift(fft(torch.fft.fftshift(x, dim=axes), dim=axes), dim=axes)
    fft = np.fft.ifftn if inverse else np.fft.fftn
    return np.fft.fftshift(fft(np.fft.fftshift(x, axes=axes), axes=axes), axes=axes)


def _even(x, ndim: int):
    """``x``, after checking its last ``ndim`` sizes are even (centred transforms need them)."""
    for s in x.shape[-ndim:]:
        if s % 2:
            raise ValueError(f"centred transforms need even sizes, got shape {tuple(x.shape)}")
    return x


def fft2_center(img):
    """Centred 2D Fourier transform over the last two axes."""
    return _centred(_even(img, 2), 2)


def ifft2_center(f):
    """Inverse of :func:`fft2_center` (complex result)."""
    return _centred(_even(f, 2), 2, inverse=True)


def fft3_center(vol):
    """Centred 3D Fourier transform over the last three axes."""
    return _centred(_even(vol, 3), 3)


def ifft3_center(f):
    """Inverse of :func:`fft3_center` (complex result)."""
    return _centred(_even(f, 3), 3, inverse=True)


def _hartley(x, ndim: int):
    f = _centred(x, ndim)
    return f.real - f.imag


def ht2_center(img):
    """Centred 2D Hartley transform over the last two axes."""
    _even(img, 2)
    return _hartley(img, 2)


def iht2_center(h):
    """Inverse of :func:`ht2_center`."""
    _even(h, 2)
    n = h.shape[-1] * h.shape[-2]
    return _hartley(h, 2) / n


def ht3_center(vol):
    _even(vol, 3)
    return _hartley(vol, 3)


def iht3_center(h):
    _even(h, 3)
    n = h.shape[-1] * h.shape[-2] * h.shape[-3]
    return _hartley(h, 3) / n


def symmetrize(h):
    """``(..., D, D)`` -> ``(..., D+1, D+1)``: repeat the ``-Nyquist`` row and column at ``+Nyquist``."""
    if _is_torch(h):
        import torch

        h = torch.cat([h, h[..., :1, :]], dim=-2)
        return torch.cat([h, h[..., :, :1]], dim=-1)
    h = np.concatenate([h, h[..., :1, :]], axis=-2)
    return np.concatenate([h, h[..., :, :1]], axis=-1)


def desymmetrize(h):
    """``(..., D+1, D+1)`` -> ``(..., D, D)``: drop the repeated last row and column."""
    return h[..., :-1, :-1]


def hartley_to_fourier(h_k, h_minus_k):
    """Fourier coefficient at ``k`` from Hartley values at ``k`` and ``-k``: ``(re, im)``."""
    return (h_k + h_minus_k) / 2, (h_minus_k - h_k) / 2
