"""What every analysis of a run needs: the run directory, its settings, its dataset, the device."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hetfield.errors import RunError


def resolve_device(name: str = "auto"):
    """``auto``/``cpu``/``cuda[:N]`` → a torch device (imported here: errors in the inputs come first)."""
    from hetfield.train.devices import resolve_device as _resolve

    return _resolve(name)


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
    _latents: dict = field(default_factory=dict, repr=False)

    def latent(self, epoch: int) -> dict[str, Any]:
        """The validated ``latent.N.npz`` of ``epoch`` (read once)."""
        if epoch not in self._latents:
            self._latents[epoch] = load_latent(self, epoch)
        return self._latents[epoch]


_DAMAGED = "restore it, or train the run again (`hetfield train RUN --data DATASET --force`)"


def _config_int(cfg: dict, path: Path, keys: list[tuple[str, str]], minimum: int) -> int:
    """The first of ``section.key`` present in ``config.yaml``, which must be a whole number >= ``minimum``."""
    for section, key in keys:
        sec = cfg.get(section)
        if isinstance(sec, dict) and sec.get(key) is not None:
            v = sec[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
                raise RunError(f"{path}: {section}.{key} is {v!r}, not a whole number >= {minimum}; the file is damaged: {_DAMAGED}")
            return v
    raise RunError(f"{path}: {keys[0][0]}.{keys[0][1]} is missing; the file is damaged or was not written by `hetfield train`: {_DAMAGED}")


def latent_problem(arrays: dict[str, Any], n: int, k: int, zdim: int) -> str | None:
    """What is wrong with the arrays of a latent file of a run with ``n`` particles, ``k`` classes
    and latent dimension ``zdim``, or None."""
    import numpy as np

    for name, a in arrays.items():
        if a.dtype.kind not in "biuf":
            return f"array {name!r} holds {a.dtype} values, not numbers"
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            return f"array {name!r} holds NaN or infinite values"
    if "class_idx" not in arrays:
        return "no class_idx array"
    cls = arrays["class_idx"]
    if cls.ndim != 1 or cls.shape[0] != n:
        return f"class_idx has shape {cls.shape}; this run has {n} particles"
    if cls.size and (np.any(cls != np.round(cls)) or cls.min() < 0 or cls.max() >= k):
        return f"class_idx holds values outside 0..{k - 1} (the run has {k} class(es))"
    expected = {"class_probs": (n, k), "held_out": (n,)}
    if zdim:
        if "z_mu" not in arrays:
            return f"no z_mu array although the run has zdim {zdim}"
        expected.update(z_mu=(n, zdim), z_logvar=(n, zdim))
    for name, shape in expected.items():
        if name in arrays and arrays[name].shape != shape:
            return f"{name} has shape {arrays[name].shape}; this run needs {shape} ({n} particles, zdim {zdim}, {k} class(es))"
    return None


def read_latent(path: Path, epoch: int, n: int, k: int, zdim: int) -> dict[str, Any]:
    """Read and check one ``latent.N.npz`` (RunError naming the file and what to do)."""
    import numpy as np

    fix = (f"the file is damaged (an interrupted copy or write?): remove it and weights.{epoch}.pt to use the other saved "
           f"epochs, or train the run again")
    if not path.is_file():
        raise RunError(f"{path}: no latent file for epoch {epoch}; analyse a saved epoch or train the run further")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if not hasattr(npz, "files"):
                raise ValueError("not an .npz archive")
            arrays = {name: np.asarray(npz[name]) for name in npz.files}
    except Exception as err:  # numpy, zipfile and zlib raise a dozen types for damaged archives
        reason = str(err).splitlines()[0][:120] if str(err) else type(err).__name__
        if "pickle" in reason.lower() or "object arrays" in reason.lower():
            reason = "it holds Python objects (pickled), which hetfield never writes or reads"
        raise RunError(f"{path}: unreadable latent file ({reason}); {fix}") from None
    problem = latent_problem(arrays, n, k, zdim)
    if problem:
        raise RunError(f"{path}: {problem}; {fix}")
    return arrays


def load_latent(ctx: "RunContext", epoch: int) -> dict[str, Any]:
    """The run's ``latent.N.npz``, checked against its ``config.yaml``."""
    return read_latent(ctx.run.latent_path(epoch), epoch, ctx.n_particles, ctx.n_classes, ctx.zdim)


