"""Translations as phase shifts, in the Fourier and in the Hartley domain (torch or numpy).

Translating an image by ``t`` pixels (content moves by ``+t``) multiplies its transform by
``exp(-2 pi i k.t)``. For Hartley values this mixes ``k`` with ``-k``:
``H_t(k) = H(k) cos(phi) + H(-k) sin(phi)``, ``phi = 2 pi k.t``.
"""

from __future__ import annotations

import math


def _lib(x):
    if type(x).__module__.startswith("torch"):
        import torch

        return torch
    import numpy

    return numpy


def phase(freqs, shift_px):
    """``phi = 2 pi k.t`` for ``freqs (..., M, 2)`` cycles/px and ``shift_px (..., 2)``: ``(..., M)``;
    torch phases in fp32 at least, autocast or not (:mod:`hetfield.imaging.precision`)."""
    if _lib(freqs).__name__ == "numpy" and _lib(shift_px).__name__ == "numpy":
        return 2 * math.pi * (freqs * shift_px[..., None, :]).sum(-1)
    from hetfield.imaging.precision import at_least_fp32, full_precision

    freqs, shift_px = at_least_fp32(freqs), at_least_fp32(shift_px)
    with full_precision(freqs):
        return 2 * math.pi * (freqs * shift_px[..., None, :]).sum(-1)


def translate_hartley(h_k, h_minus_k, freqs, shift_px):
    """Hartley values at ``k`` after translating the image by ``shift_px`` (see module doc)."""
    return translate_hartley_pair(h_k, h_minus_k, freqs, shift_px)[0]


def translate_hartley_pair(h_k, h_minus_k, freqs, shift_px):
    """Hartley values at ``k`` and at ``-k`` after translating the image by ``shift_px``, from one phase.

    ``freqs (M, 2)`` or ``(..., M, 2)`` cycles/px, ``shift_px (..., 2)``; translating by ``+origin``
    centres a particle (see :mod:`hetfield.imaging`).
    """
    xp = _lib(h_k)
    phi = phase(freqs, shift_px)
    c, s = xp.cos(phi), xp.sin(phi)
    return h_k * c + h_minus_k * s, h_minus_k * c - h_k * s


def translate_fourier(f, freqs, shift_px):
    """Complex Fourier values ``f (..., M)`` after translating the image by ``shift_px``."""
    xp = _lib(f)
    phi = phase(freqs, shift_px)
    return f * xp.exp(-1j * phi)
