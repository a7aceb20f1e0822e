"""The imaging transfer function: what one image's optics and exposure do to the projection (torch).

For image ``i`` at lattice frequency ``k`` (cycles/px)::

    ctf    = CTF_i(k) * ctf_scale_i                         (RELION's linear CTF scale factor)
    g      = dose_filter_i(k) ** (1 + dose_weighted_i)      (1 without dose weighting)
    factor = ctf ** (1 + ctf_premultiplied_i) * g           (what multiplies the volume's slice)
    keep   = dose_mask_i(k)                                 (all True without the dose mask)

so that ``image = factor * projection``: CTF-premultiplied inputs (WarpTools) already carry one more
CTF, dose-weighted stacks one more exposure filter. Every caller — the forward model, the EM class
start, the amplitude profile and ``backproject`` — takes these from here; the batches take the
dose-mask radius (:func:`dose_cutoff_radius_px`) so that a batch decodes only the points it keeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hetfield.imaging.exposure import OPTIMAL_EXPOSURE_FACTOR

if TYPE_CHECKING:  # annotations only: torch is imported where the transfer is computed
    import torch

# The per-image parameters the transfer reads (arrays.npz names, Batch attributes).
TRANSFER_PARAMETERS = (
    "pixel_size_A",
    "defocus_u_A",
    "defocus_v_A",
    "defocus_angle_deg",
    "voltage_kV",
    "cs_mm",
    "amplitude_contrast",
    "phase_shift_deg",
    "ctf_bfactor_A2",
    "ctf_scale",
    "dose_e_per_A2",
    "ctf_premultiplied",
    "dose_weighted",
)


@dataclass(frozen=True)
class Transfer:
    """Each ``(n, m)``: ``ctf`` (times ``ctf_scale``), ``factor`` (multiplies the slice), ``keep``
    (bool dose mask) and ``exposure`` (``g``: the dose filter, squared for dose-weighted stacks)."""

    ctf: "torch.Tensor"
    factor: "torch.Tensor"
    keep: "torch.Tensor"
    exposure: "torch.Tensor"


def transfer(
    k, pixel_size_A, defocus_u_A, defocus_v_A, defocus_angle_deg, voltage_kV, cs_mm, amplitude_contrast, phase_shift_deg, ctf_bfactor_A2,
    ctf_scale, dose_e_per_A2, ctf_premultiplied, dose_weighted, *, dose_weight: bool, dose_mask: bool,
) -> Transfer:
    """The transfer of ``n`` images at ``k`` ``(m, 2)`` cycles/px (see the module docstring).

    Per-image parameters are ``(n,)`` tensors (``ctf_premultiplied``, ``dose_weighted`` bool);
    the results take the dtype and device of ``k``'s computation with them.
    """
    import torch

    from hetfield.imaging.ctf import ctf_2d
    from hetfield.imaging.exposure import dose_filter
    from hetfield.imaging.exposure import dose_mask as exposure_mask

    kk = k[None].expand(ctf_scale.shape[0], -1, -1)
    ctf = ctf_2d(
        kk, pixel_size_A, defocus_u_A, defocus_v_A, defocus_angle_deg, voltage_kV, cs_mm, amplitude_contrast, phase_shift_deg, ctf_bfactor_A2
    ) * ctf_scale[:, None]
    factor = torch.where(ctf_premultiplied[:, None], ctf * ctf, ctf)
    if dose_weight:
        f = dose_filter(kk, pixel_size_A, dose_e_per_A2, voltage_kV)
        exposure = torch.where(dose_weighted[:, None], f * f, f)
        factor = factor * exposure
    else:
        exposure = torch.ones_like(ctf)
    if dose_mask:
        keep = exposure_mask(kk, pixel_size_A, dose_e_per_A2, voltage_kV)
    else:
        keep = torch.ones_like(factor, dtype=torch.bool)
    return Transfer(ctf=ctf, factor=factor, keep=keep, exposure=exposure)


def transfer_of(params: Mapping[str, Any] | Any, k, *, dose_weight: bool, dose_mask: bool) -> Transfer:
    """:func:`transfer` with the parameters read from ``params``: a mapping of ``(n,)`` tensors by
    name, or an object with them as attributes (a :class:`~hetfield.data.batching.Batch`)."""
    get = params.__getitem__ if isinstance(params, Mapping) else lambda name: getattr(params, name)
    return transfer(k, *(get(name) for name in TRANSFER_PARAMETERS), dose_weight=dose_weight, dose_mask=dose_mask)


def dose_cutoff_radius_px(dose, pixel_size_A, voltage_kV, box: int) -> np.ndarray:
    """Largest lattice radius (pixels) each image keeps under the dose mask ``dose <= 2.51284 Ne(s)``."""
    scale = np.clip(0.8 + 0.2 * (np.asarray(voltage_kV, np.float64) - 200.0) / 100.0, 0.8, 1.0)
    ne_needed = np.asarray(dose, np.float64) / (OPTIMAL_EXPOSURE_FACTOR * scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.power(np.maximum(ne_needed - 2.8141, 0.0) / 0.24499, -1.0 / 1.6649)  # 1/Å
    return np.where(ne_needed > 2.8141, s * box * np.asarray(pixel_size_A, np.float64), np.inf)
