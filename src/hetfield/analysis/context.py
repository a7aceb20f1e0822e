"""What every analysis of a run needs: the run directory, its settings, its dataset, the device."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hetfield.errors import RunError
from hetfield.train.loop import resolve_device  # noqa: F401  (re-exported for the analysis modules)


@dataclass
class RunContext:
    run: Any  # hetfield.train.rundir.RunDir
    config: dict
    run_id: str
    box: int
    pixel_size_A: float
    zdim: int
    n_classes: int
    n_particles: int
    dataset: Any | None = None  # hetfield.data.dataset.Dataset, when reachable
    notes: list[str] = field(default_factory=list)


def open_run(path: str | Path, data: str | Path | None = None, need_dataset: bool = False) -> RunContext:
    """Open a trained run (RunError when it is not one or has no saved epoch).

    The dataset is the one recorded in ``config.yaml`` unless ``data`` overrides it; when it cannot
    be opened (moved, another machine) analyses go on without it and say so in ``notes``.
    """
    from hetfield.errors import DatasetError
    from hetfield.train.rundir import RunDir

    run = RunDir(path)
    if not run.path.is_dir():
        raise RunError(f"{run.path}: no such run directory; pass the directory given to `hetfield train`")
    cfg = run.config()
    if not run.epochs():
        raise RunError(f"{run.path}: no saved epochs yet (no weights.N.pt with latent.N.npz); train it first or wait for epoch 1")
    model = cfg.get("model") or {}
    ds_cfg = cfg.get("dataset") or {}
    train = cfg.get("train") or {}
    zdim = int(model.get("zdim", train.get("zdim", 0)) or 0)
    if (model.get("conf_estimation") or train.get("conf_estimation")) == "none":
        zdim = 0
    ctx = RunContext(
        run=run,
        config=cfg,
        run_id=run.run_id,
        box=int(model.get("box", ds_cfg.get("box", 0)) or 0),
        pixel_size_A=float(ds_cfg.get("pixel_size_A", 1.0) or 1.0),
        zdim=zdim,
        n_classes=int(model.get("n_classes", train.get("n_classes", 1)) or 1),
        n_particles=int(model.get("n_particles", ds_cfg.get("n_particles", 0)) or 0),
    )
    ds_path = Path(data) if data is not None else (Path(ds_cfg["path"]) if ds_cfg.get("path") else None)
    if ds_path is not None:
        try:
            from hetfield.data.dataset import Dataset

            ds = Dataset.open(ds_path)
            if ds_cfg.get("fingerprint") and ds.fingerprint != ds_cfg["fingerprint"]:
                msg = f"{ds_path}: not the dataset this run was trained on (fingerprint differs)"
                if data is not None:
                    raise DatasetError(msg + "; pass the run's own dataset with --data")
                ctx.notes.append(msg + "; STAR exports and particle names are skipped")
            else:
                ctx.dataset = ds
        except DatasetError as err:
            if data is not None or need_dataset:
                raise
            ctx.notes.append(f"dataset not available ({err}); pass --data DATASET for STAR exports and truth matching")
    elif need_dataset:
        raise RunError(f"{run.path}: config.yaml names no dataset; pass --data DATASET")
    if ctx.dataset is not None:
        ctx.pixel_size_A = ctx.dataset.pixel_size_A
    return ctx


def load_model(ctx: RunContext, epoch: int, device):
    from hetfield.train.loop import load_trained

    model, _, e = load_trained(ctx.run.path, epoch, device=str(device))
    return model


def now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def plain(obj):
    """JSON-safe copy: numpy scalars/arrays to Python, NaN/inf to None, paths to strings."""
    import math

    import numpy as np

    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return plain(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj
