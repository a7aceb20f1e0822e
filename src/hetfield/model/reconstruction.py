"""A reconstruction: K neural fields, a latent source and a pose source, and its loss.

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
  matching Gaussian prior ``|z|²/2`` instead of the KL.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hetfield.model.backprojection import backproject, backprojection_grid, ctf_weight, grid_radius_px
from hetfield.model.encoder import TiltSetEncoder
from hetfield.model.fields import NeuralFields
from hetfield.model.renderer import LatticePoints, centre_data, image_factors
from hetfield.model.tables import LatentTable, PoseTable, ScoreTable


@dataclass(frozen=True)
class ModelShape:
    """What fixes the model's parameters (stored with every checkpoint)."""

    box: int
    n_particles: int
    n_images: int
    zdim: int = 8
    n_classes: int = 1
    conf_estimation: str = "encoder"  # encoder | autodecoder | none
    pose_estimation: str = "fixed"  # fixed | refine
    field_hidden: int = 256
    field_layers: int = 3
    pe_features: int = 64
    pe_sigma: float = 0.25
    enc_hidden: int = 256
    enc_layers: int = 2
    enc_embed: int = 128
    enc_grid: int = 8
    seed: int = 0


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
        if shape.conf_estimation == "encoder" and zdim:
            grid = backprojection_grid(shape.box, shape.enc_grid)
            self.register_buffer("enc_points", grid, persistent=False)
            r = grid_radius_px(shape.box, shape.enc_grid)
            self.n_enc = max(int((self.points.radius_px <= r + 1e-6).sum()), 1)
            torch.manual_seed(shape.seed + 3)
            self.encoder = TiltSetEncoder(grid.shape[0], zdim, shape.enc_hidden, shape.enc_layers, shape.enc_embed)
        elif shape.conf_estimation == "autodecoder" and zdim:
            self.latents = LatentTable(shape.n_particles, zdim, seed=shape.seed)
        # Radial amplitude of the data's slices (see estimate_amplitude_profile): the fields predict
        # F / A(|q|), a quantity of order one at every radius, which Adam fits far faster than raw
        # coefficients spanning orders of magnitude between low and high frequency.
        self.register_buffer("amplitude", torch.ones(int(shape.box * 0.5 * 3**0.5) + 2))
        self.scores = ScoreTable(shape.n_particles, shape.n_classes) if shape.n_classes > 1 else None
        self.poses = None
        if shape.pose_estimation == "refine":
            if rotations is None or origins_px is None:
                rotations = torch.eye(3).expand(shape.n_images, 3, 3)
                origins_px = torch.zeros(shape.n_images, 2)
            self.poses = PoseTable(rotations, origins_px, shape.box)

    def amplitude_at(self, q: torch.Tensor) -> torch.Tensor:
        """``A(|q|)`` by linear interpolation between shells (``|q|`` in cycles/px → shell radius)."""
        r = q.norm(dim=-1) * self.shape.box
        lo = r.floor().clamp(max=self.amplitude.shape[0] - 2)
        frac = (r - lo).clamp(0, 1)
        lo = lo.long()
        return self.amplitude[lo] * (1 - frac) + self.amplitude[lo + 1] * frac

    def field_values(self, q: torch.Tensor, z: torch.Tensor | None, n_classes: int | None = None) -> torch.Tensor:
        """``(N, K, M, 2)`` Fourier coefficients: the fields' output times the amplitude profile."""
        f = self.fields(q, z, n_classes).float()
        return f * self.amplitude_at(q)[:, None, :, None]

    # -- parameter groups with their own learning rates ------------------------------------------
    def parameter_groups(self, lr: float, weight_decay: float, lr_encoder: float | None = None):
        """AdamW groups: fields and encoder (latent, score and pose tables: lazy Adam, see train.optim)."""
        groups = [{"params": list(self.fields.parameters()), "lr": lr, "weight_decay": weight_decay, "name": "fields"}]
        if self.encoder is not None:
            groups.append({"params": list(self.encoder.parameters()), "lr": lr if lr_encoder is None else lr_encoder, "weight_decay": weight_decay, "name": "encoder"})
        return groups

    # -- pieces ----------------------------------------------------------------------------------
    def poses_of(self, batch):
        if self.poses is not None:
            return self.poses(batch.images)
        return batch.rotation, batch.origin_px

    def encoder_input(self, batch, yk_c, ymk_c, ctf, keep, rot):
        """Per-image back-projections onto the encoder's 3D grid, padded ``(P, T, J)``, and the mask.

        Each image's centred, CTF-weighted low-frequency values are placed at their 3D frequencies
        ``q = k @ A`` and summed with the Hartley kernel ``cas(2π q·r)`` at the grid points ``r``
        (particle frame): a coarse back-projection. Known poses thus reach the encoder, which sees
        every particle in the same frame whatever its orientation.
        """
        m = min(yk_c.shape[1], self.n_enc)
        w = ctf_weight(batch, ctf[:, :m], keep[:, :m])
        q = self.points.frequencies_3d(rot, m)
        feats = backproject(yk_c[:, :m], ymk_c[:, :m], w, q, self.enc_points) / (self.n_enc**0.5)
        padded = feats.new_zeros(batch.n_particles, batch.n_slots, feats.shape[1])
        padded[batch.image_particle, batch.slot] = feats
        mask = torch.zeros(batch.n_particles, batch.n_slots, dtype=torch.bool, device=feats.device)
        mask[batch.image_particle, batch.slot] = True
        return padded, mask

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
    ) -> dict[str, torch.Tensor]:
        """Losses of a batch. ``consensus_only`` trains field 0 alone (the start of a mixture, see
        :mod:`hetfield.model.class_init`)."""
        m = batch.extent
        pts = self.points
        rot, origin = self.poses_of(batch)
        k = pts.k[:m]
        yk_c, ymk_c = centre_data(batch.y_k, batch.y_mk, k, origin)
        ctf, factor, keep = image_factors(batch, pts, dose_weight=dose_weight, dose_mask_on=dose_mask, m=m)
        keep = keep.to(yk_c.dtype)

        p_count = batch.n_particles
        z = mu = logvar = None
        if self.encoder is not None:
            enc_in, enc_mask = self.encoder_input(batch, yk_c, ymk_c, ctf, keep, rot)
            mu, logvar = self.encoder(enc_in, enc_mask)
            if sample and self.training:
                # The noise generator lives on the CPU whatever the device (its state then resumes
                # on any device, bit-exactly); the draws are tiny (P, zdim).
                gen_device = generator.device if generator is not None else mu.device
                eps = torch.randn(mu.shape, generator=generator, device=gen_device, dtype=mu.dtype).to(mu.device)
                z = mu + eps * torch.exp(0.5 * logvar)
            else:
                z = mu
        elif self.latents is not None:
            z = mu = self.latents(batch.particles)
        z_img = z[batch.image_particle] if z is not None else None

        q = pts.frequencies_3d(rot, m)
        f = self.field_values(q, z_img, 1 if consensus_only else None)  # (n, K, m, 2)
        h_k = f[..., 0] - f[..., 1]
        h_mk = f[..., 0] + f[..., 1]
        pw = pts.partner_weight[:m]
        fac = factor[:, None, :]
        se = keep[:, None, :] * ((fac * h_k - yk_c[:, None, :]) ** 2 + pw * (fac * h_mk - ymk_c[:, None, :]) ** 2)
        se_img = se.sum(-1)  # (n, K)
        n_img = (keep * (1 + pw)).sum(-1)  # (n,) decoded values
        w = torch.cos(torch.deg2rad(batch.stage_tilt_deg)) if tilt_weight else torch.ones_like(n_img)

        idx = batch.image_particle
        se_p = se_img.new_zeros(p_count, se_img.shape[1]).index_add_(0, idx, w[:, None] * se_img)
        wn_p = n_img.new_zeros(p_count).index_add_(0, idx, w * n_img).clamp_min(1e-8)
        n_p = n_img.new_zeros(p_count).index_add_(0, idx, n_img).clamp_min(1.0)
        err = se_p / wn_p[:, None]  # (P, K)

        out: dict[str, torch.Tensor] = {"err": err.detach()}
        if self.scores is not None and not consensus_only:
            log_pi = self.scores.log_probs(batch.particles)
            # Gaussian log-likelihood of all the particle's (tilt-weighted) values under each class.
            two_var = 2.0 * std_noise * std_noise
            loglik = -wn_p[:, None] * err / two_var
            if hold_classes:
                # The partition is held at the score table's prior: each field learns its own particles.
                data = (torch.softmax(log_pi.detach(), dim=-1) * err).sum(-1)
            else:
                data = -(two_var / wn_p) * torch.logsumexp(log_pi + loglik, dim=-1)
            out["log_pi"] = log_pi.detach()
            out["responsibility"] = torch.softmax(log_pi + loglik, dim=-1).detach()
        else:
            data = err[:, 0]
        if mu is not None and logvar is not None:
            kl = -0.5 * (1 + logvar - mu * mu - torch.exp(logvar)).sum(-1)
        elif mu is not None:
            kl = 0.5 * (mu * mu).sum(-1)
        else:
            kl = torch.zeros_like(data)
        loss = (data + beta * kl / n_p).mean()
        out.update(loss=loss, data=data.detach().mean(), kl=kl.detach().mean())
        if mu is not None:
            out["mu"] = mu.detach()
            if logvar is not None:
                out["logvar"] = logvar.detach()
        return out

    @torch.no_grad()
    def embed(self, batch, dose_weight: bool = True, dose_mask: bool = True) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Deterministic ``(mu, logvar)`` of the batch's particles (no decoding); None without a latent."""
        if self.encoder is None:
            if self.latents is None:
                return None
            z = self.latents(batch.particles)
            return z, torch.full_like(z, float("-inf"))
        m = batch.extent
        rot, origin = self.poses_of(batch)
        yk_c, ymk_c = centre_data(batch.y_k, batch.y_mk, self.points.k[:m], origin)
        ctf, _, keep = image_factors(batch, self.points, dose_weight=dose_weight, dose_mask_on=dose_mask, m=m)
        enc_in, enc_mask = self.encoder_input(batch, yk_c, ymk_c, ctf, keep.to(yk_c.dtype), rot)
        return self.encoder(enc_in, enc_mask)

    # -- decoding volumes -----------------------------------------------------------------------
    @torch.no_grad()
    def decode_volume(self, z: torch.Tensor | None, class_idx: int = 0, box: int | None = None, chunk: int = 1 << 15) -> torch.Tensor:
        """Real-space volume ``(D, D, D)`` ``[z, y, x]`` of class ``class_idx`` at latent ``z``.

        Evaluates the field on the whole centred 3D frequency grid inside the Nyquist sphere (zero
        outside, where it was never trained) and inverts the Hartley transform. Nothing else is
        zeroed: the central lines and planes are kept.
        """
        from hetfield.imaging.hartley import iht3_center
        from hetfield.imaging.lattice import volume_frequency_grid

        d = box or self.shape.box
        device = next(self.fields.parameters()).device
        grid = torch.as_tensor(volume_frequency_grid(d), dtype=torch.float32, device=device).reshape(-1, 3)
        inside = grid.norm(dim=-1) <= 0.5 + 1e-6
        inside_idx = inside.nonzero()[:, 0]
        qs = grid[inside_idx]
        values = torch.zeros(grid.shape[0], device=device)
        zz = None if z is None else z.reshape(1, -1).to(device)
        for s in range(0, qs.shape[0], chunk):
            q = qs[s : s + chunk][None]
            f = self.field_values(q, zz)[0, class_idx]
            values[inside_idx[s : s + chunk]] = f[:, 0] - f[:, 1]
        return iht3_center(values.reshape(d, d, d).double()).float()


