"""The objective: per-particle errors, the mixture likelihood over classes, and the latent's KL.

Loss of particle ``p`` (all its images ``i``):

* per class ``c``: ``err_pc = sum_i w_i SE_ic / sum_i w_i n_i`` — the tilt-weighted (``w_i = cos tilt``)
  mean squared error over the decoded, unmasked points ``n_i`` of the particle's images;
* ``K = 1``: ``data_p = err_p``; ``K > 1``: the mixture negative log-likelihood of the particle's
  ``n_p`` values, ``-logsumexp_c [log π_pc - n_p err_pc / (2σ²)]`` with ``π_p = softmax(scores_p)``
  and ``σ = std_noise`` the noise standard deviation in normalised data units (data are scaled to
  unit variance, so ``σ ≈ 1`` at low SNR). Summing over values, not averaging, makes the class
  posterior a calibrated Bayesian one (Hydra's per-value mean keeps posteriors soft whatever the
  data say). It is multiplied by ``2σ²/n_p`` to put it on the per-value scale of ``err`` (it equals
  ``err`` when one class takes all the weight), so ``beta`` means the same for every K;
* ``loss_p = data_p + beta * KL_p / n_p`` (``n_p`` = decoded values of the particle: the data term
  is a per-value mean, so the KL is spread over the same values); autodecoder latents get the
  matching Gaussian prior ``|z|²/2`` instead of the KL;
* with a field prior (:mod:`hetfield.train.field_prior`) ``+ sum_c sum_i w_i sum_k λ(|k|) |H_ic(k)|² /
  sum_i w_i n_i``: the same per-value weighting as the error, every decoded class's fields at the
  particle's slices (sparse class decoding: each class's term divided by the share of the batch's
  particles decoding it, so that its expected prior is a full pass's).

Sparse class decoding (``active``, chosen by :mod:`hetfield.train.class_decoding`): only the classes
``A_p`` holding posterior mass are decoded, and the prior is renormalised over them, so the data term
is ``-logsumexp_{c∈A} [log π̃_pc + loglik_pc]`` with ``π̃ = π / π(A)``: the likelihood given that the
class is in ``A``. It differs from the full term by ``(2σ²/n_p)·|log(1-δ) - log(1-ε)|`` nats per
value at most, ``δ`` the posterior and ``ε`` the prior mass of the dropped classes (the field
gradients by the weight ``δ`` they would have had); dropped classes get responsibility 0, and their
scores no gradient, so the score table never pushes them towards -inf.
"""

from __future__ import annotations

import torch

from hetfield.imaging.exposure import tilt_weight as cos_tilt
from hetfield.model.forward import Observation, Rendering


def image_errors(r: Rendering, obs: Observation) -> tuple[torch.Tensor, torch.Tensor]:
    """``(squared error (n, K), decoded values (n,))`` of every image."""
    keep, pw = r.mask, r.weights
    se = keep[:, None, :] * ((r.prediction_k - obs.y_k[:, None, :]) ** 2 + pw * (r.prediction_mk - obs.y_mk[:, None, :]) ** 2)
    return se.sum(-1), (keep * (1 + pw)).sum(-1)


def tilt_weights(batch, n_values: torch.Tensor, tilt_weight: bool) -> torch.Tensor:
    """``(n,)`` ``cos(tilt)`` per image (ones without ``tilt_weight``)."""
    return cos_tilt(batch.stage_tilt_deg) if tilt_weight else torch.ones_like(n_values)


