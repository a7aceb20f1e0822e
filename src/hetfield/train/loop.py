"""The training loop: epochs over batches of whole particles, checkpoints, exact resume, signals.

Exactness: the particle order of epoch ``e`` is drawn from ``(seed, e)``, the latent noise from a
dedicated CPU generator whose state is checkpointed (a CPU generator so that the state resumes on
any device; its draws are moved to the training device), and an interrupt records where it stopped,
so ``--load latest`` continues with exactly the batches, noise and optimiser state an uninterrupted
run would have used (bit-for-bit on CPU with the same thread count).

Signals: SIGINT/SIGTERM set a flag that every phase checks at least once per batch (training
steps, the starts, validation, the latent pass) or EM iteration. The trainer then saves the newest
resumable state (that at the start of the interrupted phase, exact since phases change nothing
until they finish) and raises :class:`~hetfield.errors.Interrupted` (exit 128 + signal).

One ``train`` at a time writes a run (``RUN/.lock``); options, dataset, device and location are
checked before the run directory is created (:mod:`.prepare`).

Beside it: :mod:`.devices`, :mod:`.signals`, :mod:`.prepare` (the run directory before training),
:mod:`.factory` (the model and its data-driven starts), :mod:`.class_start` (a mixture's EM start),
:mod:`.class_decoding`, :mod:`.abinit`, :mod:`.validation`, :mod:`.export` (latents), :mod:`.load`
(checkpoints), :mod:`.distributed` (data-parallel under torchrun, as one process computes).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Callable

from hetfield.errors import ConfigError, CudaOutOfMemory, Interrupted, RunError
from hetfield.train.class_decoding import ClassDecoding
from hetfield.train.config import TrainConfig
from hetfield.train.distributed import Distributed
from hetfield.train.devices import autocast, resolve_device, resolve_precision, set_up_torch, to_device
from hetfield.train.export import compute_latents, write_latents
from hetfield.train.factory import amplitude_profile, build_model, data_driven_start
from hetfield.train.load import restore, training_state
from hetfield.train.optim import Optimizers
from hetfield.train.prepare import RunLog, check_location, check_pose_estimation, prepare_run, refuse, remove_if_empty, update_config_epochs, write_config
from hetfield.train.rundir import LOCK_NAME, RunDir, load_checkpoint, save_checkpoint
from hetfield.train.signals import StopRequested, before_training, signal_name, signals_to_flag, stop_check
from hetfield.train.validation import split_validation, validation_loss

__all__ = ["train"]


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
    dd = Distributed.from_env()  # torchrun: data-parallel (train.distributed)
    with signals_to_flag(flag), contextlib.ExitStack() as ranks:
        # Everything that can be checked is checked before the run directory is created.
        cfg.validate()
        ds = Dataset.open(data_path)
        ds.check_fresh()
        check_pose_estimation(cfg, ds, data_path)
        device = resolve_device(dd.device_name(cfg.device))
        resolve_precision(cfg.amp, device)  # a GPU without bf16 refuses --amp before anything is written
        dd.start(device)
        ranks.callback(dd.close)
        run = RunDir(run_path)
        check_location(run, load)
        refuse(run, cfg, ds, load, force, sources)
        dd.barrier()  # every rank has checked the directory before rank 0 changes it
        if not dd.is_main:  # the other ranks read what rank 0 prepares and write nothing
            return _train_locked(run, ds, data_path, cfg, device, load, force, command, None, None, sources, flag, dd)
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
                    remove_if_empty(run)
                raise RunError(f"{run.path / LOCK_NAME}: cannot lock the run directory ({err.strerror}); train on a local or lock-capable filesystem") from None
            try:
                if flag.get("signum"):
                    name = signal_name(flag["signum"])
                    raise Interrupted(f"stopped by {name} before training started; nothing was changed in {run.path}", flag["signum"])
                remove_stale_temporaries(run.path)
                return _train_locked(run, ds, data_path, cfg, device, load, force, command, echo, progress, sources, flag, dd)
            except OSError as err:  # a full disk, a permission changed under us
                if created:
                    remove_if_empty(run)
                where = err.filename or run.path
                raise RunError(f"{where}: {err.strerror or err}; fix it (disk space, permissions) and continue with --load latest") from None
            except BaseException:
                if created:
                    remove_if_empty(run)
                raise


def _train_locked(run: RunDir, ds, data_path, cfg: TrainConfig, device, load, force, command, echo, progress, sources, flag: dict, dd: Distributed) -> dict[str, Any]:
    import numpy as np
    import torch

    from hetfield.data.batching import ParticleBatches
    from hetfield.io.atomic import append_line, write_atomic
    from hetfield.train.abinit import PoseSchedule

    state, state_path, note = prepare_run(run, cfg, ds, load, force, sources) if dd.is_main else (None, None, None)
    shared_path = dd.broadcast_text(str(state_path or ""))  # waits for rank 0's preparation
    if not dd.is_main and shared_path:
        state, state_path = load_checkpoint(Path(shared_path)), Path(shared_path)
    log = RunLog(run.log_path, echo) if dd.is_main else (lambda *args, **kwargs: None)
    continue_hint = f"continue with: hetfield train {run.path} --data {data_path} --load latest"
    # Under torchrun the ranks stop together at the loop's own checks (phase checks do nothing).
    check = stop_check(flag) if not dd.enabled else (lambda: None)

    def step_check() -> None:
        agreed = dd.agreed_signal(flag) if dd.enabled else 0
        if agreed:
            flag.setdefault("signum", agreed)
        stop_check(flag)()

    set_up_torch(device, cfg.threads, cfg.seed)
    model, shape = build_model(ds, cfg)
    precision = resolve_precision(cfg.amp, device)
    if state is None:
        if dd.is_main:
            write_config(run, cfg, shape, ds, device, command, precision)
        log(
            f"new run {run.run_id}" + (f" ({note})" if note else "")
            + f": dataset {ds.path} ({ds.n_particles} particles, {ds.n_images} images, box {ds.box}), device {device}, precision {precision}"
            + (f", {dd.world_size} processes (torchrun)" if dd.enabled else "")
        )
        before_training(lambda: model.amplitude.copy_(amplitude_profile(model, ds, cfg, check=check)), flag, log)
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
    moved = None  # share of particles whose class the last epoch changed (train.class_decoding)
    # Latest class posterior of every particle (K > 1), refreshed as its batch is trained.
    resp = torch.full((ds.n_particles, cfg.n_classes), 1.0 / cfg.n_classes, device=device) if cfg.n_classes > 1 else None
    if state is not None:
        start_epoch, sums_resume, prev_classes, moved = restore(state, state_path, model, opt, gen, resp, ds, cfg, device, log)
        start_particle = int(sums_resume[3]) if sums_resume is not None else 0
        if state["train"].get("batch_size", cfg.batch_size) != cfg.batch_size:
            log(f"batch size {state['train']['batch_size']} → {cfg.batch_size}: continuing from the same particle, not bit-identical to an uninterrupted run")
        dropped = run.keep_metrics_through(start_epoch) if dd.is_main else 0
        log(
            f"resumed after epoch {start_epoch}" + (f" + {start_particle} particles" if start_particle else "") + f" ({'latest' if load == 'latest' else load})"
            + (f"; dropped {dropped} metrics row(s) of epochs after {start_epoch}, trained again now" if dropped else "")
            + f"; device {device}, precision {precision}"
        )
        if dd.is_main:
            update_config_epochs(run, cfg, precision)

    # Autodecoder latents exist only for trained particles: nothing is held out for them.
    fraction = 0.0 if cfg.effective_conf_estimation == "autodecoder" else cfg.val_fraction
    train_particles, val_particles = split_validation(ds.n_particles, fraction, cfg.seed)
    if state is None and len(val_particles):
        log(f"holding out {len(val_particles)} of {ds.n_particles} particles to measure the validation loss")
    if state is None:
        before_training(lambda: data_driven_start(model, ds, cfg, device, train_particles, log, check, dd.broadcast_), flag, log)
    loader = ParticleBatches(ds, model.points, cfg.batch_size, seed=cfg.seed, particles=train_particles, dose_mask=cfg.dose_mask)
    beta = cfg.effective_beta
    pose_schedule = PoseSchedule(model, ds, cfg, device, log, val_particles, dd)  # --pose-estimation abinit (else no-ops)
    last_metrics: dict[str, Any] = {}
    steps = len(loader)
    if start_epoch >= cfg.epochs:
        log(f"nothing to do: {start_epoch} epochs done, --epochs {cfg.epochs}")
        return {}

    # Where a stop would resume: (epoch, sums, classes of the previous epoch and the share it changed)
    # matching the model as it is now, or the number of the epoch whose checkpoint was just written.
    resume_at: tuple | int | None = None

    def stop() -> Interrupted:
        signum = flag["signum"]
        name = signal_name(signum)
        if isinstance(resume_at, int):
            done = resume_at == cfg.epochs
            where = f"after epoch {resume_at}/{cfg.epochs} (saved weights.{resume_at}.pt)"
            message = f"stopped by {name} {where}; " + ("the run is complete" if done else continue_hint)
        elif resume_at is None:  # not reached: every check follows a resumable point
            message = f"stopped by {name}; {continue_hint} (from the last checkpoint)"
        else:
            epoch, sums_at, classes_at, moved_at = resume_at
            sums_at = dd.all_sum(sums_at)
            pose_schedule.share()  # torchrun, abinit: the poses the other ranks searched this epoch
            if dd.is_main:
                save_checkpoint(run.resume_path, training_state(model, opt, gen, shape, cfg, ds, epoch, sums_at, resp, classes_at, moved_at))
            particles_done = int(sums_at[3])
            where = f"in epoch {epoch + 1}/{cfg.epochs} after {particles_done} of {len(train_particles)} particles" if particles_done else f"at the start of epoch {epoch + 1}/{cfg.epochs}"
            message = f"stopped by {name} {where}; saved {run.resume_path}; {continue_hint}"
        log(message, echo=False)  # the caller reports it (the CLI: one line on stderr)
        return Interrupted(message, signum)

    net = dd.wrap(model, device)  # the networks in DDP under torchrun; the model itself otherwise
    model.train()
    try:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            sums = torch.zeros(5, dtype=torch.float64, device=device)  # loss·P, data·P, kl·P, P, images
            if sums_resume is not None and epoch == start_epoch:
                sums += sums_resume.to(device)
            first = start_particle if epoch == start_epoch else 0
            # ``sums`` is live: at every check it counts exactly the steps the model has taken.
            resume_at = (epoch, sums, prev_classes, moved)
            step_check()
            images_seen = particles_seen = 0
            step0 = -(-first // cfg.batch_size)
            if model.scores is not None and epoch == cfg.effective_class_init_epochs > 0 and first == 0:
                from hetfield.train.class_start import initialise_classes

                # Stops inside resume at the epoch start: the model changes only once EM is done.
                initialise_classes(model, opt, ds, cfg, device, log, particles=train_particles, check=check)
                dd.broadcast_(model.scores.scores.data)  # every rank ran the same EM: keep rank 0's bits
                resp.copy_(torch.softmax(model.scores.scores.detach(), -1))
                resume_at = None  # no resumable state until the first step is done (nothing checks here)
            pose_schedule.start_epoch(epoch, first, resp)
            init = cfg.effective_class_init_epochs
            consensus = model.scores is not None and epoch < init
            hold = model.scores is not None and init <= epoch < cfg.class_hold_end
            decoding = ClassDecoding.for_epoch(cfg, epoch, resp, moved)  # sparse class decoding; None: every class
            chunks = dd.shares(loader, epoch, first) if dd.enabled else ((None, b, 1.0) for b in loader.epoch(epoch, first))
            for step, (shares, batch, scale) in enumerate(chunks, start=step0):
                selection = decoding.select(batch) if decoding is not None else None
                batch = to_device(batch, device)
                pose_schedule(batch)  # abinit: the batch's poses searched against the fields just before its step
                noise, p, n_images = None, batch.n_particles, batch.n_images
                if dd.enabled:  # the chunk's noise from the one generator, this rank's rows (train.distributed)
                    eps = torch.randn((sum(map(len, shares)), shape.zdim), generator=gen) if model.encoder is not None else None
                    if not len(shares[dd.rank]):
                        p = n_images = 0
                    noise = None if eps is None else (eps[dd.rank :: dd.world_size] if p else eps[:1] * 0)
                with autocast(device, precision):
                    out = net(
                        batch, beta=beta, std_noise=cfg.std_noise, dose_weight=cfg.dose_weight, tilt_weight=cfg.tilt_weight,
                        dose_mask=cfg.dose_mask, generator=gen, consensus_only=consensus, hold_classes=hold, noise=noise,
                        classes=selection,
                    )
                opt.zero_grad()
                (out["loss"] * scale if dd.enabled else out["loss"]).backward()
                if dd.enabled:
                    dd.sync_table_grads(model, shares, loader)
                opt.step(poses=epoch >= cfg.effective_pose_warmup_epochs)
                if resp is not None and not consensus:
                    if dd.enabled:
                        dd.gather_responsibility(resp, shares, out["responsibility"])
                    else:
                        resp.index_copy_(0, batch.particles, out["responsibility"].to(resp.dtype))
                # Counts as Python numbers: a tensor built from them per step would be a host-to-device copy.
                sums[:3] += torch.stack([out["loss"].detach() * p, out["data"] * p, out["kl"] * p]).double()
                sums[3] += p
                sums[4] += n_images
                images_seen += n_images
                particles_seen += p
                resume_at = (epoch, sums, prev_classes, moved)
                if progress is not None:
                    progress(epoch, step + 1, {"steps": steps, "sums": sums, "images": images_seen, "t0": t0})
                step_check()
            seconds = time.perf_counter() - t0
            s = dd.all_sum(sums).cpu().numpy()
            if dd.enabled:
                images_seen, particles_seen = (int(v) for v in dd.all_sum(torch.tensor([images_seen, particles_seen], device=device)).cpu())
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
                "world_size": dd.world_size,
            }
            with autocast(device, precision):
                val = validation_loss(model, ds, cfg, val_particles, device, resp, consensus, check=check)
            if val is not None:
                metrics["val_data_loss"] = val
            metrics.update(pose_schedule.end_epoch())
            classes = None
            if resp is not None:
                classes = resp.argmax(1)
                occ = torch.bincount(classes, minlength=shape.n_classes).float() / shape.n_particles
                metrics["class_occupancy"] = [round(float(v), 5) for v in occ.cpu()]
                metrics["mean_max_prob"] = float(resp.max(1).values.mean())
                metrics["consensus_phase"] = consensus
                metrics["class_decode_fraction"] = 1.0 if decoding is None else decoding.decoded_fraction
                if prev_classes is not None:
                    metrics["class_change_fraction"] = float((classes != prev_classes.to(classes.device)).float().mean())
                classes = classes.cpu()
            metrics = {k: (float(v) if isinstance(v, (np.floating, np.integer)) else v) for k, v in metrics.items()}
            # The metrics line first, then the checkpoint: a kill in between leaves a row that the
            # resumed run drops (keep_metrics_through) and writes again — never a checkpoint without its row.
            save_now = (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs
            if dd.is_main:  # every rank holds the same model, tables and posteriors: rank 0 writes them
                append_line(run.metrics_path, json.dumps(metrics))
                if save_now:
                    latents = compute_latents(model, ds, cfg, device, resp, val_particles, check=check)
                    write_atomic(run.latent_path(epoch + 1), lambda p, d=latents: write_latents(p, d))
                    save_checkpoint(run.weights_path(epoch + 1), training_state(model, opt, gen, shape, cfg, ds, epoch + 1, None, resp, classes, metrics.get("class_change_fraction")))
                run.resume_path.unlink(missing_ok=True)
            prev_classes, moved = classes, metrics.get("class_change_fraction")
            resume_at = epoch + 1 if save_now else (epoch + 1, torch.zeros(5, dtype=torch.float64), classes, moved)
            sums_resume = None
            occ_txt = f", classes {metrics['class_occupancy']}" if "class_occupancy" in metrics else ""
            log(
                f"epoch {epoch + 1}/{cfg.epochs}: loss {metrics['loss']:.5f} (data {metrics['data_loss']:.5f}, kl {metrics['kl']:.3f}"
                + (f", validation {metrics['val_data_loss']:.5f}" if "val_data_loss" in metrics else "") + "), "
                f"{metrics['images_per_s']:.0f} images/s{occ_txt}" + (f"; saved weights.{epoch + 1}.pt" if save_now else "")
            )
            last_metrics = metrics
            step_check()
    except StopRequested:
        raise stop() from None
    except torch.cuda.OutOfMemoryError:
        raise CudaOutOfMemory(
            f"CUDA ran out of memory with --batch-size {cfg.batch_size}; retry with --batch-size {max(cfg.batch_size // 2, 1)} (and --load latest)"
        ) from None
    return last_metrics
