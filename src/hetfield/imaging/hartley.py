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


def _fftn_center(x, ndim: int):
    axes = tuple(range(-ndim, 0))
    if _is_torch(x):
        import torch

        return torch.fft.fftshift(torch.fft.fftn(torch.fft.fftshift(x, dim=axes), dim=axes), dim=axes)
    return np.fft.fftshift(np.fft.fftn(np.fft.fftshift(x, axes=axes), axes=axes), axes=axes)


def _ifftn_center(x, ndim: int):
    axes = tuple(range(-ndim, 0))
    if _is_torch(x):
        import torch

        return torch.fft.fftshift(torch.fft.ifftn(torch.fft.fftshift(x, dim=axes), dim=axes), dim=axes)
    return np.fft.fftshift(np.fft.ifftn(np.fft.fftshift(x, axes=axes), axes=axes), axes=axes)


def _check_even(x, ndim: int) -> None:
    for s in x.shape[-ndim:]:
        if s % 2:
            raise ValueError(f"centred transforms need even sizes, got shape {tuple(x.shape)}")


def fft2_center(img):
    """Centred 2D Fourier transform over the last two axes."""
    _check_even(img, 2)
    return _fftn_center(img, 2)


def ifft2_center(f):
    """Inverse of :func:`fft2_center` (complex result)."""
    _check_even(f, 2)
    return _ifftn_center(f, 2)


def fft3_center(vol):
    _check_even(vol, 3)
    return _fftn_center(vol, 3)


def ifft3_center(f):
    _check_even(f, 3)
    return _ifftn_center(f, 3)


def _hartley(x, ndim: int):
    f = _fftn_center(x, ndim)
    return f.real - f.imag


def ht2_center(img):
    """Centred 2D Hartley transform over the last two axes."""
    _check_even(img, 2)
    return _hartley(img, 2)


def iht2_center(h):
    """Inverse of :func:`ht2_center`."""
    _check_even(h, 2)
    n = h.shape[-1] * h.shape[-2]
    return _hartley(h, 2) / n


def ht3_center(vol):
    _check_even(vol, 3)
    return _hartley(vol, 3)


def iht3_center(h):
    _check_even(h, 3)
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
