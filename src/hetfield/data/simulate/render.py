"""From projections to recorded images: shift, CTF and dose filter in Fourier space (torch).

Why a 2x padded grid: a projection is zero beyond ``0.4 D`` of the centre (see ``phantoms``), but
multiplying by the CTF (and shifting) on the ``D`` grid is a *circular* convolution, so the CTF's
delocalised fringes would wrap round onto the far side of the box. Particles are windowed out of
micrographs, where those fringes simply leave the box. Padding the projection to ``2D`` with zeros,
filtering there and cropping the central ``D`` gives that linear convolution (the point-spread
function stays well below ``D/2`` for the defocus and pixel sizes we simulate). The cost is small
(one ``2D x 2D`` FFT pair per image).

``image = -(CTF * dose_filter * shift(projection))`` (white particles, as RELION stacks usually are;
hetfield's default contrast inversion in ``setup`` turns them into ``CTF * projection``). The clean
image is ``shift(projection)`` alone: no CTF, no dose filter, no inversion, no noise.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=4)
def _padded_freqs(box: int):
    """``(1, (2D)^2, 2)`` float32 ``(kx, ky)`` in cycles/px of the padded grid (row-major over [ky, kx])."""
    import torch

    n = 2 * box
    c = (torch.arange(n, dtype=torch.float32) - n // 2) / n
    ky, kx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([kx, ky], -1).reshape(1, -1, 2)


def render(projections, *, pixel_size_A, shift_px, defocus_u_A, defocus_v_A, defocus_angle_deg,
           voltage_kV, cs_mm, amplitude_contrast, phase_shift_deg, dose_e_per_A2, clean: bool = False):
    """``projections (B, D, D)`` -> ``(signal, clean_or_None)`` float32 numpy ``(B, D, D)``.

    Per-image parameters are arrays of length ``B`` (or scalars); ``shift_px (B, 2)`` is the
    translation applied to the content (``-origin`` in pixels).
    """
    import torch

    from hetfield.imaging.ctf import ctf_2d
    from hetfield.imaging.exposure import dose_filter
    from hetfield.imaging.hartley import fft2_center, ifft2_center
    from hetfield.imaging.shifts import translate_fourier

    proj = torch.as_tensor(projections, dtype=torch.float32)
    b, d = proj.shape[0], proj.shape[-1]
    n = 2 * d
    lo = n // 2 - d // 2
    padded = torch.zeros((b, n, n), dtype=torch.float32)
    padded[:, lo : lo + d, lo : lo + d] = proj
    freqs = _padded_freqs(d)

    def t(v):
        return torch.as_tensor(np.asarray(v, dtype=np.float64), dtype=torch.float32)

    f = fft2_center(padded).reshape(b, -1)
    f = translate_fourier(f, freqs, t(shift_px))
    ctf = ctf_2d(freqs, t(pixel_size_A), t(defocus_u_A), t(defocus_v_A), t(defocus_angle_deg),
                 t(voltage_kV), t(cs_mm), t(amplitude_contrast), t(phase_shift_deg))
    filt = ctf * dose_filter(freqs, t(pixel_size_A), t(dose_e_per_A2), t(voltage_kV))

    def back(spectrum):
        return ifft2_center(spectrum.reshape(b, n, n)).real[:, lo : lo + d, lo : lo + d].numpy()

    signal = -back(f * filt)
    return signal, (back(f) if clean else None)
