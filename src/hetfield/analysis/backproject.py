"""Weighted Fourier-space voxel backprojection of a prepared dataset, with half maps and their FSC.

For every image ``i`` and lattice point ``k`` inside the Nyquist circle (and the image's dose mask):

* the data ``y_i(k)`` (normalised Hartley values, contrast already set by ``setup`` so that
  ``image = CTF * projection``) are translated by ``+origin`` (which centres the particle);
* the transfer of one imaging pass is ``t = CTF * g`` (the CTF times RELION's ``ctf_scale``, as
  :func:`hetfield.imaging.transfer.transfer` gives it) with ``g`` the dose filter (``g**2`` for
  dose-weighted stacks). Ordinary images are multiplied by ``t``; CTF-premultiplied images already
  carry one CTF, so they are multiplied by ``g`` only. Both give ``E[m * y] = CTF**2 g**2 H`` and the
  weight ``CTF**2 g**2``, times ``cos(tilt)`` (the relative signal of a tilt image);
* ``m * y`` and the weight are inserted at ``q = k @ A`` (RELION matrix, see :mod:`hetfield.imaging`)
  into a ``D**3`` Hartley grid with trilinear weights (Hartley values obey the projection-slice
  theorem like Fourier values, and the grid is ``D``-periodic: ``+Nyquist`` folds onto ``-Nyquist``).

Reconstruction: ``H = num / (den + lambda(shell))``, a Wiener filter whose ``lambda = sigma**2 / tau**2``
per shell is estimated from the half maps themselves: with ``FSC = tau**2 / (tau**2 + sigma**2 / den)``,
``lambda = mean(den_half) * (1 - FSC) / FSC`` (FSC clipped to [1e-3, 0.999]). A first pass with a tiny
constant ``lambda`` gives that FSC. Then ``volume = iht3(H)`` ``[z, y, x]``. Particles go whole to one
half map (even particle index → half 1, odd → half 2), so the halves are independent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from hetfield.errors import ConfigError, InputError


@dataclass
class BackprojectionResult:
    half1: np.ndarray
    half2: np.ndarray
    full: np.ndarray
    fsc: object  # metrics.FSC of the half maps
    fsc_masked: object
    pixel_size_A: float
    n_particles: tuple[int, int]
    n_images: tuple[int, int]
    info: dict = field(default_factory=dict)


def select_images(ds, particles: np.ndarray | None = None, max_images: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(particles, image_indices)`` to use: whole particles, in order, until ``max_images``."""
    offsets = np.asarray(ds.offsets, np.int64)
    n = ds.n_particles
    if particles is None:
        particles = np.arange(n)
    particles = np.asarray(particles, np.int64)
    bad = particles[(particles < 0) | (particles >= n)]
    if bad.size:
        raise InputError(f"particle index {int(bad[0])} is out of range: the dataset has {n} particles; give 0-based indices 0..{n - 1}")
    particles = np.unique(particles)
    counts = offsets[particles + 1] - offsets[particles]
    if max_images is not None:
        if max_images < 1:
            raise ConfigError(f"--max-images {max_images}: give a positive number of images")
        cum = np.cumsum(counts)
        keep = max(1, int(np.searchsorted(cum, max_images, side="right")))
        particles, counts = particles[:keep], counts[:keep]
    images = np.concatenate([np.arange(offsets[p], offsets[p + 1]) for p in particles]) if particles.size else np.zeros(0, np.int64)
    return particles, images


def _accumulate(ds, images: np.ndarray, grid: int, dose_weight: bool, tilt_weight: bool, use_dose_mask: bool,
                chunk: int, progress: Callable[[int], None] | None):
    """``(num, den)`` on a ``(D+2)**3`` grid (folded later) from the given images."""
    import torch

    from hetfield.imaging.exposure import tilt_weight as cos_tilt
    from hetfield.imaging.shifts import translate_hartley_pair
    from hetfield.imaging.transfer import TRANSFER_PARAMETERS, transfer_of

    d = ds.box
    lat = ds.lattice
    pts = np.flatnonzero(lat.circular_mask())
    k = torch.as_tensor(lat.coords[pts], dtype=torch.float64)  # (M, 2) kx, ky
    partner = lat.partner[pts]
    g = grid
    num = torch.zeros(g**3, dtype=torch.float64)
    den = torch.zeros(g**3, dtype=torch.float64)
    arr = ds.arrays
    done = 0
    for start in range(0, images.size, chunk):
        idx = images[start : start + chunk]
        n = idx.size
        flat = np.asarray(ds.images[np.sort(idx)], np.float64).reshape(n, -1)
        order = np.argsort(np.argsort(idx))  # back to idx order after the sorted (faster) read
        flat = flat[order]
        y_k = torch.as_tensor(flat[:, pts])
        y_mk = torch.as_tensor(flat[:, partner])

        def a(name):
            return torch.as_tensor(np.asarray(arr[name][idx], bool if name in ("ctf_premultiplied", "dose_weighted") else np.float64))

        yc, _ = translate_hartley_pair(y_k, y_mk, k, a("origin_px"))
        t = transfer_of({name: a(name) for name in TRANSFER_PARAMETERS}, k, dose_weight=dose_weight, dose_mask=use_dose_mask)
        ctf, filt, premult = t.ctf, t.exposure, a("ctf_premultiplied")[:, None]
        keep = t.keep.to(ctf.dtype)
        w = cos_tilt(a("stage_tilt_deg"))[:, None] if tilt_weight else torch.ones(n, 1, dtype=torch.float64)
        w = w.clamp_min(0) * keep
        mult = torch.where(premult, filt, ctf * filt)
        values = (w * mult * yc).reshape(-1)
        weights = (w * (ctf * filt) ** 2).reshape(-1)

        rot = torch.as_tensor(np.asarray(arr["rotation"][idx], np.float64))
        q = torch.einsum("mj,njd->nmd", k, rot[:, :2, :]).reshape(-1, 3)  # (qx, qy, qz) cycles/px
        pos = q * d + d / 2  # grid index of (x, y, z); in [0, d]
        i0 = torch.floor(pos).long().clamp(0, g - 2)
        fr = pos - i0
        for corner in range(8):
            ox, oy, oz = corner & 1, (corner >> 1) & 1, (corner >> 2) & 1
            wx = fr[:, 0] if ox else 1 - fr[:, 0]
            wy = fr[:, 1] if oy else 1 - fr[:, 1]
            wz = fr[:, 2] if oz else 1 - fr[:, 2]
            tri = wx * wy * wz
            flat_idx = ((i0[:, 2] + oz) * g + (i0[:, 1] + oy)) * g + (i0[:, 0] + ox)
            num.index_add_(0, flat_idx, tri * values)
            den.index_add_(0, flat_idx, tri * weights)
        done += n
        if progress is not None:
            progress(done)
    return num.reshape(g, g, g).numpy(), den.reshape(g, g, g).numpy()


