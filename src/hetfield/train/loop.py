"""The training loop: epochs over batches of whole particles, checkpoints, exact resume, signals.

Exactness: the particle order of epoch ``e`` is drawn from ``(seed, e)``, the latent noise from a
dedicated generator whose state is checkpointed, and a mid-epoch interrupt records the step, so
``--load latest`` continues with exactly the batches, noise and optimiser state an uninterrupted run
would have used (bit-for-bit on CPU with the same thread count).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from hetfield.errors import ConfigError, CudaOutOfMemory, DatasetError, RunError
from hetfield.train.config import TrainConfig
from hetfield.train.optim import Optimizers
from hetfield.train.rundir import CHECKPOINT_FORMAT, RunDir, find_checkpoint, load_checkpoint, save_checkpoint

# Settings that may change when resuming; everything else must match the run's config.yaml.
# A changed batch size (the pipeline halves it after running out of GPU memory) resumes from the
# same particle of the same epoch order, but is no longer bit-identical to an uninterrupted run.
RESUMABLE_CHANGES = {"epochs", "device", "threads", "checkpoint_every", "amp", "batch_size"}


class Interrupted(Exception):
    """Training stopped on a signal after saving ``resume.pt``; ``signum`` tells which."""

    def __init__(self, signum: int, epoch: int, step: int):
        super().__init__(f"interrupted by signal {signum} in epoch {epoch + 1} at step {step}")
        self.signum, self.epoch, self.step = signum, epoch, step


def resolve_device(name: str = "auto"):
    """``auto`` → CUDA when available, else CPU; a CUDA device on a machine without one is an error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; use --device cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: give auto, cpu, cuda or cuda:N") from None


def _now() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


class _Log:
    def __init__(self, path: Path, echo: Callable[[str], None] | None):
        self.path, self.echo = path, echo

    def __call__(self, message: str) -> None:
        from hetfield.io.atomic import append_line

        append_line(self.path, f"{_now()}  {message}")
        if self.echo is not None:
            self.echo(message)


@contextlib.contextmanager
def _signals_to_flag(flag: dict):
    """Turn SIGINT/SIGTERM into a flag checked between steps (main thread only)."""

    def handler(signum, frame):
        flag["signum"] = signum

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


def _prepare_run(run: RunDir, cfg: TrainConfig, ds, load: str | None, force: bool) -> tuple[dict | None, TrainConfig]:
    """Check the run directory against the request; return the checkpoint to resume (or None)."""
    if load is None:
        if run.exists() or run.epochs():
            if not force:
                raise RunError(
                    f"{run.path} already holds a run; resume it with --load latest, or pass --force to start it over"
                )
            _clear_run(run)
        elif run.path.exists() and any(run.path.iterdir()) and not force:
            raise RunError(f"{run.path} exists and is not empty; choose a new directory or pass --force")
        return None, cfg
    stored = run.config()
    stored_train = TrainConfig(**stored["train"])
    differ = [k for k, v in asdict(cfg).items() if k not in RESUMABLE_CHANGES and stored["train"].get(k) != v]
    if differ:
        raise ConfigError(
            f"--load: {', '.join(f'{k} ({stored_train.__dict__[k]!r} → {getattr(cfg, k)!r})' for k in differ)} "
            "differ from the run being resumed; only epochs, batch_size, device, threads, amp and checkpoint_every may change"
        )
    if stored.get("dataset", {}).get("fingerprint") != ds.fingerprint:
        raise DatasetError(f"--load: {run.path} was trained on another dataset (fingerprint differs); resume it with its own --data")
    return load_checkpoint(find_checkpoint(run, load)), cfg


def _clear_run(run: RunDir) -> None:
    import shutil

    for p in run.path.iterdir():
        if p.name in ("config.yaml", "run.log", "metrics.jsonl", "resume.pt", "convergence") or p.name.startswith(("weights.", "latent.", "analysis.")):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


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


def _amplitude_profile(model, ds, cfg: TrainConfig, max_particles: int = 512):
    """The fields' radial preconditioning, from a seeded sample of particles (see Reconstruction)."""
    import numpy as np

    from hetfield.data.batching import ParticleBatches
    from hetfield.model.reconstruction import estimate_amplitude_profile

    rng = np.random.default_rng(cfg.seed)
    sample = np.sort(rng.choice(ds.n_particles, size=min(ds.n_particles, max_particles), replace=False))
    batches = ParticleBatches(ds, model.points, 32, shuffle=False, particles=sample, prefetch=False, dose_mask=cfg.dose_mask)
    return estimate_amplitude_profile(model, batches.epoch(0), dose_weight=cfg.dose_weight, dose_mask=cfg.dose_mask)


def split_validation(n_particles: int, fraction: float, seed: int):
    """``(train, validation)`` particle indices: a seeded ``floor(fraction·N)`` held out (none below 20)."""
    import numpy as np

    n_val = int(np.floor(fraction * n_particles))
    if n_val < 1:
        return np.arange(n_particles), np.zeros(0, np.int64)
    val = np.sort(np.random.default_rng([seed, 99]).choice(n_particles, size=n_val, replace=False))
    return np.setdiff1d(np.arange(n_particles), val), val


