"""The training loop: epochs over batches of whole particles, checkpoints, exact resume, signals.

Exactness: the particle order of epoch ``e`` is drawn from ``(seed, e)``, the latent noise from a
dedicated CPU generator whose state is checkpointed (a CPU generator so that the state resumes on
any device; its draws are moved to the training device), and an interrupt records where it stopped,
so ``--load latest`` continues with exactly the batches, noise and optimiser state an uninterrupted
run would have used (bit-for-bit on CPU with the same thread count).

Signals: SIGINT/SIGTERM set a flag that every phase checks at least once per batch (training
steps, the EM class start, validation, the latent pass) or EM iteration. The trainer then saves the
newest resumable state — the state at the start of the interrupted phase, which is exact because
those phases change nothing until they finish — and raises :class:`~hetfield.errors.Interrupted`
(exit 128 + signal), also in the last epoch.

One ``train`` at a time writes a run (``RUN/.lock``); everything that can be checked (options,
dataset, device, location) is checked before the run directory is created.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from hetfield.errors import ConfigError, CudaOutOfMemory, DatasetError, Interrupted, RunError
from hetfield.train.config import FIELD_NAMES, TrainConfig, load_config_file
from hetfield.train.optim import Optimizers
from hetfield.train.rundir import CHECKPOINT_FORMAT, LOCK_NAME, RunDir, find_checkpoint, load_checkpoint, save_checkpoint

__all__ = ["Interrupted", "RESUMABLE_CHANGES", "train", "resume_config", "load_trained", "resolve_device"]

# Settings that may change when resuming; everything else must match the run's config.yaml.
# A changed batch size (the pipeline halves it after running out of GPU memory) resumes from the
# same particle of the same epoch order, but is no longer bit-identical to an uninterrupted run.
RESUMABLE_CHANGES = {"epochs", "device", "threads", "checkpoint_every", "amp", "batch_size"}


def resolve_device(name: str = "auto"):
    """``auto`` → CUDA when available, else CPU. A CUDA device is tried (one tiny allocation) so
    that an unusable one is a :class:`ConfigError` before anything is written."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: give auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        try:
            torch.zeros(1, device=device)
        except Exception as err:  # an invalid ordinal, a busy or broken GPU: torch raises several types
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise ConfigError(
                f"--device {name}: cannot use it ({reason}); this machine has {torch.cuda.device_count()} CUDA device(s): choose cuda:0… or cpu"
            ) from None
    return device


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


class _Log:
    def __init__(self, path: Path, echo: Callable[[str], None] | None):
        self.path, self.echo = path, echo

    def __call__(self, message: str, echo: bool = True) -> None:
        from hetfield.io.atomic import append_line

        append_line(self.path, f"{_now()}  {message}")
        if echo and self.echo is not None:
            self.echo(message)


class _StopRequested(Exception):
    """Raised by the phase checks when a signal has arrived (internal to the trainer)."""


@contextlib.contextmanager
def _signals_to_flag(flag: dict):
    """Turn SIGINT/SIGTERM into a flag that the phases check (main thread only)."""

    def handler(signum, frame):
        flag.setdefault("signum", signum)

    previous = {}
    try:
        for s in (signal.SIGINT, signal.SIGTERM):
            previous[s] = signal.signal(s, handler)
    except ValueError:  # not the main thread: no handlers, no clean-interrupt support
        previous = {}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# -- settings and the run directory ---------------------------------------------------------------
def resume_config(run_path: str | Path, config_file: Path | None, overrides: dict[str, Any]) -> tuple[TrainConfig, dict[str, str]]:
    """Settings for ``--load``: the run's stored settings < ``--config FILE`` < options given.

    Returns the settings and where each value that was given came from (for the message that
    names a setting which may not change on resume). A run without config.yaml (killed before it
    was written) starts from the defaults instead of stored settings.
    """
    run = RunDir(run_path)
    values: dict[str, Any] = run.train_settings() if run.exists() else {}
    sources: dict[str, str] = {}
    if config_file is not None:
        from_file = load_config_file(Path(config_file))
        values.update(from_file)
        sources.update({k: f"--config {config_file}" for k in from_file})
    given = {k: v for k, v in overrides.items() if v is not None}
    values.update(given)
    sources.update({k: "the command line" for k in given})
    try:
        cfg = TrainConfig(**values)
    except TypeError as err:
        raise ConfigError(f"invalid training options: {err}") from None
    return cfg.validate(), sources


