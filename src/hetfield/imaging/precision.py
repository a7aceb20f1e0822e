"""Mixed precision: which computations stay in fp32 whatever autocast says.

bf16 keeps 8 bits of mantissa, so a phase ``2π q·r`` of hundreds of radians (box 128: ``|q| <= 0.5``
cycles/px, ``|r|`` up to 64 px) is off by radians: measured with CPU autocast before this module,
up to 0.5 rad at box 32, 1.2 at 64 and 2.4 at 128. Phases, rotated frequencies and Fourier
features are therefore computed inside :func:`full_precision` on fp32 inputs; only the networks'
matrix products run in bf16.
"""

from __future__ import annotations

import contextlib

import torch

_LOW = (torch.float16, torch.bfloat16)


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in fp32 if it is a half type; anything else (fp32, fp64, numpy) is returned as it is."""
    return x.float() if getattr(x, "dtype", None) in _LOW else x


@contextlib.contextmanager
def full_precision(*tensors: torch.Tensor):
    """Autocast off for the device type of ``tensors`` (CPU when none is given)."""
    device_type = tensors[0].device.type if tensors else "cpu"
    if not torch.is_autocast_enabled(device_type):
        yield
        return
    with torch.autocast(device_type=device_type, enabled=False):
        yield
