"""Held-out particles: which ones (seeded), and their data loss after every epoch.

Their loss is the model-selection criterion of ``sweep summarize`` and the overfitting signal of
``convergence``.
"""

from __future__ import annotations

from hetfield.train.config import TrainConfig
from hetfield.train.signals import checked


def split_validation(n_particles: int, fraction: float, seed: int):
    """``(train, validation)`` particle indices: a seeded ``floor(fraction·N)`` held out (none below 20)."""
    import numpy as np

    n_val = int(np.floor(fraction * n_particles))
    if n_val < 1:
        return np.arange(n_particles), np.zeros(0, np.int64)
    val = np.sort(np.random.default_rng([seed, 99]).choice(n_particles, size=n_val, replace=False))
    return np.setdiff1d(np.arange(n_particles), val), val


def validation_loss(model, ds, cfg: TrainConfig, particles, device, resp=None, consensus: bool = False, batch_size: int = 32, check=None) -> float | None:
    """Mean data loss of held-out particles: latents from the encoder's mean (no sampling), classes
    by the mixture likelihood under their untrained (uniform) scores. ``None`` without held-out
    particles or with autodecoder latents (which exist only for trained particles)."""
    import torch

    from hetfield.data.batching import ParticleBatches

    if len(particles) == 0 or model.latents is not None:
        return None
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        loader = ParticleBatches(ds, model.points, batch_size, shuffle=False, particles=particles, prefetch=False, dose_mask=cfg.dose_mask)
        for batch in checked(loader.epoch(0), check):
            batch = batch.to(device)
            out = model(batch, beta=0.0, std_noise=cfg.std_noise, dose_weight=cfg.dose_weight, tilt_weight=cfg.tilt_weight, dose_mask=cfg.dose_mask, sample=False, consensus_only=consensus)
            total += float(out["data"]) * batch.n_particles
            count += batch.n_particles
            if resp is not None and not consensus:
                resp.index_copy_(0, batch.particles, out["responsibility"].to(resp.dtype))
    model.train()
    return total / max(count, 1)