def validation_loss(model, ds, cfg: TrainConfig, particles, device, resp=None, consensus: bool = False, batch_size: int = 32) -> float | None:
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
        for batch in loader.epoch(0):
            batch = batch.to(device)
            out = model(batch, beta=0.0, std_noise=cfg.std_noise, dose_weight=cfg.dose_weight, tilt_weight=cfg.tilt_weight, dose_mask=cfg.dose_mask, sample=False, consensus_only=consensus)
            total += float(out["data"]) * batch.n_particles
            count += batch.n_particles
            if resp is not None and not consensus:
                resp.index_copy_(0, batch.particles, out["responsibility"].to(resp.dtype))
    model.train()
    return total / max(count, 1)


def compute_latents(model, ds, cfg: TrainConfig, device, resp=None, val_particles=None, batch_size: int = 64) -> dict[str, Any]:
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
        for batch in loader.epoch(0):
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
) -> dict[str, Any]:
    """Train (or resume) a run; return the last epoch's metrics. Raises :class:`Interrupted`."""
    import numpy as np
    import torch

    from hetfield.data.batching import ParticleBatches
    from hetfield.data.dataset import Dataset
    from hetfield.io.atomic import append_line, write_atomic

    cfg.validate()
    ds = Dataset.open(data_path)
    ds.check_fresh()
    if cfg.pose_estimation in ("fixed", "refine") and not ds.has_poses:
        raise ConfigError(f"--pose-estimation {cfg.pose_estimation}: {data_path} has no poses; ab initio pose search is not available yet")
    run = RunDir(run_path)
    state, cfg = _prepare_run(run, cfg, ds, load, force)
    run.path.mkdir(parents=True, exist_ok=True)
    log = _Log(run.log_path, echo)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(cfg.seed)
    model, shape = build_model(ds, cfg)
    if state is None:
        model.amplitude.copy_(_amplitude_profile(model, ds, cfg))
    model.to(device)
    opt = Optimizers(model, cfg.lr, cfg.lr_latent, cfg.lr_score_table, cfg.lr_pose, cfg.weight_decay, cfg.lr_encoder)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 17)
    start_epoch, start_particle = 0, 0
    sums_resume = None
    # Latest class posterior of every particle (K > 1), refreshed as its batch is trained.
    resp = torch.full((ds.n_particles, cfg.n_classes), 1.0 / cfg.n_classes, device=device) if cfg.n_classes > 1 else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        start_epoch = int(state["epoch"])
        sums_resume = state.get("sums")
        start_particle = int(sums_resume[3]) if sums_resume is not None else 0
        if int(state["train"]["batch_size"]) != cfg.batch_size:
            log(f"batch size {state['train']['batch_size']} → {cfg.batch_size}: continuing from the same particle, not bit-identical to an uninterrupted run")
        if resp is not None and state.get("responsibility") is not None:
            resp.copy_(state["responsibility"].to(device))
        log(f"resumed after epoch {start_epoch}" + (f" + {start_particle} particles" if start_particle else "") + f" ({'latest' if load == 'latest' else load})")
    else:
        _write_config(run, cfg, shape, ds, device, command)
        log(f"new run {run.run_id}: dataset {ds.path} ({ds.n_particles} particles, {ds.n_images} images, box {ds.box}), device {device}")
    if state is not None and run.config_path.is_file():
        _update_config_epochs(run, cfg)

    # Autodecoder latents exist only for trained particles: nothing is held out for them.
    fraction = 0.0 if cfg.effective_conf_estimation == "autodecoder" else cfg.val_fraction
    train_particles, val_particles = split_validation(ds.n_particles, fraction, cfg.seed)
    if state is None and len(val_particles):
        log(f"holding out {len(val_particles)} of {ds.n_particles} particles to measure the validation loss")
    loader = ParticleBatches(ds, model.points, cfg.batch_size, seed=cfg.seed, particles=train_particles, dose_mask=cfg.dose_mask)
    amp = cfg.amp and device.type == "cuda"
    beta = cfg.effective_beta
    flag: dict = {}
    prev_classes = None
    last_metrics: dict[str, Any] = {}
    steps = len(loader)
    if start_epoch >= cfg.epochs:
        log(f"nothing to do: {start_epoch} epochs done, --epochs {cfg.epochs}")
        return {}
    model.train()
    with _signals_to_flag(flag):
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            sums = torch.zeros(5, dtype=torch.float64, device=device)  # loss·P, data·P, kl·P, P, images
            if sums_resume is not None and epoch == start_epoch:
                sums += sums_resume.to(device)
            first = start_particle if epoch == start_epoch else 0
            images_seen = particles_seen = 0
            step0 = -(-first // cfg.batch_size)
            if model.scores is not None and epoch == cfg.class_init_epochs > 0 and first == 0:
                from hetfield.model.class_init import initialise_classes

                initialise_classes(model, opt, ds, cfg, device, log, particles=train_particles)
                resp.copy_(torch.softmax(model.scores.scores.detach(), -1))
            consensus = model.scores is not None and epoch < cfg.class_init_epochs
            hold = model.scores is not None and cfg.class_init_epochs > 0 and cfg.class_init_epochs <= epoch < cfg.class_init_epochs + cfg.class_hold_epochs
            for step, batch in enumerate(loader.epoch(epoch, first), start=step0):
                batch = batch.to(device)
                try:
                    with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
                        out = model(
                            batch, beta=beta, std_noise=cfg.std_noise, dose_weight=cfg.dose_weight, tilt_weight=cfg.tilt_weight,
                            dose_mask=cfg.dose_mask, generator=gen, consensus_only=consensus, hold_classes=hold,
                        )
                    opt.zero_grad()
                    out["loss"].backward()
                    opt.step(poses=epoch >= cfg.pose_warmup_epochs)
                except torch.cuda.OutOfMemoryError:
                    raise CudaOutOfMemory(
                        f"CUDA ran out of memory with --batch-size {cfg.batch_size}; retry with --batch-size {max(cfg.batch_size // 2, 1)}"
                    ) from None
                if resp is not None and not consensus:
                    resp.index_copy_(0, batch.particles, out["responsibility"].to(resp.dtype))
                p = batch.n_particles
                sums += torch.stack([out["loss"].detach() * p, out["data"] * p, out["kl"] * p, torch.tensor(p, device=device), torch.tensor(batch.n_images, device=device)]).double()
                images_seen += batch.n_images
                particles_seen += p
                if progress is not None:
                    progress(epoch, step + 1, {"steps": steps, "sums": sums, "images": images_seen, "t0": t0})
                if flag.get("signum"):
                    save_checkpoint(run.resume_path, _state(model, opt, gen, shape, cfg, ds, epoch, step + 1, sums.cpu(), resp))
                    log(f"interrupted by signal {flag['signum']} in epoch {epoch + 1} at step {step + 1}/{steps}; saved {run.resume_path.name}; continue with --load latest")
                    raise Interrupted(flag["signum"], epoch, step + 1)
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
            val = validation_loss(model, ds, cfg, val_particles, device, resp, consensus)
            if val is not None:
                metrics["val_data_loss"] = val
            if resp is not None:
                cls = resp.argmax(1)
                occ = torch.bincount(cls, minlength=shape.n_classes).float() / shape.n_particles
                metrics["class_occupancy"] = [round(float(v), 5) for v in occ.cpu()]
                metrics["mean_max_prob"] = float(resp.max(1).values.mean())
                metrics["consensus_phase"] = consensus
                if prev_classes is not None:
                    metrics["class_change_fraction"] = float((cls != prev_classes).float().mean())
                prev_classes = cls
            metrics = {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in metrics.items()}
            append_line(run.metrics_path, json.dumps(metrics))
            save_now = (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs
            if save_now:
                latents = compute_latents(model, ds, cfg, device, resp, val_particles)
                write_atomic(run.latent_path(epoch + 1), lambda p, d=latents: _savez(p, d))
                save_checkpoint(run.weights_path(epoch + 1), _state(model, opt, gen, shape, cfg, ds, epoch + 1, 0, None, resp))
            run.resume_path.unlink(missing_ok=True)
            sums_resume = None
            occ_txt = f", classes {metrics['class_occupancy']}" if "class_occupancy" in metrics else ""
            log(
                f"epoch {epoch + 1}/{cfg.epochs}: loss {metrics['loss']:.5f} (data {metrics['data_loss']:.5f}, kl {metrics['kl']:.3f}"
                + (f", validation {metrics['val_data_loss']:.5f}" if "val_data_loss" in metrics else "") + "), "
                f"{metrics['images_per_s']:.0f} images/s{occ_txt}" + (f"; saved weights.{epoch + 1}.pt" if save_now else "")
            )
            last_metrics = metrics
    return last_metrics


def _update_config_epochs(run: RunDir, cfg: TrainConfig) -> None:
    """Record resumable changes (e.g. more epochs) in config.yaml."""
    from hetfield.io.atomic import write_yaml_atomic

    data = run.config()
    changed = False
    for k in RESUMABLE_CHANGES:
        if data["train"].get(k) != getattr(cfg, k):
            data["train"][k] = getattr(cfg, k)
            changed = True
    if changed:
        write_yaml_atomic(run.config_path, data)


def _state(model, opt, gen, shape, cfg, ds, epoch: int, step: int, sums, resp) -> dict[str, Any]:
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "step": step,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "generator": gen.get_state(),
        "shape": asdict(shape),
        "train": cfg.to_dict(),
        "dataset_fingerprint": ds.fingerprint,
        "sums": sums,
        "responsibility": None if resp is None else resp.detach().cpu(),
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
    state = load_checkpoint(run.weights_path(e))
    shape = ModelShape(**state["shape"])
    model = Reconstruction(shape)
    model.load_state_dict(state["model"])
    model.to(torch.device(device)).eval()
    return model, config, e
