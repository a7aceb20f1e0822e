"""Sparse class decoding: a mixture of K fields at little more than the cost of one.

Once a particle's posterior is confident, decoding its images with every field is wasted work: the
classes it cannot belong to add nothing to the likelihood or to any gradient. The rule (K > 1):

* epochs of the consensus field and of the class hold decode every class (the hold's loss weighs
  every class by its prior);
* after the hold, epoch ``e`` is a *full pass* (every class decoded) when
  ``(e - class_init_epochs - class_hold_epochs) % class_full_pass_every == 0`` — the first free
  epoch included — so that every particle's posterior over all K classes is refreshed and it can
  still move to any class; so is every epoch after one that changed the most probable class of
  more than ``class_settled_change`` of the particles (the partition is still moving: sparse epochs
  would freeze it where it stands);
* in the other epochs, particle ``p`` is decoded by the classes ``c`` with ``r_pc >= threshold``
  (``class_decode_threshold``), ``r_p`` its latest posterior (the responsibilities of its last
  visit, kept by the trainer), and always by its most probable class;
* held-out particles (the validation loss) are always decoded by every class, and so is anything
  outside training steps.

The table of decoded classes is taken once at the start of an epoch: every training particle is
visited once per epoch, so that is its latest posterior, and a resumed epoch takes the same table.
What the sparse term costs in accuracy is bounded in :mod:`hetfield.model.loss`.
"""

from __future__ import annotations

import torch

from hetfield.model.forward import ClassSelection
from hetfield.train.config import TrainConfig


def full_pass(cfg: TrainConfig, epoch: int, moved: float | None = None) -> bool:
    """Does (0-based) ``epoch`` decode every class of every particle? ``moved``: the share of the
    particles whose most probable class the previous epoch changed (None: not measured)."""
    free = cfg.class_hold_end
    if cfg.n_classes < 2 or cfg.class_decode_threshold <= 0 or cfg.class_full_pass_every <= 1 or epoch < free:
        return True
    return (epoch - free) % cfg.class_full_pass_every == 0 or (moved is not None and moved > cfg.class_settled_change)


def decoded_classes(resp: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(N, K)`` bool: the classes with posterior ``>= threshold``, and each particle's best."""
    active = resp >= threshold
    active[torch.arange(resp.shape[0], device=resp.device), resp.argmax(1)] = True
    return active


class ClassDecoding:
    """The decoded classes of one epoch (a CPU table), handed out batch by batch."""

    def __init__(self, active: torch.Tensor):
        self.active = active.cpu()

    @classmethod
    def for_epoch(cls, cfg: TrainConfig, epoch: int, resp: torch.Tensor | None, moved: float | None = None) -> "ClassDecoding | None":
        """The epoch's table, or None when it decodes every class (see the module docstring)."""
        if resp is None or full_pass(cfg, epoch, moved):
            return None
        return cls(decoded_classes(resp, cfg.class_decode_threshold))

    def select(self, batch) -> ClassSelection:
        """The batch's selection, from its particle indices while it is still on the CPU (before
        ``to_device``: the index lists are built there, so a GPU step waits for nothing)."""
        return ClassSelection.of(self.active[batch.particles], batch.image_particle)

    @property
    def decoded_fraction(self) -> float:
        """Share of (particle, class) pairs decoded: 1/K at the sparsest, 1 for a full pass."""
        return float(self.active.float().mean())
