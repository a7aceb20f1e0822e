"""Exposure weighting of tilt images: dose filter, dose mask and tilt weight (torch).

Grant & Grigorieff (2015): the critical exposure at spatial frequency ``s`` (1/Å) is
``Ne(s) = (0.24499 * s**-1.6649 + 2.8141) * f(V)`` e/Å², with ``f = 1`` at 300 kV and ``0.8`` at
200 kV (linear between, clamped outside). After a cumulative dose ``N`` the signal is attenuated by
``exp(-N / (2 Ne))``; beyond the optimal exposure ``2.51284 * Ne`` a frequency carries more noise than
signal and is masked out of decoding and the loss.
"""

from __future__ import annotations

OPTIMAL_EXPOSURE_FACTOR = 2.51284


def voltage_scale(voltage_kV):
    import torch

    v = torch.as_tensor(voltage_kV, dtype=torch.float32)
    return torch.clamp(0.8 + 0.2 * (v - 200.0) / 100.0, 0.8, 1.0)


def critical_exposure(s_per_A, voltage_kV=300.0):
    """Critical exposure ``Ne(s)`` in e/Å² (infinite at ``s = 0``)."""
    import torch

    s = torch.as_tensor(s_per_A)
    scale = voltage_scale(voltage_kV).to(s.device, s.dtype)
    return (0.24499 * torch.pow(s, -1.6649) + 2.8141) * scale


def _per_image(freqs, pixel_size_A, dose_e_per_A2, voltage_kV):
    """``s (..., M)`` in 1/Å, and the dose and critical exposure ``Ne(s)`` broadcast against it."""
    import torch

    def column(v):
        t = torch.as_tensor(v, dtype=freqs.dtype, device=freqs.device)
        return t.unsqueeze(-1) if t.ndim else t

    s = torch.linalg.vector_norm(freqs, dim=-1) / column(pixel_size_A)
    return column(dose_e_per_A2), critical_exposure(s, column(voltage_kV))


def dose_filter(freqs, pixel_size_A, dose_e_per_A2, voltage_kV=300.0):
    """``exp(-dose / (2 Ne(s)))`` at ``freqs`` ``(..., M, 2)`` cycles/px; per-image params ``(...)``."""
    import torch

    dose, ne = _per_image(freqs, pixel_size_A, dose_e_per_A2, voltage_kV)
    return torch.exp(-dose / (2 * ne))


def dose_mask(freqs, pixel_size_A, dose_e_per_A2, voltage_kV=300.0):
    """Bool ``(..., M)``: frequencies whose cumulative dose is within ``2.51284 * Ne(s)``."""
    dose, ne = _per_image(freqs, pixel_size_A, dose_e_per_A2, voltage_kV)
    return dose <= OPTIMAL_EXPOSURE_FACTOR * ne


def tilt_weight(stage_tilt_deg):
    """``cos(tilt)``: the relative signal of a tilt image (its path through the ice grows as 1/cos).

    Takes degrees, as stored in the particle table (tomoDRGN passed radians to a degrees function,
    making this weight a no-op; tests/imaging pin the value at 60° to 0.5).
    """
    import torch

    return torch.cos(torch.deg2rad(torch.as_tensor(stage_tilt_deg)))
