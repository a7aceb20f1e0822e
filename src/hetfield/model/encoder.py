"""The tilt-set encoder: a particle's images (any number, any order) → ``(mu, logvar)``.

Per image an MLP reads the centred image's Hartley values on the encoder's lattice points; the
particle's image embeddings are pooled with masks — mean, max and attention — so every particle
uses all of its own images (no truncation to the smallest tilt count) and the result does not depend
on their order. There is no sampling of tilts: the same particle always gets the same ``mu``.
"""

from __future__ import annotations

import torch
from torch import nn


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