def _check_location(run: RunDir, load: str | None) -> None:
    """The run directory can be used (created, written) — checked before anything is created."""
    path = run.path
    if path.exists() and not path.is_dir():
        raise RunError(f"{path}: exists and is not a directory; choose another run directory")
    if load is not None and not path.is_dir():
        raise RunError(f"--load {load}: {path} does not exist; start the run without --load (or check the path)")
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunError(f"{path}: cannot create it: {ancestor} is a file; choose another location")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise RunError(f"{path}: cannot write there: no write permission in {ancestor}; choose another location or fix its permissions")


def _check_resumable(run: RunDir, cfg: TrainConfig, ds, sources: dict[str, str] | None) -> None:
    stored = run.train_settings()
    differ = [k for k in FIELD_NAMES if k not in RESUMABLE_CHANGES and stored[k] != getattr(cfg, k)]
    if differ:
        def one(k: str) -> str:
            src = f" from {sources[k]}" if sources and k in sources else ""
            return f"{k} ({stored[k]!r} → {getattr(cfg, k)!r}{src})"

        raise ConfigError(
            f"--load: {', '.join(one(k) for k in differ)} differ from the run being resumed; only "
            f"{', '.join(sorted(RESUMABLE_CHANGES))} may change: drop the others, or train a new run (another directory, or --force to start this one over)"
        )
    if run.dataset_fingerprint() != ds.fingerprint:
        raise DatasetError(f"--load: {run.path} was trained on another dataset (fingerprint differs); resume it with its own --data")


def _refuse(run: RunDir, cfg: TrainConfig, ds, load: str | None, force: bool, sources) -> None:
    """Raise when the request does not fit the run directory; changes nothing. Called once before
    the directory is touched (a refused command leaves no lock file behind) and again under the lock."""
    if not run.path.is_dir():
        return
    foreign = run.foreign_entries()
    if load is None:
        if run.started() and not force:
            saved = run.epochs()
            what = f"saved epochs up to {saved[-1]}" if saved else "an interrupted first epoch (resume.pt)"
            raise RunError(f"{run.path} already holds a run ({what}); resume it with --load latest, or pass --force to start it over")
        if not run.started() and foreign and not force:
            raise RunError(
                f"{run.path} exists and holds files that are not a hetfield run ({', '.join(p.name for p in foreign[:3])}{', …' if len(foreign) > 3 else ''}); "
                "choose a new directory or pass --force"
            )
        return
    if not run.started():
        if load != "latest":
            raise RunError(f"--load {load}: {run.path} has no saved epochs yet; start it with --load latest or without --load")
        if foreign and not run.exists():
            raise RunError(f"--load latest: {run.path} is not a hetfield run (it holds {', '.join(p.name for p in foreign[:3])}); check the path")
    if run.exists():
        _check_resumable(run, cfg, ds, sources)
    if load != "latest" and run.started():
        find_checkpoint(run, load)  # --load N must name a saved epoch


