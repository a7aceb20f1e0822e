"""Per-particle and per-image parameter tables: latent (autodecoder), class scores, poses."""

from __future__ import annotations

import torch
from torch import nn

from hetfield.imaging.rotations import matrix_to_rot6d, rot6d_to_matrix


class LatentTable(nn.Module):
    """Autodecoder latents: one ``z`` per particle, initialised ``N(0, 0.1^2)``."""

    def __init__(self, n_particles: int, zdim: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed + 2)
        self.z = nn.Parameter(torch.randn(n_particles, zdim, generator=g) * 0.1)

    def forward(self, particles: torch.Tensor) -> torch.Tensor:
        return self.z[particles]


class ScoreTable(nn.Module):
    """Class scores per particle; ``p = softmax(scores)``. Initialised at zero (uniform classes)."""

    def __init__(self, n_particles: int, n_classes: int):
        super().__init__()
        self.scores = nn.Parameter(torch.zeros(n_particles, n_classes))

    def log_probs(self, particles: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.scores[particles], dim=-1)


class PoseTable(nn.Module):
    """Per-image rotation (6D) and origin (pixels), initialised from the input poses.

    Refinement learns corrections; the table holds the full pose so that checkpoints and
    ``latent.N.npz`` carry the refined poses directly.
    """

    def __init__(self, rotations: torch.Tensor, origins_px: torch.Tensor):
        super().__init__()
        self.rot6d = nn.Parameter(matrix_to_rot6d(rotations.float()).clone())
        self.origin_px = nn.Parameter(origins_px.float().clone())

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rot6d_to_matrix(self.rot6d[images]), self.origin_px[images]