def _fold(a: np.ndarray, d: int) -> np.ndarray:
    """``(D+2)**3`` → ``D**3``: indices ``D, D+1`` wrap onto ``0, 1`` along every axis (periodicity)."""
    out = a.copy()
    for axis in range(3):
        lo = np.take(out, [0, 1], axis=axis) + np.take(out, [d, d + 1], axis=axis)
        out = np.concatenate([lo, np.take(out, np.arange(2, d), axis=axis)], axis=axis)
    return out


def _volume(h: np.ndarray) -> np.ndarray:
    from hetfield.imaging.hartley import iht3_center

    return np.asarray(iht3_center(h), np.float32)


def backproject(
    ds,
    particles: np.ndarray | None = None,
    max_images: int | None = None,
    dose_weight: bool = True,
    tilt_weight: bool = True,
    use_dose_mask: bool = True,
    chunk: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> BackprojectionResult:
    """Half maps, full map and FSC from the dataset's images at their poses (see the module doc)."""
    from hetfield.analysis.metrics import fsc, soft_sphere_mask
    from hetfield.imaging.lattice import shell_index

    d = ds.box
    particles, images = select_images(ds, particles, max_images)
    if particles.size < 2:
        raise InputError(f"{ds.path}: backprojection needs at least 2 particles (one per half map); {particles.size} selected: select more with --particles or --max-images")
    part_of_image = np.asarray(ds.arrays["particle"], np.int64)[images]
    halves = [images[part_of_image % 2 == 0], images[part_of_image % 2 == 1]]
    if min(h.size for h in halves) == 0:
        # All selected particles share a parity: split them alternately instead.
        sel_half = {int(p): i % 2 for i, p in enumerate(particles)}
        mask = np.array([sel_half[int(p)] for p in part_of_image])
        halves = [images[mask == 0], images[mask == 1]]
    total = int(images.size)
    done_before = [0]

    def prog(done_in_half):
        if progress is not None:
            progress(done_before[0] + done_in_half, total)

    acc = []
    for h in halves:
        num, den = _accumulate(ds, h, d + 2, dose_weight, tilt_weight, use_dose_mask, chunk, prog)
        acc.append((_fold(num, d), _fold(den, d)))
        done_before[0] += h.size
    shells = shell_index(d)
    inside = shells <= d // 2
    n_shell = d // 2 + 1
    den_half = 0.5 * (acc[0][1] + acc[1][1])
    mean_den = np.bincount(shells[inside], weights=den_half[inside], minlength=n_shell) / np.maximum(
        np.bincount(shells[inside], minlength=n_shell), 1)
    eps = 1e-3 * float(den_half[inside].mean()) + 1e-12

    def ratio(num, den, lam):
        h = np.zeros_like(num)
        np.divide(num, den + lam, out=h, where=inside & (den + lam > 0))
        return h

    def maps(lam):
        return [_volume(ratio(num, den, lam)) for num, den in acc]

    h1, h2 = maps(eps)
    f0 = fsc(h1, h2, ds.pixel_size_A)
    c = np.clip(f0.fsc, 1e-3, 0.999)
    lam_shell = mean_den * (1 - c) / c + eps
    lam = np.zeros_like(den_half)
    lam[inside] = lam_shell[shells[inside]]
    h1, h2 = maps(lam)
    num_all = acc[0][0] + acc[1][0]
    den_all = acc[0][1] + acc[1][1]
    full = _volume(ratio(num_all, den_all, lam))
    f1 = fsc(h1, h2, ds.pixel_size_A)
    f1m = fsc(h1, h2, ds.pixel_size_A, mask=soft_sphere_mask(d))
    n_p = (int(np.unique(part_of_image[np.isin(images, halves[0])]).size), int(np.unique(part_of_image[np.isin(images, halves[1])]).size))
    coverage = float((den_all[inside] > 1e-3 * den_all[inside].mean()).mean())
    return BackprojectionResult(
        half1=h1, half2=h2, full=full, fsc=f1, fsc_masked=f1m, pixel_size_A=ds.pixel_size_A,
        n_particles=n_p, n_images=(int(halves[0].size), int(halves[1].size)),
        info={"fourier_coverage": coverage, "wiener_lambda_per_shell": lam_shell.tolist(), "fsc_first_pass": f0.fsc.tolist()},
    )