def _prepare_run(run: RunDir, cfg: TrainConfig, ds, load: str | None, force: bool, sources) -> tuple[dict | None, Path | None, str | None]:
    """Check the run directory against the request: ``(state to resume, its path, a note)``; None
    state: start (a new run, one started over with --force, or an unstarted one)."""
    _refuse(run, cfg, ds, load, force, sources)
    if load is None:
        if run.started():
            _clear_run(run, keep_log=False)
            return None, None, "started over (--force)"
        unstarted = run.exists()
        _clear_run(run, keep_log=True)
        return None, None, ("restarted: the run had no checkpoint yet" if unstarted else None)
    if not run.started():
        _clear_run(run, keep_log=True)
        return None, None, "nothing was saved yet: starting the run"
    path = find_checkpoint(run, load)
    if path is None:  # started() guarantees a checkpoint or resume.pt
        raise RunError(f"{run.path}: nothing to resume; start it over with --force")
    state = load_checkpoint(path)
    if load != "latest":
        n = int(state["epoch"])
        later = [run.weights_path(e) for e in run.epochs() if e > n] + [run.latent_path(e) for e in run.epochs() if e > n]
        if run.resume_path.is_file():
            later.append(run.resume_path)
        if later:
            if not force:
                newer = sorted({e for e in run.epochs() if e > n})
                what = f"epochs {', '.join(map(str, newer))}" if newer else "an interrupted epoch (resume.pt)"
                raise RunError(
                    f"--load {load}: {run.path} holds {what} trained after epoch {n}; resuming would mix two trainings: "
                    f"use --load latest, or pass --force to discard what came after epoch {n}"
                )
            for p in later:
                p.unlink(missing_ok=True)
    return state, path, None


def _clear_run(run: RunDir, keep_log: bool) -> None:
    import shutil

    for p in run.path.iterdir():
        if p.name == LOCK_NAME or (keep_log and p.name == "run.log"):
            continue
        if p.name in ("config.yaml", "run.log", "metrics.jsonl", "resume.pt", "convergence") or p.name.startswith(("weights.", "latent.", "analysis.")):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def _remove_if_empty(run: RunDir) -> None:
    """A run directory this process created and left with nothing but its lock goes again."""
    try:
        entries = [p.name for p in run.path.iterdir()]
        if set(entries) <= {LOCK_NAME}:
            (run.path / LOCK_NAME).unlink(missing_ok=True)
            run.path.rmdir()
    except OSError:
        pass


def _write_config(run: RunDir, cfg: TrainConfig, shape, ds, device, command: str | None) -> None:
    import torch

    from hetfield import __version__
    from hetfield.io.atomic import write_yaml_atomic

    write_yaml_atomic(
        run.config_path,
        {
            "run_id": run.path.resolve().name,
            "hetfield_version": __version__,
            "torch_version": str(torch.__version__),
            "created": _now(),
            "command": command,
            "dataset": {
                "path": str(ds.path.resolve()),
                "fingerprint": ds.fingerprint,
                "n_particles": ds.n_particles,
                "n_images": ds.n_images,
                "box": ds.box,
                "pixel_size_A": ds.pixel_size_A,
            },
            "train": cfg.to_dict(),
            "beta_effective": cfg.effective_beta,
            "model": asdict(shape),
            "device": str(device),
        },
    )


def build_model(ds, cfg: TrainConfig):
    import torch

    from dataclasses import fields

    from hetfield.model.reconstruction import ModelShape, Reconstruction

    # The model's shape is the training options of the same name, plus the dataset's sizes.
    same = {f.name: getattr(cfg, f.name) for f in fields(ModelShape) if hasattr(cfg, f.name)}
    shape = ModelShape(
        **{**same, "box": ds.box, "n_particles": ds.n_particles, "n_images": ds.n_images, "conf_estimation": cfg.effective_conf_estimation}
    )
    rot = torch.from_numpy(ds.arrays["rotation"]) if cfg.pose_estimation == "refine" else None
    org = torch.from_numpy(ds.arrays["origin_px"]) if cfg.pose_estimation == "refine" else None
    return Reconstruction(shape, rot, org), shape


