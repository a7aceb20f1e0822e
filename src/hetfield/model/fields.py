"""K neural fields: stacked weights, evaluated class by class in chunks of points.

Each field maps a 3D frequency ``q`` (cycles/voxel, ``|q| <= 0.5`` inside the decoded sphere) and a
latent ``z`` to the volume's Fourier coefficient ``F_k(q, z)`` (real and imaginary parts). Hermitian
symmetry of a real volume, ``F(-q) = conj F(q)``, is built in: the network only ever sees ``q`` in the
half-space ``q_z >= 0`` and the other half is its conjugate. Hartley values follow as
``H(q) = Re F - Im F``.

Architecture: frozen Gaussian random Fourier features ``[sin 2πqB, cos 2πqB]`` (one matrix product),
then a residual MLP. ``z`` enters as a bias of the first layer (``PE(q) W_q + z W_z``): ``z W_z`` is
computed once per image rather than once per point. The K fields keep stacked weights
``(K, in, out)`` (one parameter each, so data-parallel and optimisers see K fields as one), and run
one class at a time on chunks of at most ``CHUNK_POINTS`` points, each class only on the images
given to it (sparse class decoding, :mod:`hetfield.train.class_decoding`).

Memory (``recompute``, training's ``field_recompute``): a training forward keeps the activations of
one field over the batch's images, no more. Chunks beyond that (every class after the first in a
full pass of K fields, the few doubly decoded images of a sparse step) keep only their inputs and
are run again in the backward: the same operations on the same values, so the same gradients, for
one more forward of those chunks.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from hetfield.imaging.precision import at_least_fp32, full_precision


# Points per chunk of the field MLP: activations of 8192 × 256 fp32 are 8 MB, below glibc's mmap
# threshold (so allocations reuse the heap) and near the fastest chunk measured at box 32 and 64.
CHUNK_POINTS = 8192


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


class _ScaleGradient(torch.autograd.Function):
    """The identity forward; the backward multiplies the gradient by ``weight`` (broadcast)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weight,) = ctx.saved_tensors
        return grad * weight.to(grad.dtype), None


def scale_gradient(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x`` itself, whose gradient is multiplied by ``weight`` (broadcast to ``x``) on the way back:
    a preconditioner of what is upstream of ``x`` that leaves every value, and so every loss, as it was."""
    return _ScaleGradient.apply(x, weight)


class _ResidualReLU(torch.autograd.Function):
    """``h + relu(a)``, keeping for the backward only the sign of ``a`` (one byte a value): autograd's
    own relu kept its fp32 output for every hidden layer, 2 of the 5 activation tensors a field saves."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        positive = a > 0
        ctx.save_for_backward(positive)
        return h + torch.relu(a)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (positive,) = ctx.saved_tensors
        return grad, grad * positive


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
        self.chunk_points = CHUNK_POINTS
        self.recompute = False  # set by training (field_recompute); see the module docstring

    def forward(
        self, q: torch.Tensor, z: torch.Tensor | None = None, n_classes: int | None = None, images: list[torch.Tensor | None] | None = None
    ) -> torch.Tensor:
        """``n_classes`` evaluates only the first classes (the consensus phase trains field 0 alone);
        ``images[c]`` (indices into the batch, or None for all) only those images for class ``c``
        (sparse class decoding): the others' values for that class are zeros and get no gradient."""
        k = self.n_classes if n_classes is None else n_classes
        if self.w_z is not None and z is None:
            raise ValueError("this field needs a latent z")
        n, m, _ = q.shape
        # Fold every q into the half-space q_z >= 0; the folded points get the conjugate.
        flip = q[..., 2] < 0
        q_half = torch.where(flip[..., None], -q, q)
        per_chunk = max(1, self.chunk_points // max(m, 1))
        # Rows (images) whose activations this forward may keep: one field over the batch.
        budget = n if self.recompute and torch.is_grad_enabled() and self.w_in.requires_grad else None
        outs = []
        for c in range(k):
            idx = None if images is None else images[c]
            rows = n if idx is None else int(idx.shape[0])
            # One class at a time, in chunks of images: every activation stays a plain 2D matrix of
            # at most ``chunk_points`` rows (a few MB). One (K, N·M, H) batch was 4-5× slower per
            # value at K = 3 on CPU: tensors beyond glibc's 32 MB mmap threshold are fresh pages
            # (page faults and zeroing) at every allocation, and they miss every cache.
            weights = self._class_weights(c)
            pieces = []
            for s in range(0, rows, per_chunk):
                sel = slice(s, s + per_chunk) if idx is None else idx[s : s + per_chunk]
                args = (weights, q_half[sel], z[sel] if z is not None else None)
                size = args[1].shape[0]
                if budget is not None and size > budget:
                    # No RNG inside the MLP to replay; autocast's state is restored by checkpoint.
                    pieces.append(checkpoint(self._mlp, *args, use_reentrant=False, preserve_rng_state=False))
                else:
                    budget = None if budget is None else budget - size
                    pieces.append(self._mlp(*args))
            outs.append((idx, torch.cat(pieces) if len(pieces) > 1 else pieces[0] if pieces else None))
        dtype = next((o.dtype for _, o in outs if o is not None), q.dtype)
        full = []
        for idx, o in outs:
            if idx is None and o is not None:
                full.append(o.to(dtype))
            else:
                zeros = q.new_zeros(n, m, 2, dtype=dtype)
                full.append(zeros if o is None else zeros.index_copy(0, idx, o.to(dtype)))
        out = torch.stack(full, 1)  # (N, K, M, 2)
        re, im = out[..., 0], out[..., 1]
        im = torch.where(flip[:, None, :], -im, im)
        # F(0) of a real volume is real.
        im = torch.where((q.abs().sum(-1) == 0)[:, None, :], torch.zeros_like(im), im)
        return torch.stack([re, im], dim=-1)

    def _class_weights(self, c: int) -> tuple:
        """Field ``c``'s weights, selected once per forward (one select node per class: the chunks
        share it, so the backward accumulates small per-class gradients, not one full stack per chunk)."""
        hidden = [(self.w_hidden[c, layer], self.b_hidden[c, layer, 0]) for layer in range(self.layers - 1)]
        return self.w_in[c], self.b_in[c, 0], None if self.w_z is None else self.w_z[c], hidden, self.w_out[c], self.b_out[c, 0]

    def _mlp(self, weights: tuple, q_half: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """One field on ``q_half (r, m, 3)`` with latents ``z (r, zdim)``: ``(r, m, 2)``."""
        w_in, b_in, w_z, hidden, w_out, b_out = weights
        r, m, _ = q_half.shape
        x = self.features(q_half).reshape(r * m, -1)
        h = torch.addmm(b_in, x, w_in)
        if w_z is not None:
            # z enters as a per-image bias: z W_z once per image, not per point.
            h = (h.view(r, m, -1) + torch.matmul(z, w_z)[:, None, :]).view(r * m, -1)
        h = torch.relu(h)
        for w, b in hidden:
            h = _ResidualReLU.apply(h, torch.addmm(b, h, w))
        return torch.addmm(b_out, h, w_out).view(r, m, 2)
