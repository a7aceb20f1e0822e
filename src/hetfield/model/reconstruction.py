"""A reconstruction: K neural fields, a latent source (encoder or table), a pose source, class scores.

``forward(batch)`` observes the batch (:func:`~hetfield.model.forward.observe`), takes each particle's
latent, renders every class (:func:`~hetfield.model.forward.render`) and returns the objective of
:mod:`hetfield.model.loss`. Volumes are decoded by :func:`hetfield.model.decode.decode_volumes`.
"""

from __future__ import annotations

import torch
from torch import nn

from hetfield.imaging.backprojection import LOWRES_GRID_POINTS, backprojection_grid, grid_radius_px
from hetfield.model.encoder import TiltSetEncoder, encoder_features
from hetfield.model.factor_posterior import factor_posterior
from hetfield.model.fields import NeuralFields, scale_gradient
from hetfield.model.forward import ClassSelection, Observation, observe, render
from hetfield.model.loss import objective
from hetfield.model.points import LatticePoints
from hetfield.model.shape import ModelShape
from hetfield.model.tables import LatentTable, PoseTable, ScoreTable


class Reconstruction(nn.Module):
    def __init__(self, shape: ModelShape, rotations: torch.Tensor | None = None, origins_px: torch.Tensor | None = None):
        super().__init__()
        self.shape = shape
        self.points = LatticePoints(shape.box)
        zdim = shape.zdim if shape.conf_estimation != "none" else 0
        self.zdim = zdim
        self.fields = NeuralFields(
            shape.box,
            n_classes=shape.n_classes,
            zdim=zdim,
            hidden=shape.field_hidden,
            layers=shape.field_layers,
            n_features=shape.pe_features,
            sigma_box=shape.pe_sigma,
            seed=shape.seed,
        )
        self.encoder = None
        self.latents = None
        self.register_buffer("factor_basis", None)  # the encoder's factor model, when it has one
        if shape.conf_estimation == "encoder" and zdim:
            grid = backprojection_grid(shape.box, shape.enc_grid)
            self.register_buffer("enc_points", grid, persistent=False)
            self.n_enc = self.points.count_within(grid_radius_px(shape.box, shape.enc_grid))
            torch.manual_seed(shape.seed + 3)
            self.encoder = TiltSetEncoder(grid.shape[0], zdim, shape.enc_hidden, shape.enc_layers, shape.enc_embed)
            if shape.latent_start == "factor":
                # The low-resolution factor model (model.factor_posterior), fitted before training by
                # train.latent_start; the networks start at zero and learn what it misses.
                coarse = backprojection_grid(shape.box, LOWRES_GRID_POINTS)
                self.register_buffer("factor_grid", coarse, persistent=False)
                self.n_factor_points = self.points.count_within(grid_radius_px(shape.box, LOWRES_GRID_POINTS))
                self.register_buffer("factor_basis", torch.zeros(coarse.shape[0], zdim + 1))
                self.register_buffer("factor_noise_var", torch.ones(()))
                with torch.no_grad():
                    self.encoder.head[-1].weight.zero_()
                    self.encoder.head[-1].bias.zero_()
        elif shape.conf_estimation == "autodecoder" and zdim:
            self.latents = LatentTable(shape.n_particles, zdim, seed=shape.seed)
        # Radial amplitude of the data's slices (train.factory.estimate_amplitude_profile): the fields
        # predict F / A(|q|), a quantity of order one at every radius, which Adam fits far faster than
        # raw coefficients spanning orders of magnitude between low and high frequency.
        self.register_buffer("amplitude", torch.ones(int(shape.box * 0.5 * 3**0.5) + 2))
        # The fields' prior per shell (train.field_prior): λ per decoded value, 0 where unset.
        self.register_buffer("prior_weight", torch.zeros_like(self.amplitude) if shape.field_prior else None)
        # The backward's scale of the fields' gradient per shell (train.field_prior: the prior damps
        # their output by the signal's share s(r), and so their gradients; this undoes the latter).
        # Ones unless installed; the values decoded do not depend on it.
        self.register_buffer("field_grad_weight", torch.ones_like(self.amplitude) if shape.field_prior else None)
        self._register_load_state_dict_pre_hook(self._grad_weight_of_before, with_module=False)
        self.scores = ScoreTable(shape.n_particles, shape.n_classes) if shape.n_classes > 1 else None
        self.poses = None
        if shape.pose_estimation in ("refine", "abinit"):  # abinit: the search writes the table
            if rotations is None or origins_px is None:
                rotations = torch.eye(3).expand(shape.n_images, 3, 3)
                origins_px = torch.zeros(shape.n_images, 2)
            self.poses = PoseTable(rotations, origins_px, shape.box)

    def amplitude_at(self, r: torch.Tensor) -> torch.Tensor:
        """``A(r)`` by linear interpolation between shells, ``r`` the radius in lattice pixels (``|q| · box``)."""
        lo = r.floor().clamp(max=self.amplitude.shape[0] - 2)
        frac = (r - lo).clamp(0, 1)
        lo = lo.long()
        return self.amplitude[lo] * (1 - frac) + self.amplitude[lo + 1] * frac

    def field_values(self, q: torch.Tensor, z: torch.Tensor | None, n_classes: int | None = None, images: list | None = None) -> torch.Tensor:
        """``(N, K, M, 2)`` Fourier coefficients: the fields' output times the amplitude profile
        (``images[c]``: only those of the N for class ``c``, zeros elsewhere). While gradients are
        taken, the fields' output carries ``field_grad_weight`` of its shell into the backward."""
        r = q.norm(dim=-1) * self.shape.box
        f = self.fields(q, z, n_classes, images).float()
        if self.field_grad_weight is not None and f.requires_grad:
            shell = r.round().long().clamp(max=self.field_grad_weight.shape[0] - 1)
            f = scale_gradient(f, self.field_grad_weight[shell][:, None, :, None])
        return f * self.amplitude_at(r)[:, None, :, None]

    def _grad_weight_of_before(self, state_dict, prefix, *args) -> None:
        """Checkpoints from before the preconditioning trained without it: ones."""
        key = prefix + "field_grad_weight"
        if self.field_grad_weight is not None and key not in state_dict:
            state_dict[key] = torch.ones_like(self.field_grad_weight)

    def parameter_groups(self, lr: float, weight_decay: float, lr_encoder: float | None = None):
        """AdamW groups: fields and encoder (latent, score and pose tables: lazy Adam, see train.optim)."""
        groups = [{"params": list(self.fields.parameters()), "lr": lr, "weight_decay": weight_decay, "name": "fields"}]
        if self.encoder is not None:
            groups.append({"params": list(self.encoder.parameters()), "lr": lr if lr_encoder is None else lr_encoder, "weight_decay": weight_decay, "name": "encoder"})
        return groups

    def poses_of(self, batch):
        if self.poses is not None:
            return self.poses(batch.images)
        return batch.rotation, batch.origin_px

    def encode(self, batch, obs: Observation) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's ``(mu, logvar)`` of the batch's particles, in fp32 (under autocast its
        layers run in bf16; the latent noise, the KL and the fields' input ``z W_z`` take fp32)."""
        mu, logvar = self.encoder(*encoder_features(batch, obs, self.points, self.enc_points, self.n_enc))
        mu, logvar = mu.float(), logvar.float()
        if self.factor_basis is not None:
            m0, lv0 = factor_posterior(self.points, self.factor_grid, self.n_factor_points, self.factor_basis, self.factor_noise_var, batch, obs)
            mu, logvar = mu + m0, (logvar + lv0).clamp(-12.0, 6.0)
        return mu, logvar

    def latent(self, batch, obs: Observation, generator: torch.Generator | None = None, sample: bool = True, noise: torch.Tensor | None = None):
        """``(mu, logvar, z)`` per particle (None where there is no latent; ``logvar`` None for a table).
        ``noise`` (P, zdim): the sampling noise, drawn by the caller (data-parallel training)."""
        if self.encoder is not None:
            mu, logvar = self.encode(batch, obs)
            if sample and self.training and noise is not None:
                return mu, logvar, mu + noise.to(mu.device, non_blocking=True) * torch.exp(0.5 * logvar)
            if sample and self.training:
                # The noise generator lives on the CPU whatever the device (its state then resumes
                # on any device, bit-exactly); the draws are tiny (P, zdim).
                gen_device = generator.device if generator is not None else mu.device
                eps = torch.randn(mu.shape, generator=generator, device=gen_device, dtype=mu.dtype)
                if eps.device != mu.device:  # pinned: an asynchronous copy, no wait for the GPU
                    eps = eps.pin_memory().to(mu.device, non_blocking=True)
                return mu, logvar, mu + eps * torch.exp(0.5 * logvar)
            return mu, logvar, mu
        if self.latents is not None:
            z = self.latents(batch.particles)
            return z, None, z
        return None, None, None

    def forward(
        self,
        batch,
        *,
        beta: float,
        std_noise: float = 1.0,
        dose_weight: bool = True,
        tilt_weight: bool = True,
        dose_mask: bool = True,
        generator: torch.Generator | None = None,
        sample: bool = True,
        consensus_only: bool = False,
        hold_classes: bool = False,
        noise: torch.Tensor | None = None,
        classes: ClassSelection | None = None,
    ) -> dict[str, torch.Tensor]:
        """The objective of a batch (:func:`hetfield.model.loss.objective`). ``consensus_only`` trains
        field 0 alone (the start of a mixture, see :mod:`hetfield.train.class_start`); ``classes``
        decodes only the selected classes of each particle (sparse class decoding)."""
        if classes is not None and (self.scores is None or consensus_only):
            classes = None  # one field: nothing to choose
        if classes is not None:
            classes = classes.to(batch.particles.device, non_blocking=True)
        obs = observe(self, batch, dose_weight=dose_weight, dose_mask=dose_mask)
        mu, logvar, z = self.latent(batch, obs, generator, sample, noise)
        z_img = z[batch.image_particle] if z is not None else None
        rendering = render(self, obs, z_img, 1 if consensus_only else None, classes)
        log_pi = self.class_log_prior(batch.particles, None if classes is None else classes.active) if self.scores is not None and not consensus_only else None
        prior = self.prior_weight[self.points.radius_px[: obs.y_k.shape[1]].round().long()] if self.prior_weight is not None else None
        return objective(
            rendering, obs, batch, mu=mu, logvar=logvar, log_pi=log_pi, beta=beta, std_noise=std_noise, tilt_weight=tilt_weight, hold_classes=hold_classes,
            active=None if classes is None else classes.active, prior_weight=prior,
        )

    def class_log_prior(self, particles: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
        """``log softmax(scores)`` of ``particles`` ``(P, K)``; with ``active (P, K)`` renormalised over the
        active classes (-inf elsewhere), so an undecoded class's score gets no gradient."""
        if active is None:
            return self.scores.log_probs(particles)
        return torch.log_softmax(self.scores.table(particles).masked_fill(~active, float("-inf")), dim=-1)

    @torch.no_grad()
    def embed(self, batch, dose_weight: bool = True, dose_mask: bool = True) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Deterministic ``(mu, logvar)`` of the batch's particles (no decoding); None without a latent."""
        if self.encoder is None:
            if self.latents is None:
                return None
            z = self.latents(batch.particles)
            return z, torch.full_like(z, float("-inf"))
        return self.encode(batch, observe(self, batch, dose_weight=dose_weight, dose_mask=dose_mask))