def _amplitude_profile(model, ds, cfg: TrainConfig, max_particles: int = 512, check: Callable[[], None] | None = None):
    """The fields' radial preconditioning, from a seeded sample of particles (see Reconstruction)."""
    import numpy as np

    from hetfield.data.batching import ParticleBatches
    from hetfield.model.reconstruction import estimate_amplitude_profile

    rng = np.random.default_rng(cfg.seed)
    sample = np.sort(rng.choice(ds.n_particles, size=min(ds.n_particles, max_particles), replace=False))
    batches = ParticleBatches(ds, model.points, 32, shuffle=False, particles=sample, prefetch=False, dose_mask=cfg.dose_mask)
    return estimate_amplitude_profile(model, _checked(batches.epoch(0), check), dose_weight=cfg.dose_weight, dose_mask=cfg.dose_mask)


def _checked(items, check: Callable[[], None] | None):
    """``items``, calling ``check()`` (which raises to stop) before each one and after the last."""
    for item in items:
        if check is not None:
            check()
        yield item
    if check is not None:
        check()


def split_validation(n_particles: int, fraction: float, seed: int):
    """``(train, validation)`` particle indices: a seeded ``floor(fraction·N)`` held out (none below 20)."""
    import numpy as np

    n_val = int(np.floor(fraction * n_particles))
    if n_val < 1:
        return np.arange(n_particles), np.zeros(0, np.int64)
    val = np.sort(np.random.default_rng([seed, 99]).choice(n_particles, size=n_val, replace=False))
    return np.setdiff1d(np.arange(n_particles), val), val


def validation_loss(model, ds, cfg: TrainConfig, particles, device, resp=None, consensus: bool = False, batch_size: int = 32, check=None) -> float | None:
    """Mean data loss of held-out particles: latents from the encoder's mean (no sampling), classes
    by the mixture likelihood under their untrained (uniform) scores. ``None`` without held-out
    particles or with autodecoder latents (which exist only for trained particles)."""
    import torch

    from hetfield.data.batching import ParticleBatches

    if len(particles) == 0 or model.latents is not None:
        return None
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        loader = ParticleBatches(ds, model.points, batch_size, shuffle=False, particles=particles, prefetch=False, dose_mask=cfg.dose_mask)
        for batch in _checked(loader.epoch(0), check):
            batch = batch.to(device)
            out = model(batch, beta=0.0, std_noise=cfg.std_noise, dose_weight=cfg.dose_weight, tilt_weight=cfg.tilt_weight, dose_mask=cfg.dose_mask, sample=False, consensus_only=consensus)
            total += float(out["data"]) * batch.n_particles
            count += batch.n_particles
            if resp is not None and not consensus:
                resp.index_copy_(0, batch.particles, out["responsibility"].to(resp.dtype))
    model.train()
    return total / max(count, 1)


def compute_latents(model, ds, cfg: TrainConfig, device, resp=None, val_particles=None, batch_size: int = 64, check=None) -> dict[str, Any]:
    """Per-particle deterministic latents, class probabilities and (refined) poses.

    ``class_probs`` are the posterior class probabilities (responsibilities) each particle got in
    its last training step; ``class_gate`` is the score table's ``softmax(scores)``, the learned
    prior that Hydra reports instead.
    """
    import numpy as np
    import torch

    from hetfield.data.batching import ParticleBatches

    out: dict[str, Any] = {}
    model.eval()
    if model.zdim:
        loader = ParticleBatches(ds, model.points, batch_size, shuffle=False, prefetch=True, dose_mask=cfg.dose_mask)
        mus, logvars = [], []
        for batch in _checked(loader.epoch(0), check):
            mu, logvar = model.embed(batch.to(device), dose_weight=cfg.dose_weight, dose_mask=cfg.dose_mask)
            mus.append(mu.float().cpu())
            logvars.append(logvar.float().cpu())
        out["z_mu"] = torch.cat(mus).numpy()
        out["z_logvar"] = torch.cat(logvars).numpy()
    if model.scores is not None:
        out["class_gate"] = torch.softmax(model.scores.scores.detach().float(), -1).cpu().numpy()
        probs = resp.detach().float().cpu().numpy() if resp is not None else out["class_gate"]
    else:
        probs = np.ones((ds.n_particles, 1), np.float32)
    out["class_probs"] = probs.astype(np.float32)
    held_out = np.zeros(ds.n_particles, bool)
    if val_particles is not None:
        held_out[val_particles] = True
    out["held_out"] = held_out
    out["class_idx"] = probs.argmax(1).astype(np.int64)
    if model.poses is not None:
        rotation, origin = model.poses.all_poses()
        out["rotation"] = rotation.detach().float().cpu().numpy()
        out["origin_px"] = origin.detach().float().cpu().numpy()
    model.train()
    return out