@torch.no_grad()
def estimate_amplitude_profile(model: Reconstruction, batches, dose_weight: bool = True, dose_mask: bool = True, floor: float = 0.1) -> torch.Tensor:
    """Radial amplitude of the volume's transform implied by the data: ``rms(y) / rms(factor)`` per shell.

    ``factor`` is the CTF·exposure the renderer applies, so the ratio estimates ``|F|`` at each
    radius (noise included, which only overestimates where the signal is weak). Shells beyond the
    data are extrapolated with the last value; ``floor`` bounds the CTF-zero divisions.
    """
    n = model.amplitude.shape[0]
    num = torch.zeros(n, dtype=torch.float64)
    den = torch.zeros(n, dtype=torch.float64)
    cnt = torch.zeros(n, dtype=torch.float64)
    pts = model.points
    for batch in batches:
        m = batch.extent
        _, factor, keep = image_factors(batch, pts, dose_weight=dose_weight, dose_mask_on=dose_mask, m=m)
        shell = pts.radius_px[:m].round().long()
        kf = keep.double()
        num.index_add_(0, shell, ((batch.y_k.double() ** 2 + batch.y_mk.double() ** 2) * kf).sum(0))
        den.index_add_(0, shell, (2 * factor.double() ** 2 * kf).sum(0))
        cnt.index_add_(0, shell, 2 * kf.sum(0))
    valid = cnt > 0
    amp = torch.ones(n, dtype=torch.float64)
    mean_y2, mean_f2 = num[valid] / cnt[valid], den[valid] / cnt[valid]
    amp[valid] = torch.sqrt(mean_y2 / mean_f2.clamp_min(floor**2))
    last = int(torch.arange(n)[valid].max()) if valid.any() else 0
    amp[last + 1 :] = amp[last]  # shells beyond the data: the outermost measured value
    return amp.float()
