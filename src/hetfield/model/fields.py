"""K neural fields evaluated as one batched computation.

Each field maps a 3D frequency ``q`` (cycles/voxel, ``|q| <= 0.5`` inside the decoded sphere) and a
latent ``z`` to the volume's Fourier coefficient ``F_k(q, z)`` (real and imaginary parts). Hermitian
symmetry of a real volume, ``F(-q) = conj F(q)``, is built in: the network only ever sees ``q`` in the
half-space ``q_z >= 0`` and the other half is its conjugate. Hartley values follow as
``H(q) = Re F - Im F``.

Architecture: frozen Gaussian random Fourier features ``[sin 2πqB, cos 2πqB]`` (one matrix product),
then a residual MLP. ``z`` enters as a bias of the first layer (``PE(q) W_q + z W_z``): ``z W_z`` is
computed once per image rather than once per point. The K fields keep stacked weights
``(K, in, out)`` and run with ``einsum``; there is no Python loop over classes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from hetfield.imaging.precision import at_least_fp32, full_precision


class FourierFeatures(nn.Module):
    """Frozen Gaussian random features of a 3D frequency: ``(..., 3) -> (..., 2F + 3)``.

    ``B ~ N(0, sigma^2)`` with ``sigma = sigma_box * box`` cycles per unit of ``q``: a feature
    ``sin(2π q·b)`` varies with ``q`` like a real-space point at ``b`` pixels from the centre, so
    ``sigma_box = 0.25`` spreads features over the particle's extent (±box/2).
    """

    def __init__(self, n_features: int, box: int, sigma_box: float = 0.25, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("b", torch.randn(3, n_features, generator=g) * (sigma_box * box))
        self.out_dim = 2 * n_features + 3

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """In fp32 at least under autocast too: the phases ``2π q·b`` reach hundreds of radians."""
        q = at_least_fp32(q)
        with full_precision(q):
            x = (2 * math.pi) * (q @ self.b.to(q.dtype))
            return torch.cat([torch.sin(x), torch.cos(x), 2 * q], dim=-1)


def _init_stack(k: int, fan_in: int, fan_out: int, g: torch.Generator, gain: float = 1.0, jitter: float = 0.0) -> torch.Tensor:
    """``(k, fan_in, fan_out)``: one uniform initialisation shared by the k fields, times ``1 + jitter·N(0,1)``.

    The fields start (nearly) identical on purpose: a mixture whose fields differ at random is
    decided by which one fits first, and that one takes every particle. Training starts them from
    one consensus and a data-driven partition (see :mod:`hetfield.train.class_start`).
    """
    bound = gain * math.sqrt(6.0 / fan_in) / 2  # He-uniform-like, halved for residual stacks
    w = ((torch.rand(1, fan_in, fan_out, generator=g) * 2 - 1) * bound).repeat(k, 1, 1)
    if k > 1 and jitter:
        w = w * (1 + jitter * torch.randn(k, fan_in, fan_out, generator=g))
    return w


class NeuralFields(nn.Module):
    """``n_classes`` fields ``F_k(q, z)`` sharing one Fourier-feature encoding.

    ``forward(q, z)``: ``q (N, M, 3)`` frequencies per image, ``z (N, zdim)`` or None →
    ``(N, K, M, 2)`` real and imaginary parts. ``N`` is a flat batch of images.
    """

    def __init__(
        self,
        box: int,
        n_classes: int = 1,
        zdim: int = 0,
        hidden: int = 256,
        layers: int = 3,
        n_features: int = 64,
        sigma_box: float = 0.25,
        seed: int = 0,
        class_jitter: float = 0.05,
    ):
        super().__init__()
        if n_classes < 1 or layers < 1 or hidden < 1:
            raise ValueError("n_classes, layers and hidden must be positive")
        self.n_classes, self.zdim, self.hidden, self.layers = n_classes, zdim, hidden, layers
        self.features = FourierFeatures(n_features, box, sigma_box, seed=seed)
        g = torch.Generator().manual_seed(seed + 1)
        k, p, h = n_classes, self.features.out_dim, hidden
        j = class_jitter
        self.w_in = nn.Parameter(_init_stack(k, p, h, g, gain=2.0, jitter=j))
        self.w_z = nn.Parameter(_init_stack(k, zdim, h, g, gain=2.0, jitter=j)) if zdim else None
        self.b_in = nn.Parameter(torch.zeros(k, 1, h))
        self.w_hidden = nn.Parameter(torch.stack([_init_stack(k, h, h, g, jitter=j) for _ in range(layers - 1)], 1)) if layers > 1 else None
        self.b_hidden = nn.Parameter(torch.zeros(k, max(layers - 1, 0), 1, h))
        self.w_out = nn.Parameter(_init_stack(k, h, 2, g, gain=0.1, jitter=j))
        self.b_out = nn.Parameter(torch.zeros(k, 1, 2))

    def forward(self, q: torch.Tensor, z: torch.Tensor | None = None, n_classes: int | None = None) -> torch.Tensor:
        """``n_classes`` evaluates only the first classes (the consensus phase trains field 0 alone)."""
        k = self.n_classes if n_classes is None else n_classes
        n, m, _ = q.shape
        # Fold every q into the half-space q_z >= 0; the folded points get the conjugate.
        flip = q[..., 2] < 0
        q_half = torch.where(flip[..., None], -q, q)
        x = self.features(q_half).reshape(1, n * m, -1)  # (1, N·M, P), shared by the K fields
        # Activations stay (K, N·M, H): every layer is one batched matmul over the classes,
        # with no permutation or copy between layers.
        h = torch.baddbmm(self.b_in[:k], x.expand(k, -1, -1), self.w_in[:k])
        if self.w_z is not None:
            if z is None:
                raise ValueError("this field needs a latent z")
            zw = torch.matmul(z[None], self.w_z[:k])  # (K, N, H): once per image, not per point
            h = (h.view(k, n, m, -1) + zw[:, :, None, :]).view(k, n * m, -1)
        h = torch.relu(h)
        for layer in range(self.layers - 1):
            h = h + torch.relu(torch.baddbmm(self.b_hidden[:k, layer], h, self.w_hidden[:k, layer]))
        out = torch.baddbmm(self.b_out[:k], h, self.w_out[:k]).view(k, n, m, 2).permute(1, 0, 2, 3)  # (N, K, M, 2)
        re, im = out[..., 0], out[..., 1]
        im = torch.where(flip[:, None, :], -im, im)
        # F(0) of a real volume is real.
        im = torch.where((q.abs().sum(-1) == 0)[:, None, :], torch.zeros_like(im), im)
        return torch.stack([re, im], dim=-1)