def train(
    run_path: str | Path,
    data_path: str | Path,
    cfg: TrainConfig,
    load: str | None = None,
    force: bool = False,
    command: str | None = None,
    echo: Callable[[str], None] | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
    sources: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Train (or resume) a run; return the last epoch's metrics.

    Raises :class:`~hetfield.errors.Interrupted` on SIGINT/SIGTERM after saving a resumable state,
    :class:`RunError` when another process trains the same run. ``sources`` (option → where its
    value came from) only improves the message for settings that may not change on resume.
    """
    from hetfield.data.dataset import Dataset
    from hetfield.io.atomic import remove_stale_temporaries
    from hetfield.io.lock import exclusive_lock

    flag: dict = {}
    with _signals_to_flag(flag):
        # Everything that can be checked is checked before the run directory is created.
        cfg.validate()
        ds = Dataset.open(data_path)
        ds.check_fresh()
        if cfg.pose_estimation in ("fixed", "refine") and not ds.has_poses:
            raise ConfigError(f"--pose-estimation {cfg.pose_estimation}: {data_path} has no poses; ab initio pose search is not available yet")
        device = resolve_device(cfg.device)
        run = RunDir(run_path)
        _check_location(run, load)
        _refuse(run, cfg, ds, load, force, sources)
        created = not run.path.exists()
        try:
            run.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunError(f"{run.path}: cannot create it ({err.strerror}); choose another location") from None
        lock = exclusive_lock(
            run.path / LOCK_NAME, f"run directory {run.path}", RunError, "wait for that training to finish (or stop it), or train into another directory"
        )
        with contextlib.ExitStack() as held:
            try:
                held.enter_context(lock)
            except OSError as err:  # a filesystem without locks (some network mounts)
                if created:
                    _remove_if_empty(run)
                raise RunError(f"{run.path / LOCK_NAME}: cannot lock the run directory ({err.strerror}); train on a local or lock-capable filesystem") from None
            try:
                if flag.get("signum"):
                    name = _signal_name(flag["signum"])
                    raise Interrupted(f"stopped by {name} before training started; nothing was changed in {run.path}", flag["signum"])
                remove_stale_temporaries(run.path)
                return _train_locked(run, ds, data_path, cfg, device, load, force, command, echo, progress, sources, flag)
            except OSError as err:  # a full disk, a permission changed under us
                if created:
                    _remove_if_empty(run)
                where = err.filename or run.path
                raise RunError(f"{where}: {err.strerror or err}; fix it (disk space, permissions) and continue with --load latest") from None
            except BaseException:
                if created:
                    _remove_if_empty(run)
                raise


def _train_locked(run: RunDir, ds, data_path, cfg: TrainConfig, device, load, force, command, echo, progress, sources, flag: dict) -> dict[str, Any]:
    import numpy as np
    import torch

    from hetfield.data.batching import ParticleBatches
    from hetfield.io.atomic import append_line, write_atomic

    state, state_path, note = _prepare_run(run, cfg, ds, load, force, sources)
    log = _Log(run.log_path, echo)
    continue_hint = f"continue with: hetfield train {run.path} --data {data_path} --load latest"

    def check() -> None:
        if flag.get("signum"):
            raise _StopRequested()

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)
    model, shape = build_model(ds, cfg)
    if state is None:
        _write_config(run, cfg, shape, ds, device, command)
        log(
            f"new run {run.run_id}" + (f" ({note})" if note else "")
            + f": dataset {ds.path} ({ds.n_particles} particles, {ds.n_images} images, box {ds.box}), device {device}"
        )
        try:
            model.amplitude.copy_(_amplitude_profile(model, ds, cfg, check=check))
        except _StopRequested:
            name = _signal_name(flag["signum"])
            log(f"stopped by {name} before training started; nothing saved", echo=False)
            raise Interrupted(f"stopped by {name} before training started (nothing to resume); start it again with the same command or --load latest", flag["signum"]) from None
    try:
        model.to(device)
    except RuntimeError as err:
        raise ConfigError(f"--device {cfg.device}: cannot place the model there ({(str(err).splitlines() or ['?'])[0]}); choose another --device") from None
    opt = Optimizers(model, cfg.lr, cfg.lr_latent, cfg.lr_score_table, cfg.lr_pose, cfg.weight_decay, cfg.lr_encoder)
    # A CPU generator on every device: its state resumes anywhere (a CUDA generator's does not load
    # into a CPU one, nor the other way round), and its draws are moved to the device.
    gen = torch.Generator().manual_seed(cfg.seed + 17)
    start_epoch, start_particle = 0, 0
    sums_resume = None
    prev_classes = None
    # Latest class posterior of every particle (K > 1), refreshed as its batch is trained.
    resp = torch.full((ds.n_particles, cfg.n_classes), 1.0 / cfg.n_classes, device=device) if cfg.n_classes > 1 else None
    if state is not None:
        start_epoch, sums_resume, prev_classes = _restore(state, state_path, model, opt, gen, resp, ds, cfg, device, log)
        start_particle = int(sums_resume[3]) if sums_resume is not None else 0
        if state["train"].get("batch_size", cfg.batch_size) != cfg.batch_size:
            log(f"batch size {state['train']['batch_size']} → {cfg.batch_size}: continuing from the same particle, not bit-identical to an uninterrupted run")
        dropped = run.keep_metrics_through(start_epoch)
        log(
            f"resumed after epoch {start_epoch}" + (f" + {start_particle} particles" if start_particle else "") + f" ({'latest' if load == 'latest' else load})"
            + (f"; dropped {dropped} metrics row(s) of epochs after {start_epoch}, trained again now" if dropped else "")
        )
        _update_config_epochs(run, cfg)

    # Autodecoder latents exist only for trained particles: nothing is held out for them.
    fraction = 0.0 if cfg.effective_conf_estimation == "autodecoder" else cfg.val_fraction
    train_particles, val_particles = split_validation(ds.n_particles, fraction, cfg.seed)
    if state is None and len(val_particles):
        log(f"holding out {len(val_particles)} of {ds.n_particles} particles to measure the validation loss")
    loader = ParticleBatches(ds, model.points, cfg.batch_size, seed=cfg.seed, particles=train_particles, dose_mask=cfg.dose_mask)
    amp = cfg.amp and device.type == "cuda"
    beta = cfg.effective_beta
    last_metrics: dict[str, Any] = {}
    steps = len(loader)
    if start_epoch >= cfg.epochs:
        log(f"nothing to do: {start_epoch} epochs done, --epochs {cfg.epochs}")
        return {}

    # Where a stop would resume: (epoch, sums, classes of the previous epoch) matching the model
    # as it is now, or the number of the epoch whose checkpoint was just written.
    resume_at: tuple | int | None = None

    def stop() -> Interrupted:
        signum = flag["signum"]
        name = _signal_name(signum)
        if isinstance(resume_at, int):
            done = resume_at == cfg.epochs
            where = f"after epoch {resume_at}/{cfg.epochs} (saved weights.{resume_at}.pt)"
            message = f"stopped by {name} {where}; " + ("the run is complete" if done else continue_hint)
        elif resume_at is None:  # not reached: every check follows a resumable point
            message = f"stopped by {name}; {continue_hint} (from the last checkpoint)"
        else:
            epoch, sums_at, classes_at = resume_at
            save_checkpoint(run.resume_path, _state(model, opt, gen, shape, cfg, ds, epoch, sums_at, resp, classes_at))
            particles_done = int(sums_at[3])
            where = f"in epoch {epoch + 1}/{cfg.epochs} after {particles_done} of {len(train_particles)} particles" if particles_done else f"at the start of epoch {epoch + 1}/{cfg.epochs}"
            message = f"stopped by {name} {where}; saved {run.resume_path}; {continue_hint}"
        log(message, echo=False)  # the caller reports it (the CLI: one line on stderr)
        return Interrupted(message, signum)

    model.train()
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            sums = torch.zeros(5, dtype=torch.float64, device=device)  # loss·P, data·P, kl·P, P, images
            if sums_resume is not None and epoch == start_epoch:
                sums += sums_resume.to(device)
            first = start_particle if epoch == start_epoch else 0
            # ``sums`` is live: at every check it counts exactly the steps the model has taken.
            resume_at = (epoch, sums, prev_classes)
            check()
            images_seen = particles_seen = 0
            step0 = -(-first // cfg.batch_size)
            if model.scores is not None and epoch == cfg.class_init_epochs > 0 and first == 0:
                from hetfield.model.class_init import initialise_classes

                # Stops inside resume at the epoch start: the model changes only once EM is done.
                initialise_classes(model, opt, ds, cfg, device, log, particles=train_particles, check=check)
                resp.copy_(torch.softmax(model.scores.scores.detach(), -1))
                resume_at = None  # no resumable state until the first step is done (nothing checks here)
            consensus = model.scores is not None and epoch < cfg.class_init_epochs
            hold = model.scores is not None and cfg.class_init_epochs > 0 and cfg.class_init_epochs <= epoch < cfg.class_init_epochs + cfg.class_hold_epochs
            for step, batch in enumerate(loader.epoch(epoch, first), start=step0):
                batch = batch.to(device)
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
                    out = model(
                        batch, beta=beta, std_noise=cfg.std_noise, dose_weight=cfg.dose_weight, tilt_weight=cfg.tilt_weight,
                        dose_mask=cfg.dose_mask, generator=gen, consensus_only=consensus, hold_classes=hold,
                    )
                opt.zero_grad()
                out["loss"].backward()
                opt.step(poses=epoch >= cfg.pose_warmup_epochs)
                if resp is not None and not consensus:
                    resp.index_copy_(0, batch.particles, out["responsibility"].to(resp.dtype))
                p = batch.n_particles
                sums += torch.stack([out["loss"].detach() * p, out["data"] * p, out["kl"] * p, torch.tensor(p, device=device), torch.tensor(batch.n_images, device=device)]).double()
                images_seen += batch.n_images
                particles_seen += p
                resume_at = (epoch, sums, prev_classes)
                if progress is not None:
                    progress(epoch, step + 1, {"steps": steps, "sums": sums, "images": images_seen, "t0": t0})
                check()
            seconds = time.perf_counter() - t0
            s = sums.cpu().numpy()
            n_p = max(s[3], 1.0)
            metrics: dict[str, Any] = {
                "epoch": epoch + 1,
                "loss": s[0] / n_p,
                "data_loss": s[1] / n_p,
                "kl": s[2] / n_p,
                "beta": beta,
                "lr": cfg.lr,
                "seconds": round(seconds, 3),
                "images_per_s": round(images_seen / max(seconds, 1e-9), 2),
                "particles_per_s": round(particles_seen / max(seconds, 1e-9), 2),
            }
            val = validation_loss(model, ds, cfg, val_particles, device, resp, consensus, check=check)
            if val is not None:
                metrics["val_data_loss"] = val
            classes = None
            if resp is not None:
                classes = resp.argmax(1)
                occ = torch.bincount(classes, minlength=shape.n_classes).float() / shape.n_particles
                metrics["class_occupancy"] = [round(float(v), 5) for v in occ.cpu()]
                metrics["mean_max_prob"] = float(resp.max(1).values.mean())
                metrics["consensus_phase"] = consensus
                if prev_classes is not None:
                    metrics["class_change_fraction"] = float((classes != prev_classes.to(classes.device)).float().mean())
                classes = classes.cpu()
            metrics = {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in metrics.items()}
            # The metrics line first, then the checkpoint: a kill in between leaves a row that the
            # resumed run drops (keep_metrics_through) and writes again — never a checkpoint without its row.
            append_line(run.metrics_path, json.dumps(metrics))
            save_now = (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs
            if save_now:
                latents = compute_latents(model, ds, cfg, device, resp, val_particles, check=check)
                write_atomic(run.latent_path(epoch + 1), lambda p, d=latents: _savez(p, d))
                save_checkpoint(run.weights_path(epoch + 1), _state(model, opt, gen, shape, cfg, ds, epoch + 1, None, resp, classes))
                resume_at = epoch + 1
            else:
                resume_at = (epoch + 1, torch.zeros(5, dtype=torch.float64), classes)
            prev_classes = classes
            run.resume_path.unlink(missing_ok=True)
            sums_resume = None
            occ_txt = f", classes {metrics['class_occupancy']}" if "class_occupancy" in metrics else ""
            log(
                f"epoch {epoch + 1}/{cfg.epochs}: loss {metrics['loss']:.5f} (data {metrics['data_loss']:.5f}, kl {metrics['kl']:.3f}"
                + (f", validation {metrics['val_data_loss']:.5f}" if "val_data_loss" in metrics else "") + "), "
                f"{metrics['images_per_s']:.0f} images/s{occ_txt}" + (f"; saved weights.{epoch + 1}.pt" if save_now else "")
            )
            last_metrics = metrics
            check()
    except _StopRequested:
        raise stop() from None
    except torch.cuda.OutOfMemoryError:
        raise CudaOutOfMemory(
            f"CUDA ran out of memory with --batch-size {cfg.batch_size}; retry with --batch-size {max(cfg.batch_size // 2, 1)} (and --load latest)"
        ) from None
    return last_metrics


def _restore(state: dict, path: Path, model, opt, gen, resp, ds, cfg: TrainConfig, device, log) -> tuple[int, Any, Any]:
    """Load a checkpoint into the model, optimisers, generator and posterior; ``(epoch, sums, previous classes)``.

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
    return int(state["epoch"]), sums, prev


def _update_config_epochs(run: RunDir, cfg: TrainConfig) -> None:
    """Record resumable changes (e.g. more epochs) in config.yaml."""
    from hetfield.io.atomic import write_yaml_atomic

    if not run.config_path.is_file():
        return
    data = run.config()
    changed = False
    for k in RESUMABLE_CHANGES:
        if data["train"].get(k) != getattr(cfg, k):
            data["train"][k] = getattr(cfg, k)
            changed = True
    if changed:
        write_yaml_atomic(run.config_path, data)


def _state(model, opt, gen, shape, cfg, ds, epoch: int, sums, resp, prev_classes) -> dict[str, Any]:
    """A checkpoint: after ``epoch`` completed epochs plus the particles counted in ``sums`` (None: none)."""
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
    }


def _savez(path: Path, arrays: dict[str, Any]) -> None:
    import numpy as np

    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def load_trained(run_path: str | Path, epoch: int | str | None = None, device: str = "cpu"):
    """``(model, config dict, epoch)`` of a trained run, for analysis and volume decoding."""
    import torch

    from hetfield.model.reconstruction import ModelShape, Reconstruction

    run = RunDir(run_path)
    config = run.config()
    e = run.resolve_epoch(epoch)
    path = run.weights_path(e)
    state = load_checkpoint(path)
    try:
        shape = ModelShape(**state["shape"])
        model = Reconstruction(shape)
        model.load_state_dict(state["model"])
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        raise RunError(
            f"{path}: damaged checkpoint: it does not fit the model config.yaml describes ({type(err).__name__}); "
            "use another epoch (--epoch N), or remove it and resume training with --load latest"
        ) from None
    model.to(torch.device(device)).eval()
    return model, config, e
