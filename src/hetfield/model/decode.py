"""The one volume decoder: a trained model's fields → real-space volumes, batched over latents and classes.

Decoding evaluates the fields on the centred 3D frequency grid inside the Nyquist sphere (zero
outside, where they were never trained) and inverts the Hartley transform, for many latent points
and classes at once. Nothing else is zeroed: Hydra's export zeroed the whole central Fourier line.

``box``: a box other than the model's is a Fourier crop (smaller, larger voxels) or a zero pad
(larger, smaller voxels): the frequency spacing stays ``1/D`` of the training box, so the voxel size
becomes ``pixel_size * D / box`` (:func:`output_voxel_size`) and densities keep their scale.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def output_voxel_size(pixel_size_A: float, model_box: int, box: int | None) -> float:
    return float(pixel_size_A) * model_box / (box or model_box)


def _grid_points(model_box: int, box: int):
    c = (np.arange(box) - box // 2) / model_box
    qz, qy, qx = np.meshgrid(c, c, c, indexing="ij")
    q = np.stack([qx, qy, qz], -1).reshape(-1, 3)
    inside = np.flatnonzero(np.linalg.norm(q, axis=1) <= 0.5 + 1e-6)
    return q[inside], inside


def decode_volumes(
    model,
    z: np.ndarray | None,
    class_idx,
    box: int | None = None,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """``(B, d, d, d)`` float32 volumes ``[z, y, x]`` of classes ``class_idx`` at latents ``z``.

    ``z``: ``(B, zdim)`` (None or ``(B, 0)`` for a model without latent); ``class_idx``: an int or
    ``(B,)`` ints. Runs on the model's device, ``batch_size`` volumes per pass.
    """
    import torch

    from hetfield.imaging.hartley import iht3_center

    model_box = int(model.shape.box)
    d = int(box or model_box)
    if d < 2 or d % 2:
        raise ValueError(f"box must be even and >= 2, got {d}")
    n_classes = int(model.shape.n_classes)
    if z is None or model.zdim == 0:
        # No latent: one volume per class index (or per row of z, which the field ignores).
        n = int(np.size(class_idx)) if z is None or np.ndim(class_idx) else len(z)
        z_arr = None
    else:
        z_arr = np.atleast_2d(np.asarray(z, np.float32))
        if z_arr.shape[1] != model.zdim:
            raise ValueError(f"latent points have {z_arr.shape[1]} coordinates; the model's zdim is {model.zdim}")
        n = z_arr.shape[0]
    cls = np.broadcast_to(np.asarray(class_idx, np.int64), (n,)).copy()
    if np.any(cls < 0) or np.any(cls >= n_classes):
        raise ValueError(f"class index out of range 0..{n_classes - 1}: {sorted(set(cls.tolist()))}")
    device = next(model.parameters()).device
    q_np, inside = _grid_points(model_box, d)
    q_all = torch.as_tensor(q_np, dtype=torch.float32, device=device)
    inside_t = torch.as_tensor(inside, device=device)
    hidden = int(getattr(model.fields, "hidden", 256))
    out = np.empty((n, d, d, d), np.float32)
    scale = (d / model_box) ** 3
    done = 0
    with torch.no_grad():
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            nb = stop - start
            zz = None if z_arr is None else torch.as_tensor(z_arr[start:stop], device=device)
            sel = torch.as_tensor(cls[start:stop], device=device)
            values = torch.empty(nb, q_all.shape[0], device=device)
            chunk = max(1024, (1 << 24) // max(nb * n_classes * hidden, 1))
            for s in range(0, q_all.shape[0], chunk):
                q = q_all[s : s + chunk][None].expand(nb, -1, -1)
                f = model.field_values(q, zz)  # (nb, K, m, 2)
                f = f[torch.arange(nb, device=device), sel]
                values[:, s : s + chunk] = f[..., 0] - f[..., 1]
            h = torch.zeros(nb, d * d * d, dtype=torch.float64, device=device)
            h[:, inside_t] = values.double()
            vol = iht3_center(h.reshape(nb, d, d, d)) * scale
            out[start:stop] = vol.float().cpu().numpy()
            done = stop
            if progress is not None:
                progress(done, n)
    return out
