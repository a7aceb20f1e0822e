"""The contrast transfer function on lattice frequencies (torch; broadcasts over images).

``CTF(s) = -sqrt(1 - w^2) sin(chi) - w cos(chi)`` with
``chi = pi*lambda*dz*s^2 - (pi/2)*Cs*lambda^3*s^4 + phase_shift`` and astigmatic defocus
``dz = (dU + dV)/2 + (dU - dV)/2 * cos(2(alpha - alpha_ast))``, times ``exp(-B s^2 / 4)`` when a
B-factor is given. This is RELION's and cryoDRGN's sign: ``CTF(0) = -w``.
"""

from __future__ import annotations

import math


def electron_wavelength_A(voltage_kV):
    """Relativistic electron wavelength in Å: ``12.2639 / sqrt(V + 0.97845e-6 V^2)``, V in volts."""
    v = voltage_kV * 1e3
    return 12.2639 / (v + 0.97845e-6 * v * v) ** 0.5


def ctf_2d(
    freqs,
    pixel_size_A,
    defocus_u_A,
    defocus_v_A,
    defocus_angle_deg,
    voltage_kV,
    cs_mm,
    amplitude_contrast,
    phase_shift_deg=0.0,
    bfactor_A2=None,
):
    """CTF at ``freqs`` ``(..., M, 2)`` (kx, ky in cycles/pixel).

    Every per-image parameter is a tensor of shape ``(...)`` (or a scalar) broadcast against the
    leading dimensions of ``freqs``; the result has shape ``(..., M)``.
    """
    import torch

    def per_image(v):
        t = torch.as_tensor(v, dtype=freqs.dtype, device=freqs.device)
        return t.unsqueeze(-1) if t.ndim else t

    apix = per_image(pixel_size_A)
    kx, ky = freqs[..., 0] / apix, freqs[..., 1] / apix  # 1/Å
    s2 = kx * kx + ky * ky
    angle = torch.atan2(ky, kx)
    lam = electron_wavelength_A(per_image(voltage_kV))
    cs_A = per_image(cs_mm) * 1e7
    du, dv = per_image(defocus_u_A), per_image(defocus_v_A)
    ast = per_image(defocus_angle_deg) * (math.pi / 180)
    dz = 0.5 * (du + dv) + 0.5 * (du - dv) * torch.cos(2 * (angle - ast))
    chi = math.pi * lam * dz * s2 - 0.5 * math.pi * cs_A * lam**3 * s2 * s2 + per_image(phase_shift_deg) * (math.pi / 180)
    w = per_image(amplitude_contrast)
    ctf = -torch.sqrt(1 - w * w) * torch.sin(chi) - w * torch.cos(chi)
    if bfactor_A2 is not None:
        ctf = ctf * torch.exp(-per_image(bfactor_A2) * s2 / 4)
    return ctf
