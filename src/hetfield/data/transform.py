"""Per-image preprocessing of ``setup``: read the images of a chunk of the table, window them, take
the centred 2D Fourier transform, Fourier-crop, keep Hartley values on the odd ``D+1`` lattice and
apply each image's contrast sign; plus the one global standard deviation the cache is divided by.
"""

from __future__ import annotations

from typing import Any

from hetfield.data.cache import PreprocessSettings
from hetfield.errors import InputError

CHUNK_IMAGES = 1024  # images read and transformed at once: bounds memory, not speed


def read_chunk(table_chunk, stacks: dict[str, Any]):
    """Images of the chunk's rows as ``(n, D, D)`` float32, one read per distinct stack."""
    import numpy as np

    from hetfield.io.mrc import open_stack

    paths = table_chunk["image_path"].to_numpy()
    idx = table_chunk["image_index"].to_numpy()
    out = None
    for path in dict.fromkeys(paths):
        stack = stacks.get(path)
        if stack is None:
            stack = stacks[path] = open_stack(path)
        rows = np.flatnonzero(paths == path)
        data = stack.read(idx[rows])
        if out is None:
            out = np.empty((len(paths),) + data.shape[1:], dtype=np.float32)
        out[rows] = data
    return out


def contrast_signs(table_chunk, invert: bool):
    """``(n,)`` ±1 per image: RELION stacks hold white particles, ``image = -CTF * P`` in our CTF
    convention, so they are inverted; CTF-premultiplied images hold ``CTF * (-CTF) * P`` with
    RELION's (opposite-sign) CTF, i.e. ``+CTF² P`` already, and are left as they are (measured on
    the WarpTools export: positive correlation with ``+CTF² P`` of its consensus map)."""
    import numpy as np

    pre = table_chunk["ctf_premultiplied"].to_numpy(bool)
    return np.where(invert & ~pre, -1.0, 1.0).astype(np.float32)


def hartley_images(images, settings: PreprocessSettings, window, out_box: int, signs):
    """Windowed images ``(n, D, D)`` → Hartley values ``(n, out_box+1, out_box+1)`` float32 (unscaled),
    multiplied by the per-image contrast ``signs``."""
    import torch

    from hetfield.imaging.hartley import fft2_center, symmetrize

    x = torch.from_numpy(images)
    if window is not None:
        x = x * window
    f = fft2_center(x.to(torch.float64))
    d = x.shape[-1]
    if out_box != d:
        lo = d // 2 - out_box // 2
        f = f[..., lo : lo + out_box, lo : lo + out_box]
    h = symmetrize(f.real - f.imag) * torch.from_numpy(signs).to(f.real.dtype)[:, None, None]
    return h.to(torch.float32).numpy()


def check_finite(images, table_chunk, where: str) -> None:
    import numpy as np

    finite = np.isfinite(images).all(axis=(1, 2))
    if not finite.all():
        i = int(np.argmin(finite))
        r = table_chunk.iloc[i]
        raise InputError(
            f"{where}: image {int(r['image_index']) + 1}@{r['image_path']} (row {int(r['source_row']) + 1}) "
            "contains NaN or infinite pixels; remove the particle or re-extract it"
        )


def normalization_std(table, settings, window, out_box, stacks, rng, where, sample_size: int) -> float:
    """One standard deviation of the Hartley values of ``min(n, sample_size)`` images drawn by ``rng``
    (their pixels checked on the way); InputError when the images are constant."""
    import numpy as np

    n = len(table)
    k = min(n, sample_size)
    sample = np.sort(rng.choice(n, size=k, replace=False)) if k < n else np.arange(n)
    total, total_sq, count = 0.0, 0.0, 0
    for start in range(0, k, CHUNK_IMAGES):
        rows = table.iloc[sample[start : start + CHUNK_IMAGES]]
        imgs = read_chunk(rows, stacks)
        check_finite(imgs, rows, where)
        h = hartley_images(imgs, settings, window, out_box, contrast_signs(rows, settings.invert)).astype(np.float64)
        total += h.sum()
        total_sq += np.square(h).sum()
        count += h.size
    mean = total / count
    var = total_sq / count - mean * mean
    std = float(np.sqrt(max(var, 0.0)))
    if not np.isfinite(std) or std <= 0:
        raise InputError(f"{where}: the images are constant (standard deviation {std}); check the stacks")
    return std
