"""What an epoch's ``latent.N.npz`` holds: per-particle latents, class probabilities, refined poses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hetfield.train.config import TrainConfig
from hetfield.train.signals import checked


def compute_latents(model, ds, cfg: TrainConfig, device, resp=None, val_particles=None, batch_size: int = 64, check=None) -> dict[str, Any]:
    """Per-particle deterministic latents, class probabilities and (refined) poses.

    ``class_probs`` are the posterior class probabilities (responsibilities) each particle got in
    its last training step; ``class_gate`` is the score table's ``softmax(scores)``, the learned
    prior that Hydra reports instead.
    """
    import numpy as np
    import torch

    from hetfield.data.batching import ParticleBatches

    out: dict[str, Any] = {}
    model.eval()
    if model.zdim:
        loader = ParticleBatches(ds, model.points, batch_size, shuffle=False, prefetch=True, dose_mask=cfg.dose_mask)
        mus, logvars = [], []
        for batch in checked(loader.epoch(0), check):
            mu, logvar = model.embed(batch.to(device), dose_weight=cfg.dose_weight, dose_mask=cfg.dose_mask)
            mus.append(mu.float().cpu())
            logvars.append(logvar.float().cpu())
        out["z_mu"] = torch.cat(mus).numpy()
        out["z_logvar"] = torch.cat(logvars).numpy()
    if model.scores is not None:
        out["class_gate"] = torch.softmax(model.scores.scores.detach().float(), -1).cpu().numpy()
        probs = resp.detach().float().cpu().numpy() if resp is not None else out["class_gate"]
    else:
        probs = np.ones((ds.n_particles, 1), np.float32)
    out["class_probs"] = probs.astype(np.float32)
    held_out = np.zeros(ds.n_particles, bool)
    if val_particles is not None:
        held_out[val_particles] = True
    out["held_out"] = held_out
    out["class_idx"] = probs.argmax(1).astype(np.int64)
    if model.poses is not None:
        rotation, origin = model.poses.all_poses()
        out["rotation"] = rotation.detach().float().cpu().numpy()
        out["origin_px"] = origin.detach().float().cpu().numpy()
    model.train()
    return out


def write_latents(path: Path, arrays: dict[str, Any]) -> None:
    """``arrays`` as an ``.npz`` at ``path`` (numeric arrays only: it loads without pickle)."""
    import numpy as np

    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
