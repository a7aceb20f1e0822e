"""Resolution-dependent regularisation of the fields (``--field-prior``): a Gaussian prior per shell.

Without it the fields fit noise wherever the data carry little signal (tomo-sim-50S: class maps
correlate 0.90 with the truth after a 52 Å low-pass but 0.45–0.56 unfiltered). RELION regularises
its maps with a Gaussian prior ``N(0, τ²(r))`` per voxel whose MAP estimate is the Wiener filter;
the same prior, put on the fields' values where the images observe them, is:

* per decoded value, a cost ``λ(r) |H|²`` in the units of the per-value squared error, with
  ``λ(r) = <f²>_r / SNR(r)``: ``f`` the CTF · exposure factor of the forward model and
  ``SNR = 2 FSC / (1 - FSC)`` the per-voxel SNR of the whole data set, from the FSC of half maps of
  a direct back-projection at the input poses (:func:`hetfield.analysis.backproject.backproject`,
  scaled up when it used a subset of the images). Every field gets the whole prior from every
  particle, so a class's prior does not depend on how many particles it holds;
* the fields' preconditioning (the amplitude profile ``A(r)``, which includes the noise) becomes
  the signal's, ``A s`` with ``s² = snr / (1 + snr)`` and ``snr = SNR / N_v`` the SNR of one value
  (``N_v`` values observe each voxel), so the prior is a unit Gaussian on the fields' output and
  their start (outputs of order one) is not deep in its tail where the data carry no signal.

``tau2_fudge`` (RELION's regularisation parameter ``T``, ``--tau2_fudge``) multiplies that SNR, so the
prior's variance: ``T = 1`` is the Wiener filter of the consensus back-projection. The fields are not
a linear estimate: measured on tomo-sim-50S (docs/internals.md, "The K = 1 latent"), the prior at
``T = 1`` held the fields' high shells back in 20 epochs (FSC to the truth at shell 8 0.13–0.58 over
12 maps, 0.24–0.63 at ``T = 4``, with the same map correlation), so the default is 4, RELION's for
3D classification.

The prior also slows the fields' high shells: their output is under the signal's amplitude ``A s``,
so their gradients there are ``s`` times smaller. ``precondition`` (``--field-prior-precondition``)
scales each shell's gradient by ``min(1/s, precondition)`` on the way back
(:func:`gradient_weights`, ``model.field_grad_weight``); the values, and so the objective, are
unchanged.

The FSC's running minimum is used: where it has fallen to zero it fluctuates by ~1/sqrt(voxels),
and a chance rise there is not signal. It needs poses: ab initio training has none to start from.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from hetfield.imaging.lattice import shell_index
from hetfield.imaging.transfer import transfer_of

MAX_IMAGES = 20000  # the half maps' images: the FSC is precise long before
SAMPLE_PARTICLES = 512  # particles whose transfer gives <f²>_r
FSC_FLOOR = 1e-3


def shell_prior(
    model, batches, fsc_half, n_images: int, n_images_fsc: int, dose_weight: bool = True, dose_mask: bool = True, tau2_fudge: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(λ(r), s(r))`` per shell (see the module docstring) from the half-map FSC ``fsc_half`` of
    ``n_images_fsc`` of the ``n_images`` training images and the transfer of ``batches``; the SNR
    times ``tau2_fudge``."""
    n = model.amplitude.shape[0]
    den = torch.zeros(n, dtype=torch.float64)
    cnt = torch.zeros(n, dtype=torch.float64)
    pts = model.points
    seen = 0
    for batch in batches:
        m = batch.extent
        t = transfer_of(batch, pts.k[:m], dose_weight=dose_weight, dose_mask=dose_mask)
        shell = pts.radius_px[:m].round().long().cpu()
        keep = t.keep.double().cpu()
        den.index_add_(0, shell, (t.factor.double().cpu() ** 2 * keep).sum(0))
        cnt.index_add_(0, shell, keep.sum(0))
        seen += batch.n_images
    f2 = den / cnt.clamp_min(1)
    c = torch.cummin(torch.as_tensor(np.asarray(fsc_half), dtype=torch.float64), 0).values.clamp(FSC_FLOOR, 0.999)
    snr = torch.full((n,), 2 * float(c[-1]) / (1 - float(c[-1])), dtype=torch.float64)
    snr[: min(n, c.shape[0])] = (2 * c / (1 - c))[:n]
    snr = snr * (n_images / max(n_images_fsc, 1)) * tau2_fudge
    # A half-lattice point observes the Hartley values at k and -k: two values, at q and -q.
    voxels = torch.as_tensor(np.bincount(shell_index(model.shape.box).ravel(), minlength=n)[:n], dtype=torch.float64)
    n_v = 2 * cnt * (n_images / max(seen, 1)) / voxels.clamp_min(1)
    snr_value = snr / n_v.clamp_min(1e-12)
    scale = torch.where(cnt > 0, torch.sqrt(snr_value / (1 + snr_value)), torch.ones_like(snr))
    lam = torch.where(cnt > 0, f2 / snr, torch.zeros_like(f2))
    return lam.float(), scale.float()


