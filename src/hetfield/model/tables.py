"""Per-particle and per-image parameter tables: latent (autodecoder), class scores, poses."""

from __future__ import annotations

import torch
from torch import nn

from hetfield.imaging.rotations import matrix_to_rot6d, rot6d_to_matrix


class LatentTable(nn.Module):
    """Autodecoder latents: one ``z`` per particle, initialised ``N(0, 0.1^2)``.

    Sparse embedding: only the batch's rows get gradients (trained with lazy Adam, train.optim).
    """

    def __init__(self, n_particles: int, zdim: int, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed + 2)
        self.z = nn.Embedding(n_particles, zdim, sparse=True)
        with torch.no_grad():
            self.z.weight.copy_(torch.randn(n_particles, zdim, generator=g) * 0.1)

    def forward(self, particles: torch.Tensor) -> torch.Tensor:
        return self.z(particles)


class ScoreTable(nn.Module):
    """Class scores per particle; ``p = softmax(scores)``. Initialised at zero (uniform classes).

    A sparse embedding like the latent and pose tables: only the batch's rows get gradients, and
    lazy Adam (train.optim) moves a row only when its particle is trained. Dense Adam kept moving
    every row along its stale momentum after its one visit per epoch (6x its own step, measured).
    """

    def __init__(self, n_particles: int, n_classes: int):
        super().__init__()
        self.table = nn.Embedding(n_particles, n_classes, sparse=True)
        with torch.no_grad():
            self.table.weight.zero_()
        self._register_load_state_dict_pre_hook(_dense_score_key)

    @property
    def scores(self) -> torch.Tensor:
        """The ``(N, K)`` score parameter."""
        return self.table.weight

    def log_probs(self, particles: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.table(particles), dim=-1)


def _dense_score_key(state_dict, prefix, *args) -> None:
    """Checkpoints written before the table became an embedding name the parameter ``scores``."""
    old = prefix + "scores"
    if old in state_dict:
        state_dict[prefix + "table.weight"] = state_dict.pop(old)


class PoseTable(nn.Module):
    """Per-image rotation (6D) and origin, initialised from the input poses.

    The origin is stored in units of ``box / 4`` pixels, a typical particle radius: rotating by
    ``δ`` radians moves such a point by ``δ · box/4`` pixels, so one learning rate moves rotations
    and shifts by comparable amounts in the image (with shifts in raw pixels, rotations distorted to
    absorb shift errors that the optimiser corrected too slowly). The table holds the full pose, so
    checkpoints and ``latent.N.npz`` carry the refined poses directly.
    """

    def __init__(self, rotations: torch.Tensor, origins_px: torch.Tensor, box: int):
        super().__init__()
        self.origin_unit_px = box / 4
        # Sparse embeddings: only the batch's rows get gradients (lazy Adam, see train.optim).
        self.rot6d = nn.Embedding.from_pretrained(matrix_to_rot6d(rotations.float()).clone(), freeze=False, sparse=True)
        self.origin = nn.Embedding.from_pretrained(origins_px.float().clone() / self.origin_unit_px, freeze=False, sparse=True)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rot6d_to_matrix(self.rot6d(images)), self.origin(images) * self.origin_unit_px

    def all_poses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(rotation (n, 3, 3), origin_px (n, 2))`` of every image."""
        return rot6d_to_matrix(self.rot6d.weight), self.origin.weight * self.origin_unit_px