def particle_errors(batch, se_img: torch.Tensor, n_img: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``err (P, K)``, tilt-weighted value count ``wn_p (P,)`` and value count ``n_p (P,)`` per particle."""
    p_count, idx = batch.n_particles, batch.image_particle
    se_p = se_img.new_zeros(p_count, se_img.shape[1]).index_add_(0, idx, w[:, None] * se_img)
    wn_p = n_img.new_zeros(p_count).index_add_(0, idx, w * n_img).clamp_min(1e-8)
    n_p = n_img.new_zeros(p_count).index_add_(0, idx, n_img).clamp_min(1.0)
    return se_p / wn_p[:, None], wn_p, n_p


def mixture_data_term(err, wn_p, log_pi, std_noise: float, hold_classes: bool, active: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(data_p (P,), responsibilities (P, K))`` of a mixture (see the module docstring).

    ``active (P, K)`` bool (sparse class decoding): only these classes were decoded; ``log_pi`` is
    then the prior renormalised over them (-inf elsewhere, :meth:`Reconstruction.class_log_prior`),
    so the others drop out of the logsumexp and get responsibility 0 and no gradient.
    """
    # Gaussian log-likelihood of all the particle's (tilt-weighted) values under each class.
    two_var = 2.0 * std_noise * std_noise
    loglik = -wn_p[:, None] * err / two_var
    if active is not None:
        # An undecoded class's err is of a zero prediction: keep it out of every sum (where, not a
        # product: -inf · 0 would be NaN).
        loglik = torch.where(active, loglik, torch.zeros_like(loglik))
        err = torch.where(active, err, torch.zeros_like(err))
    if hold_classes:
        # The partition is held at the score table's prior: each field learns its own particles.
        data = (torch.softmax(log_pi.detach(), dim=-1) * err).sum(-1)
    else:
        data = -(two_var / wn_p) * torch.logsumexp(log_pi + loglik, dim=-1)
    return data, torch.softmax(log_pi + loglik, dim=-1).detach()


def field_prior_penalty(
    r: Rendering, batch, w: torch.Tensor, wn_p: torch.Tensor, prior_weight: torch.Tensor, active: torch.Tensor | None = None
) -> torch.Tensor:
    """``(P,)``: the fields' Gaussian prior at the batch's slices; ``prior_weight (m,)`` is ``λ`` per decoded point.

    ``active (P, K)`` (sparse class decoding): class ``c``'s term is divided by the share of the
    batch's particles decoding it. Its prior is then, in expectation over batches, the one a full
    pass gives it (every particle's slices), not one that grows with the class's size: without this a
    small class was barely regularised in sparse epochs (three simulated classes: the first sparse
    epoch's validation loss 8e-3 below the full pass's, 1.6e-4 with it).
    """
    keep, pw = r.mask, r.weights
    per_class = (keep[:, None, :] * prior_weight * (r.values_k**2 + pw * r.values_mk**2)).sum(-1)  # (n, K)
    if active is None:
        pen = per_class.sum(-1)
        return pen.new_zeros(batch.n_particles).index_add_(0, batch.image_particle, w * pen) / wn_p
    pen = per_class.new_zeros(batch.n_particles, per_class.shape[1]).index_add_(0, batch.image_particle, w[:, None] * per_class)
    share = active.to(pen.dtype).mean(0).clamp_min(1.0 / active.shape[0])
    return (pen * (active / share)).sum(-1) / wn_p


def latent_penalty(mu, logvar, like: torch.Tensor) -> torch.Tensor:
    """``(P,)``: the encoder's KL to N(0, 1), the autodecoder's ``|z|²/2``, or zeros without a latent."""
    if mu is not None and logvar is not None:
        return -0.5 * (1 + logvar - mu * mu - torch.exp(logvar)).sum(-1)
    if mu is not None:
        return 0.5 * (mu * mu).sum(-1)
    return torch.zeros_like(like)


def objective(
    r: Rendering,
    obs: Observation,
    batch,
    *,
    mu,
    logvar,
    log_pi,
    beta: float,
    std_noise: float,
    tilt_weight: bool,
    hold_classes: bool,
    active: torch.Tensor | None = None,
    prior_weight: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The batch's ``loss`` (to minimise) and what training reports: ``data``, ``kl``, ``err``, and
    with classes (``log_pi`` given) ``log_pi`` and ``responsibility``; ``mu``/``logvar`` with a latent.
    ``active (P, K)``: the classes decoded per particle (sparse class decoding; None: all);
    ``prior`` with ``prior_weight``."""
    se_img, n_img = image_errors(r, obs)
    w = tilt_weights(batch, n_img, tilt_weight)
    err, wn_p, n_p = particle_errors(batch, se_img, n_img, w)
    out: dict[str, torch.Tensor] = {"err": err.detach()}
    if log_pi is not None:
        data, out["responsibility"] = mixture_data_term(err, wn_p, log_pi, std_noise, hold_classes, active)
        out["log_pi"] = log_pi.detach()
    else:
        data = err[:, 0]
    kl = latent_penalty(mu, logvar, data)
    loss = (data + beta * kl / n_p).mean()
    if prior_weight is not None:
        prior = field_prior_penalty(r, batch, w, wn_p, prior_weight, active)
        loss = loss + prior.mean()
        out["prior"] = prior.detach().mean()
    out.update(loss=loss, data=data.detach().mean(), kl=kl.detach().mean())
    if mu is not None:
        out["mu"] = mu.detach()
        if logvar is not None:
            out["logvar"] = logvar.detach()
    return out