def gradient_weights(scale: torch.Tensor, precondition: float) -> torch.Tensor:
    """Per shell, ``min(1 / s(r), precondition)``: the backward's scale of the fields' gradient.

    The prior puts the fields' output under the signal's amplitude ``A s``, so a shell where the data
    carry little signal (``s`` small) also sends the shared networks a gradient ``s`` times smaller,
    and Adam, which normalises each weight's steps over all shells together, spends them on the low
    shells. Scaling the gradient back by ``1/s`` leaves the objective, and its optimum for fields
    flexible enough to fit each shell on its own, as they were. The cap keeps the empty shells
    (``s`` → 0), whose gradient is noise, from taking the steps over; measured on tomo-sim-50S
    (docs/internals.md, "The K = 1 latent"), K = 1: a cap of 4 or 8 sharpened every shell from 7 on
    and raised the map cc, 8 cost up to 0.04 at shells 4–6 where 4 cost up to 0.03; no cap, or
    ``(1/s)^1.5`` up to 64, cost the middle shells more."""
    return (1.0 / scale.clamp_min(1e-12)).clamp(1.0, float(precondition))


@torch.no_grad()
def initialise_field_prior(model, ds, cfg, particles, log=None, check=None) -> None:
    """Estimate the prior from ``particles`` (the training particles) and install it in ``model``:
    ``model.prior_weight`` and the signal's amplitude profile."""
    from hetfield.analysis.backproject import backproject
    from hetfield.data.batching import ParticleBatches
    from hetfield.train.signals import checked

    t0 = time.perf_counter()
    parts = np.asarray(particles)
    result = backproject(
        ds, particles=parts, max_images=MAX_IMAGES, dose_weight=cfg.dose_weight, tilt_weight=cfg.tilt_weight, use_dose_mask=cfg.dose_mask,
        progress=(lambda *_: check()) if check is not None else None,
    )
    sample = np.sort(np.random.default_rng(cfg.seed + 7).choice(parts, size=min(len(parts), SAMPLE_PARTICLES), replace=False))
    batches = ParticleBatches(ds, model.points, 32, shuffle=False, particles=sample, prefetch=False, dose_mask=cfg.dose_mask)
    n_images = int(np.diff(ds.offsets)[parts].sum())
    used = int(sum(result.n_images))
    lam, scale = shell_prior(model, checked(batches.epoch(0), check), result.fsc.fsc, n_images, used, dose_weight=cfg.dose_weight, dose_mask=cfg.dose_mask,
                              tau2_fudge=float(cfg.field_prior_tau2_fudge))
    model.prior_weight.copy_(lam.to(model.prior_weight.device))
    model.amplitude.mul_(scale.to(model.amplitude.device))
    model.field_grad_weight.copy_(gradient_weights(scale, cfg.effective_field_prior_precondition).to(model.field_grad_weight.device))
    if log is not None:
        shells = ", ".join(f"{v:.2f}" for v in np.asarray(result.fsc.fsc)[::4])
        log(f"field prior from the half-map FSC of {used} images ({time.perf_counter() - t0:.1f} s): FSC {shells} at shells 0, 4, …; "
            f"its SNR × {cfg.field_prior_tau2_fudge:g} (--field-prior-tau2-fudge); gradients scaled by up to "
            f"{float(model.field_grad_weight.max()):.2f} per shell (--field-prior-precondition {cfg.effective_field_prior_precondition:g})")
