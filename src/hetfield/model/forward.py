"""The forward model: what a batch's images should be, given the fields.

Predicted Hartley value of image ``i`` at lattice point ``k`` for class ``c``::

    pred = factor_i(k) * H_c(k @ A_i, z)       factor = CTF^(1 + premultiplied) · exposure (imaging.transfer)

compared with the data translated by ``+origin`` (which centres the particle), on the circular mask
intersected with the image's dose mask. :func:`observe` gives the data side of a batch (poses,
centred values, transfer), :func:`render` the prediction of every class; the objective that compares
them is :mod:`hetfield.model.loss`.

The pieces a GPU path may run at other precisions are separate functions: the rotated lattice
(:meth:`LatticePoints.frequencies_3d`), the centring phases
(:func:`~hetfield.imaging.shifts.translate_hartley_pair`), the fields (their Fourier features
included) and the transfer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hetfield.imaging.shifts import translate_hartley_pair
from hetfield.imaging.transfer import Transfer, transfer_of


@dataclass
class Observation:
    """A batch's images as the model compares them: ``(n, m)`` arrays over the decoded points."""

    rotation: torch.Tensor  # (n, 3, 3) the poses used (given, or the pose table's)
    y_k: torch.Tensor  # data at k, centred (translated by +origin)
    y_mk: torch.Tensor  # data at -k, centred
    transfer: Transfer
    mask: torch.Tensor  # transfer.keep in the data's dtype


@dataclass
class ClassSelection:
    """Sparse class decoding of one batch: the (particle, class) pairs decoded.

    ``active (P, K)`` bool, at least one class per particle; ``images[c]``: the batch's images
    decoded by field ``c`` (None: all of them), so each field runs only on its images.
    """

    active: torch.Tensor
    images: list

    @classmethod
    def of(cls, active: torch.Tensor, image_particle: torch.Tensor) -> "ClassSelection":
        """From ``active (P, K)`` and the batch's ``image_particle (n,)``, both on the CPU (the
        index lists are built there, so a GPU step waits for nothing)."""
        per_image = active[image_particle]
        images = [None if bool(col.all()) else torch.nonzero(col).squeeze(1) for col in per_image.T]
        return cls(active=active, images=images)

    def to(self, device, non_blocking: bool = False) -> "ClassSelection":
        move = lambda t: None if t is None else t.to(device, non_blocking=non_blocking)  # noqa: E731
        return ClassSelection(active=move(self.active), images=[move(i) for i in self.images])


@dataclass
class Rendering:
    """Predicted slices ``(n, K, m)`` at ``k`` and ``-k``; the point ``mask (n, m)`` (dose mask) and
    ``weights (m,)``: how often each decoded point counts at ``-k`` (0 for the origin, its own partner);
    the fields' values before the transfer, ``values_k``/``values_mk``."""

    prediction_k: torch.Tensor
    prediction_mk: torch.Tensor
    mask: torch.Tensor
    weights: torch.Tensor
    values_k: torch.Tensor | None = None  # (n, K, m) the fields' own values (no transfer), for their prior
    values_mk: torch.Tensor | None = None


def observe(model, batch, *, dose_weight: bool, dose_mask: bool) -> Observation:
    """The data side of ``batch``: poses, centred data and transfer on the batch's ``extent`` points."""
    m = batch.extent
    rotation, origin = model.poses_of(batch)
    k = model.points.k[:m]
    y_k, y_mk = translate_hartley_pair(batch.y_k, batch.y_mk, k, origin)
    t = transfer_of(batch, k, dose_weight=dose_weight, dose_mask=dose_mask)
    return Observation(rotation=rotation, y_k=y_k, y_mk=y_mk, transfer=t, mask=t.keep.to(y_k.dtype))


def render(model, obs: Observation, z_img: torch.Tensor | None, n_classes: int | None = None, classes: ClassSelection | None = None) -> Rendering:
    """Every class's (or the first ``n_classes``') predicted slices at the observation's poses and
    per-image latents ``z_img (n, zdim)``; with ``classes``, only the selected (image, class) pairs
    (the others are zero)."""
    m = obs.y_k.shape[1]
    q = model.points.frequencies_3d(obs.rotation, m)
    if classes is None:
        f = model.field_values(q, z_img, n_classes)  # (n, K, m, 2) Fourier coefficients
    else:
        f = model.field_values(q, z_img, n_classes, images=classes.images)
    h_k = f[..., 0] - f[..., 1]
    h_mk = f[..., 0] + f[..., 1]
    factor = obs.transfer.factor[:, None, :]
    return Rendering(
        prediction_k=factor * h_k, prediction_mk=factor * h_mk, mask=obs.mask, weights=model.points.partner_weight[:m], values_k=h_k, values_mk=h_mk
    )
