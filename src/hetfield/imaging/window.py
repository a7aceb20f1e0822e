"""Soft circular real-space window applied to images before their transform."""

from __future__ import annotations

import numpy as np


def soft_circular_window(box: int, inner: float = 0.8, outer: float = 0.9) -> np.ndarray:
    """``(box, box)`` float32: 1 inside ``inner * box/2``, a cosine fall-off to 0 at ``outer * box/2``.

    Radii are fractions of the half box, measured from the centre pixel ``box // 2``.
    """
    if not 0 < inner < outer <= 1.5:
        raise ValueError(f"window radii must satisfy 0 < inner < outer, got {inner}, {outer}")
    c = np.arange(box) - box // 2
    r = np.hypot(*np.meshgrid(c, c, indexing="ij")) / (box / 2)
    w = np.clip((outer - r) / (outer - inner), 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * w)).astype(np.float32)