def open_run(path: str | Path, data: str | Path | None = None, need_dataset: bool = False) -> RunContext:
    """Open a trained run (RunError when it is not one or has no saved epoch).

    The dataset is the one recorded in ``config.yaml`` unless ``data`` overrides it; when it cannot
    be opened (moved, another machine) analyses go on without it and say so in ``notes``.
    """
    from hetfield.errors import DatasetError
    from hetfield.train.rundir import RunDir

    run = RunDir(path)
    if run.path.exists() and not run.path.is_dir():
        raise RunError(f"{run.path}: is a file, not a run directory; pass the directory given to `hetfield train`")
    if not run.path.is_dir():
        raise RunError(f"{run.path}: no such run directory; pass the directory given to `hetfield train`")
    cfg = run.config()
    if not run.epochs():
        raise RunError(f"{run.path}: no saved epochs yet (no weights.N.pt with latent.N.npz); train it first or wait for epoch 1")
    cpath = run.config_path
    for section in ("model", "dataset", "train"):
        if cfg.get(section) is not None and not isinstance(cfg[section], dict):
            raise RunError(f"{cpath}: {section} is not a mapping; the file is damaged: {_DAMAGED}")
    model = cfg.get("model") or {}
    ds_cfg = cfg.get("dataset") or {}
    train = cfg.get("train") or {}
    zdim = _config_int(cfg, cpath, [("model", "zdim"), ("train", "zdim")], 0)
    if (model.get("conf_estimation") or train.get("conf_estimation")) == "none":
        zdim = 0
    apix = ds_cfg.get("pixel_size_A")
    if apix is not None and (isinstance(apix, bool) or not isinstance(apix, (int, float)) or not apix > 0):
        raise RunError(f"{cpath}: dataset.pixel_size_A is {apix!r}, not a positive number; the file is damaged: {_DAMAGED}")
    ctx = RunContext(
        run=run,
        config=cfg,
        run_id=run.run_id,
        box=_config_int(cfg, cpath, [("model", "box"), ("dataset", "box")], 2),
        pixel_size_A=float(apix) if apix is not None else float("nan"),
        zdim=zdim,
        n_classes=_config_int(cfg, cpath, [("model", "n_classes"), ("train", "n_classes")], 1),
        n_particles=_config_int(cfg, cpath, [("model", "n_particles"), ("dataset", "n_particles")], 1),
    )
    if ds_cfg.get("path") is not None and not isinstance(ds_cfg["path"], str):
        raise RunError(f"{cpath}: dataset.path is {ds_cfg['path']!r}, not a path; the file is damaged: {_DAMAGED}")
    ds_path = Path(data) if data is not None else (Path(ds_cfg["path"]) if ds_cfg.get("path") else None)
    if ds_path is not None:
        try:
            from hetfield.data.dataset import Dataset

            ds = Dataset.open(ds_path, images=False)  # analyses read metadata only: no image cache needed
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
        if ctx.dataset.n_particles != ctx.n_particles:
            raise RunError(f"{ds_path}: {ctx.dataset.n_particles} particles, but run {ctx.run_id} was trained on {ctx.n_particles}; "
                           "pass the run's own dataset with --data")
    elif ctx.pixel_size_A != ctx.pixel_size_A:  # NaN: neither config.yaml nor a dataset gives it
        raise RunError(f"{cpath}: dataset.pixel_size_A is missing and the dataset cannot be opened; pass --data DATASET, or {_DAMAGED}")
    return ctx


def saved_epoch(ctx: RunContext, epoch, option: str = "--epoch") -> int:
    """``last``/``latest``/None or a saved epoch number → that epoch (RunError saying which exist)."""
    return ctx.run.resolve_epoch(epoch, option)


def inputs(ctx: RunContext) -> tuple:
    """The directories an analysis reads (its run and dataset), which an output must not replace."""
    return (ctx.run.path,) + ((ctx.dataset.path,) if ctx.dataset is not None else ())


def load_model(ctx: RunContext, epoch: int, device):
    """The model of ``weights.N.pt``, checked against ``config.yaml`` (RunError naming the file)."""
    from hetfield.train.load import load_trained

    path = ctx.run.weights_path(epoch)
    try:
        model, _, e = load_trained(ctx.run.path, epoch, device=str(device))
    except RunError:
        raise
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as err:  # load_state_dict, ModelShape(**…)
        reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
        raise RunError(f"{path}: not a model this hetfield can load ({type(err).__name__}: {reason}); the checkpoint is "
                       f"damaged or from another version: remove it and latent.{epoch}.npz to use the other saved epochs, "
                       "or train the run again") from None
    found = {"zdim": int(model.zdim), "n_classes": int(model.shape.n_classes), "box": int(model.shape.box)}
    wanted = {"zdim": ctx.zdim, "n_classes": ctx.n_classes, "box": ctx.box}
    differ = [f"{k} {wanted[k]} in config.yaml, {found[k]} in the checkpoint" for k in found if found[k] != wanted[k]]
    if differ:
        raise RunError(f"{path}: does not match {ctx.run.config_path} ({'; '.join(differ)}); config.yaml was edited or "
                       "belongs to another run: restore it, or train the run again")
    return model
