"""The model a training builds: its shape from the options and the dataset, the amplitude profile
that preconditions its fields, and the starts fitted to the data before the first step."""

from __future__ import annotations

from typing import Callable

from hetfield.train.config import TrainConfig
from hetfield.train.signals import checked


def build_model(ds, cfg: TrainConfig):
    """``(Reconstruction, ModelShape)`` for ``cfg`` on dataset ``ds`` (pose table from its poses)."""
    import torch

    from hetfield.model.reconstruction import Reconstruction
    from hetfield.model.shape import ModelShape

    shape = ModelShape.from_config(cfg, ds)
    rot = torch.from_numpy(ds.arrays["rotation"]) if cfg.pose_estimation == "refine" else None
    org = torch.from_numpy(ds.arrays["origin_px"]) if cfg.pose_estimation == "refine" else None
    if cfg.pose_estimation == "abinit":  # input poses ignored: random rotations within the tilt geometry
        from hetfield.train.abinit_search import initial_poses

        rot, org = initial_poses(ds, cfg.seed)
    model = Reconstruction(shape, rot, org)
    model.fields.recompute = cfg.field_recompute
    return model, shape


def estimate_amplitude_profile(model, batches, dose_weight: bool = True, dose_mask: bool = True, floor: float = 0.1):
    """Radial amplitude of the volume's transform implied by the data: ``rms(y) / rms(factor)`` per shell.

    ``factor`` is the CTF·exposure the forward model applies (:mod:`hetfield.imaging.transfer`), so
    the ratio estimates ``|F|`` at each radius (noise included, which only overestimates where the
    signal is weak). Shells beyond the data are extrapolated with the last value; ``floor`` bounds
    the CTF-zero divisions.
    """
    import torch

    from hetfield.imaging.transfer import transfer_of

    n = model.amplitude.shape[0]
    num = torch.zeros(n, dtype=torch.float64)
    den = torch.zeros(n, dtype=torch.float64)
    cnt = torch.zeros(n, dtype=torch.float64)
    pts = model.points
    with torch.no_grad():
        for batch in batches:
            m = batch.extent
            t = transfer_of(batch, pts.k[:m], dose_weight=dose_weight, dose_mask=dose_mask)
            shell = pts.radius_px[:m].round().long()
            kf = t.keep.double()
            num.index_add_(0, shell, ((batch.y_k.double() ** 2 + batch.y_mk.double() ** 2) * kf).sum(0))
            den.index_add_(0, shell, (2 * t.factor.double() ** 2 * kf).sum(0))
            cnt.index_add_(0, shell, 2 * kf.sum(0))
    valid = cnt > 0
    amp = torch.ones(n, dtype=torch.float64)
    mean_y2, mean_f2 = num[valid] / cnt[valid], den[valid] / cnt[valid]
    amp[valid] = torch.sqrt(mean_y2 / mean_f2.clamp_min(floor**2))
    last = int(torch.arange(n)[valid].max()) if valid.any() else 0
    amp[last + 1 :] = amp[last]  # shells beyond the data: the outermost measured value
    return amp.float()


def amplitude_profile(model, ds, cfg: TrainConfig, max_particles: int = 512, check: Callable[[], None] | None = None):
    """The fields' radial preconditioning, from a seeded sample of particles (see Reconstruction)."""
    import numpy as np

    from hetfield.data.batching import ParticleBatches

    rng = np.random.default_rng(cfg.seed)
    sample = np.sort(rng.choice(ds.n_particles, size=min(ds.n_particles, max_particles), replace=False))
    batches = ParticleBatches(ds, model.points, 32, shuffle=False, particles=sample, prefetch=False, dose_mask=cfg.dose_mask)
    return estimate_amplitude_profile(model, checked(batches.epoch(0), check), dose_weight=cfg.dose_weight, dose_mask=cfg.dose_mask)


def data_driven_start(model, ds, cfg: TrainConfig, device, particles, log, check: Callable[[], None], broadcast) -> None:
    """A new run's starts fitted to the training ``particles``: the fields' prior per shell
    (:mod:`.field_prior`) and the encoder's factor model (:mod:`.latent_start`), where the model has
    them. ``broadcast(tensor)`` keeps rank 0's bits under torchrun (every rank fits the same).

    Both read the images at their poses, so an ab initio model has neither (model.shape)."""
    if model.prior_weight is not None:
        from hetfield.train.field_prior import initialise_field_prior

        initialise_field_prior(model, ds, cfg, particles, log, check=check)
        broadcast(model.prior_weight)
        broadcast(model.amplitude)
    if model.factor_basis is not None:
        from hetfield.train.latent_start import initialise_latent

        initialise_latent(model, ds, cfg, device, particles, log, check=check)
        broadcast(model.factor_basis)
        broadcast(model.factor_noise_var)
