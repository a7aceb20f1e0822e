"""Checkpoints and the objects they hold: the state a checkpoint saves, restoring it to resume a
training, and :func:`load_trained` (a trained model for analysis and volume decoding)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from hetfield.errors import RunError
from hetfield.train.config import TrainConfig
from hetfield.train.rundir import CHECKPOINT_FORMAT, RunDir, load_checkpoint


def training_state(model, opt, gen, shape, cfg, ds, epoch: int, sums, resp, prev_classes, moved: float | None = None) -> dict[str, Any]:
    """A checkpoint: after ``epoch`` completed epochs plus the particles counted in ``sums`` (None: none);
    ``moved``: the share of particles whose class the epoch before changed (sparse class decoding's rule)."""
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "step": 0 if sums is None else int(sums[3]),
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "generator": gen.get_state(),
        "generator_device": "cpu",
        "shape": asdict(shape),
        "train": cfg.to_dict(),
        "dataset_fingerprint": ds.fingerprint,
        "sums": None if sums is None or not float(sums[3]) else sums.detach().cpu().clone(),
        "responsibility": None if resp is None else resp.detach().cpu(),
        "class_idx_previous": None if prev_classes is None else prev_classes.cpu(),
        "class_change_previous": None if moved is None else float(moved),
    }


def restore(state: dict, path: Path, model, opt, gen, resp, ds, cfg: TrainConfig, device, log) -> tuple[int, Any, Any, float | None]:
    """Load a checkpoint into the model, optimisers, generator and posterior; ``(epoch, sums, previous
    classes, the share of classes the previous epoch changed)`` (the share is None in checkpoints from
    before ``class_settled_change``: the period of the rule alone decides).

    A state that does not fit is a :class:`RunError` saying what to do, never torch's own error.
    """
    import torch

    other = "resume from an earlier epoch (--load N), or start the run over with --force"
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as err:
        raise RunError(f"{path}: does not fit this run's model ({(str(err).strip().splitlines() or ['?'])[0][:160]}); {other}") from None
    try:
        opt.load_state_dict(state["optimizer"])
    except (ValueError, KeyError, TypeError, RuntimeError, IndexError):
        raise RunError(f"{path}: its optimiser state does not fit this model (a damaged file, or one written by another hetfield version); {other}") from None
    generator = state.get("generator")
    try:
        gen.set_state(generator)
    except (RuntimeError, TypeError):
        # Checkpoints written before the generator moved to the CPU hold a CUDA generator's state,
        # which a CPU generator cannot take: reseed from the position (not bit-identical).
        gen.manual_seed(int(cfg.seed) * 1_000_003 + 17 + int(state["epoch"]) * 7919 + int(state.get("step") or 0))
        log(f"{path.name}: its latent-noise generator state is from another device type; reseeded it (not bit-identical to an uninterrupted run)")
    sums = state.get("sums")
    if sums is not None and (not isinstance(sums, torch.Tensor) or tuple(sums.shape) != (5,)):
        raise RunError(f"{path}: damaged checkpoint (malformed sums); {other}")
    if resp is not None and state.get("responsibility") is not None:
        r = state["responsibility"]
        if not isinstance(r, torch.Tensor) or tuple(r.shape) != tuple(resp.shape):
            raise RunError(f"{path}: damaged checkpoint (class posteriors of shape {getattr(r, 'shape', None)}, expected {tuple(resp.shape)}); {other}")
        resp.copy_(r.to(device))
    prev = state.get("class_idx_previous")
    if prev is not None and (not isinstance(prev, torch.Tensor) or tuple(prev.shape) != (ds.n_particles,)):
        prev = None
    moved = state.get("class_change_previous")
    moved = float(moved) if isinstance(moved, (int, float)) and not isinstance(moved, bool) else None
    return int(state["epoch"]), sums, prev, moved


def load_trained(run_path: str | Path, epoch: int | str | None = None, device: str = "cpu"):
    """``(model, config dict, epoch)`` of a trained run, for analysis and volume decoding."""
    import torch

    from hetfield.model.reconstruction import Reconstruction
    from hetfield.model.shape import ModelShape

    run = RunDir(run_path)
    config = run.config()
    e = run.resolve_epoch(epoch)
    path = run.weights_path(e)
    state = load_checkpoint(path)
    try:
        shape = ModelShape.from_stored(state["shape"])
        model = Reconstruction(shape)
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        raise RunError(
            f"{path}: damaged checkpoint: it does not fit the model config.yaml describes ({type(err).__name__}); "
            "use another epoch (--epoch N), or remove it and resume training with --load latest"
        ) from None
    model.to(torch.device(device)).eval()
    return model, config, e
