"""The tilt-set encoder: a particle's images (any number, any order) → ``(mu, logvar)``.

Per image an MLP reads the centred image's Hartley values on the encoder's lattice points; the
particle's image embeddings are pooled with masks — mean, max and attention — so every particle
uses all of its own images (no truncation to the smallest tilt count) and the result does not depend
on their order. There is no sampling of tilts: the same particle always gets the same ``mu``.

The features it reads are coarse back-projections of each image in the particle frame
(:func:`encoder_features`), so known poses reach it.
"""

from __future__ import annotations

import torch
from torch import nn

from hetfield.imaging.backprojection import backproject


def _mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class TiltSetEncoder(nn.Module):
    """``encode(values (P, T, V), mask (P, T)) -> mu (P, zdim), logvar (P, zdim)``.

    ``values`` are the image features (Hartley values at the encoder points, plus any per-image
    scalars), ``mask`` marks real images among the ``T`` padded slots of each particle.
    """

    def __init__(self, in_dim: int, zdim: int, hidden: int = 256, layers: int = 2, embed_dim: int = 128):
        super().__init__()
        self.zdim = zdim
        self.per_image = _mlp([in_dim] + [hidden] * layers + [embed_dim])
        self.attn_query = nn.Linear(embed_dim, 1)
        self.head = _mlp([3 * embed_dim] + [hidden] * layers + [2 * zdim])

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = torch.relu(self.per_image(values))  # (P, T, E)
        m = mask[..., None].to(e.dtype)
        count = m.sum(1).clamp_min(1.0)
        mean = (e * m).sum(1) / count
        # e >= 0 after ReLU, so padded slots at 0 never win the max over a particle's real images.
        mx = (e * m).amax(1)
        logits = self.attn_query(e).squeeze(-1).masked_fill(~mask, float("-inf"))
        attn = (torch.softmax(logits, dim=1)[..., None] * e).sum(1)
        out = self.head(torch.cat([mean, mx, attn], dim=-1))
        mu, logvar = out[:, : self.zdim], out[:, self.zdim :]
        return mu, logvar.clamp(-12.0, 6.0)


# -- the encoder's featurisation of a batch ------------------------------------------------------
def ctf_weight(ctf_premultiplied: torch.Tensor, ctf: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Multiply by the CTF once (premultiplied data already carry it): aligns the phases of images
    taken at different defocus before they are summed; masked points get weight 0."""
    return torch.where(ctf_premultiplied[:, None], torch.ones_like(ctf), ctf) * keep


def encoder_features(batch, obs, points, grid: torch.Tensor, n_points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image back-projections onto the encoder's 3D ``grid``, padded ``(P, T, J)``, and the mask ``(P, T)``.

    Each image's centred, CTF-weighted values at its first ``n_points`` radius-sorted lattice points
    (``obs``: a :class:`~hetfield.model.forward.Observation`) are placed at their 3D frequencies
    ``q = k @ A`` and summed with the Hartley kernel ``cas(2π q·r)`` at the grid points ``r``
    (particle frame): a coarse back-projection. Known poses thus reach the encoder, which sees every
    particle in the same frame whatever its orientation.
    """
    m = min(obs.y_k.shape[1], n_points)
    w = ctf_weight(batch.ctf_premultiplied, obs.transfer.ctf[:, :m], obs.mask[:, :m])
    q = points.frequencies_3d(obs.rotation, m)
    feats = backproject(obs.y_k[:, :m], obs.y_mk[:, :m], w, q, grid) / (n_points**0.5)
    padded = feats.new_zeros(batch.n_particles, batch.n_slots, feats.shape[1])
    padded[batch.image_particle, batch.slot] = feats
    mask = torch.zeros(batch.n_particles, batch.n_slots, dtype=torch.bool, device=feats.device)
    mask[batch.image_particle, batch.slot] = True
    return padded, mask
