"""The optimisers of a reconstruction.

Networks (fields, encoder) train with AdamW. Per-particle tables — autodecoder latents, class
scores — and per-image pose tables train with *lazy* Adam (``SparseAdam``): a row moves only when
its particle is in the batch. With dense Adam every row keeps moving along its stale momentum for
many steps after its one visit per epoch — effectively ~30× its learning rate in an outdated
direction — and refined poses drifted away from the truth (2.7° → 7.2° over 8 epochs in a test);
class scores moved 6× their own step between visits.
"""

from __future__ import annotations

from typing import Any

import torch

_NAMES = ("dense", "latents", "scores", "poses")


class Optimizers:
    def __init__(self, model, lr: float, lr_latent: float, lr_score_table: float, lr_pose: float, weight_decay: float, lr_encoder: float | None = None):
        self.dense = torch.optim.AdamW(model.parameter_groups(lr, weight_decay, lr_encoder))
        self.latents = torch.optim.SparseAdam(list(model.latents.parameters()), lr=lr_latent) if model.latents is not None else None
        self.scores = torch.optim.SparseAdam(list(model.scores.parameters()), lr=lr_score_table) if model.scores is not None else None
        self.poses = torch.optim.SparseAdam(list(model.poses.parameters()), lr=lr_pose) if model.poses is not None else None

    @property
    def state(self):
        """Per-parameter state of the dense optimiser (moments of the networks)."""
        return self.dense.state

    def _all(self):
        return [o for o in (self.dense, self.latents, self.scores, self.poses) if o is not None]

    def reset_moments(self, param: torch.Tensor) -> None:
        """Forget the Adam moments of ``param`` (a table re-initialised mid-run, e.g. by the EM start)."""
        for o in self._all():
            state = o.state.get(param)
            if state:
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in state:
                        state[key].zero_()

    def zero_grad(self) -> None:
        for o in self._all():
            o.zero_grad(set_to_none=True)

    def step(self, poses: bool = True) -> None:
        """One step; ``poses=False`` holds the pose table (while the fields learn from the input poses).
        A table without gradients this step (scores while classes are held) is left as it is."""
        self.dense.step()
        for o in (self.latents, self.scores) + ((self.poses,) if poses else ()):
            if o is not None:
                o.step()

    def state_dict(self) -> dict[str, Any]:
        return {name: (o.state_dict() if o is not None else None) for name, o in zip(_NAMES, (self.dense, self.latents, self.scores, self.poses))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, o in zip(_NAMES, (self.dense, self.latents, self.scores, self.poses)):
            if o is not None and state.get(name) is not None:
                o.load_state_dict(state[name])
            elif o is not None and name != "dense":
                # A table's moments missing from the checkpoint (written before it had its own
                # optimiser): refuse rather than silently restart them.
                raise ValueError(f"the checkpoint holds no optimiser state for the {name} table")
