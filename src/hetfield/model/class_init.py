"""Data-driven start of a mixture of K fields (K > 1).

Trained from uniform class scores, a mixture sits at a saddle: every field learns the consensus
and nothing tells them apart, or one field fits first and takes every particle (Hydra's collapse,
and ours on the low-SNR tomo-sim-50S set). As k-means++ does for EM, we start from a partition that
already follows the data:

1. the fields are trained together as one consensus for ``class_init_epochs``;
2. every particle's *residual* (data minus the consensus prediction) is back-projected at low
   resolution onto a coarse grid in the particle's frame — subtracting the consensus removes the
   orientation-dependent image of the common structure, leaving mostly the class difference;
3. k-means on the leading principal components of these residual maps gives the initial classes,
   written into the score table as the prior; every field restarts from the consensus.

The fields then specialise on their particles and the calibrated posterior refines the partition.
"""

from __future__ import annotations

import numpy as np
import torch

from hetfield.model.backprojection import backproject, backprojection_grid, ctf_weight, grid_radius_px
from hetfield.model.renderer import centre_data, image_factors

GRID_POINTS = 8
SCORE_STRENGTH = 3.0  # initial prior: softmax gives 0.95 to the k-means class when K = 2


@torch.no_grad()
def residual_maps(model, batches, box: int, dose_weight: bool, dose_mask: bool, n_particles: int, device) -> np.ndarray:
    """``(N, J)``: each particle's mean back-projected residual against field 0 (the consensus)."""
    pts = model.points
    grid = backprojection_grid(box, GRID_POINTS).to(device)
    n_low = max(int((pts.radius_px <= grid_radius_px(box, GRID_POINTS) + 1e-6).sum()), 1)
    out = np.zeros((n_particles, grid.shape[0]), np.float64)
    for batch in batches:
        batch = batch.to(device)
        m = min(batch.extent, n_low)
        rot, origin = model.poses_of(batch)
        yk, ymk = centre_data(batch.y_k[:, :m], batch.y_mk[:, :m], pts.k[:m], origin)
        ctf, factor, keep = image_factors(batch, pts, dose_weight=dose_weight, dose_mask_on=dose_mask, m=m)
        z = None
        if model.zdim:
            mu, _ = model.embed(batch, dose_weight=dose_weight, dose_mask=dose_mask)
            z = mu[batch.image_particle]
        q = pts.frequencies_3d(rot, m)
        f = model.field_values(q, z)[:, 0]  # (n, m, 2): the consensus field
        r_k = yk - factor * (f[..., 0] - f[..., 1])
        r_mk = ymk - factor * (f[..., 0] + f[..., 1])
        per_image = backproject(r_k, r_mk, ctf_weight(batch, ctf, keep.to(yk.dtype)), q, grid)
        sums = per_image.new_zeros(batch.n_particles, grid.shape[0]).index_add_(0, batch.image_particle, per_image)
        counts = torch.bincount(batch.image_particle, minlength=batch.n_particles).clamp_min(1)
        out[batch.particles.cpu().numpy()] = (sums / counts[:, None]).double().cpu().numpy()
    return out


def kmeans_partition(features: np.ndarray, n_classes: int, seed: int = 0, n_components: int = 8) -> np.ndarray:
    """Labels ``(N,)`` from k-means on the leading principal components of ``features``."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    n = features.shape[0]
    x = features - features.mean(0)
    x /= x.std() + 1e-12
    k = int(min(n_components, n - 1, x.shape[1]))
    if k >= 1 and n > n_classes:
        x = PCA(n_components=k, random_state=seed).fit_transform(x)
    return KMeans(n_clusters=min(n_classes, n), n_init=10, random_state=seed).fit_predict(x)


@torch.no_grad()
def restart_fields_from_consensus(model, optimizer) -> None:
    """Every field (and its optimiser moments) becomes a copy of field 0."""
    fields = model.fields
    for name, p in fields.named_parameters():
        if p.ndim and p.shape[0] == fields.n_classes:
            p[1:] = p[:1]
            state = optimizer.state.get(p, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][1:] = state[key][:1]


@torch.no_grad()
def initialise_classes(model, optimizer, ds, cfg, device, log=None) -> np.ndarray:
    """Steps 2–3 of the module docstring; returns the initial labels of every particle."""
    from hetfield.data.batching import ParticleBatches

    loader = ParticleBatches(ds, model.points, 32, shuffle=False, prefetch=False, dose_mask=cfg.dose_mask)
    was_training = model.training
    model.eval()
    feats = residual_maps(model, loader.epoch(0), ds.box, cfg.dose_weight, cfg.dose_mask, ds.n_particles, device)
    labels = kmeans_partition(feats, model.shape.n_classes, seed=cfg.seed)
    k = model.shape.n_classes
    scores = torch.zeros(ds.n_particles, k, device=model.scores.scores.device)
    scores[torch.arange(ds.n_particles), torch.as_tensor(labels, device=scores.device)] = SCORE_STRENGTH
    model.scores.scores.copy_(scores)
    state = optimizer.state.get(model.scores.scores, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state:
            state[key].zero_()
    restart_fields_from_consensus(model, optimizer)
    model.train(was_training)
    if log is not None:
        log(f"classes initialised from residual maps of the consensus: sizes {np.bincount(labels, minlength=k).tolist()}")
    return labels
