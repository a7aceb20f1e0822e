"""The run directory before training: settings for a resume, the checks that refuse a request, and
what is written first (config.yaml, run.log).

Everything that can be checked (options, dataset, device, location) is checked before the run
directory is created; :func:`refuse` runs once before the directory is touched (a refused command
leaves no lock file behind) and again under the lock. ``sweep run`` checks its run directories with
:func:`check_same_settings`, the same comparison a resume makes.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from hetfield.errors import ConfigError, DatasetError, RunError, probe_write
from hetfield.io.plain import now
from hetfield.train.config import FIELD_NAMES, TrainConfig, layered_config, load_config_file
from hetfield.train.rundir import LOCK_NAME, RunDir, find_checkpoint, load_checkpoint

# Settings that may change when resuming; everything else must match the run's config.yaml.
# A changed batch size (the pipeline halves it after running out of GPU memory) resumes from the
# same particle of the same epoch order, but is no longer bit-identical to an uninterrupted run.
RESUMABLE_CHANGES = {"epochs", "device", "threads", "checkpoint_every", "amp", "batch_size"}


class RunLog:
    """``run.log``: one time-stamped line per message, echoed unless asked not to."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None):
        self.path, self.echo = path, echo

    def __call__(self, message: str, echo: bool = True) -> None:
        from hetfield.io.atomic import append_line

        append_line(self.path, f"{now()}  {message}")
        if echo and self.echo is not None:
            self.echo(message)


def resume_config(run_path: str | Path, config_file: Path | None, overrides: dict[str, Any]) -> tuple[TrainConfig, dict[str, str]]:
    """Settings for ``--load``: the run's stored settings < ``--config FILE`` < options given.

    Returns the settings and where each value that was given came from (for the message that
    names a setting which may not change on resume). A run without config.yaml (killed before it
    was written) starts from the defaults instead of stored settings.
    """
    run = RunDir(run_path)
    stored: dict[str, Any] = run.train_settings() if run.exists() else {}
    from_file = load_config_file(Path(config_file)) if config_file is not None else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    sources = {**{k: f"--config {config_file}" for k in from_file}, **{k: "the command line" for k in given}}
    return layered_config(stored, config_file, from_file, given), sources


def check_pose_estimation(cfg: TrainConfig, ds, data_path) -> None:
    """The poses ``--pose-estimation`` needs are there."""
    if cfg.pose_estimation in ("fixed", "refine") and not ds.has_poses:
        raise ConfigError(f"--pose-estimation {cfg.pose_estimation}: {data_path} has no poses; use --pose-estimation abinit (input poses ignored)")


def check_location(run: RunDir, load: str | None) -> None:
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
    try:
        probe_write(ancestor, path.name)
    except OSError:
        raise RunError(f"{path}: cannot write there: no write permission in {ancestor}; choose another location or fix its permissions") from None


def changed_settings(run: RunDir, cfg: TrainConfig, sources: dict[str, str] | None = None) -> list[str]:
    """The settings of ``cfg`` that differ from the run's stored ones and may not change on resume,
    each as ``name (stored → given[ from where])``."""
    stored = run.train_settings()
    differ = [k for k in FIELD_NAMES if k not in RESUMABLE_CHANGES and stored[k] != getattr(cfg, k)]

    def one(k: str) -> str:
        src = f" from {sources[k]}" if sources and k in sources else ""
        return f"{k} ({stored[k]!r} → {getattr(cfg, k)!r}{src})"

    return [one(k) for k in differ]


def check_same_settings(run_dir: str | Path, cfg: TrainConfig, force: bool = False) -> None:
    """``sweep run``: a run directory that already holds a run must hold the one ``cfg`` describes."""
    run = RunDir(run_dir)
    if force or not run.exists():
        return
    differ = changed_settings(run, cfg)
    if differ:
        raise ConfigError(f"{run.path} was trained with other settings ({', '.join(differ)}) than the plan gives; use another --out, or --force to train it again")


def _check_resumable(run: RunDir, cfg: TrainConfig, ds, sources: dict[str, str] | None) -> None:
    differ = changed_settings(run, cfg, sources)
    if differ:
        raise ConfigError(
            f"--load: {', '.join(differ)} differ from the run being resumed; only "
            f"{', '.join(sorted(RESUMABLE_CHANGES))} may change: drop the others, or train a new run (another directory, or --force to start this one over)"
        )
    if run.dataset_fingerprint() != ds.fingerprint:
        raise DatasetError(f"--load: {run.path} was trained on another dataset (fingerprint differs); resume it with its own --data")


def refuse(run: RunDir, cfg: TrainConfig, ds, load: str | None, force: bool, sources) -> None:
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


def prepare_run(run: RunDir, cfg: TrainConfig, ds, load: str | None, force: bool, sources) -> tuple[dict | None, Path | None, str | None]:
    """Check the run directory against the request: ``(state to resume, its path, a note)``; None
    state: start (a new run, one started over with --force, or an unstarted one)."""
    refuse(run, cfg, ds, load, force, sources)
    if load is None:
        if run.started():
            clear_run(run, keep_log=False)
            return None, None, "started over (--force)"
        unstarted = run.exists()
        clear_run(run, keep_log=True)
        return None, None, ("restarted: the run had no checkpoint yet" if unstarted else None)
    if not run.started():
        clear_run(run, keep_log=True)
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


def clear_run(run: RunDir, keep_log: bool) -> None:
    import shutil

    for p in run.path.iterdir():
        if p.name == LOCK_NAME or (keep_log and p.name == "run.log"):
            continue
        if p.name in ("config.yaml", "run.log", "metrics.jsonl", "resume.pt", "convergence") or p.name.startswith(("weights.", "latent.", "analysis.")):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def remove_if_empty(run: RunDir) -> None:
    """A run directory this process created and left with nothing but its lock goes again."""
    try:
        entries = [p.name for p in run.path.iterdir()]
        if set(entries) <= {LOCK_NAME}:
            (run.path / LOCK_NAME).unlink(missing_ok=True)
            run.path.rmdir()
    except OSError:
        pass


def write_config(run: RunDir, cfg: TrainConfig, shape, ds, device, command: str | None, precision: str = "fp32") -> None:
    import torch

    from hetfield import __version__
    from hetfield.io.atomic import write_yaml_atomic

    write_yaml_atomic(
        run.config_path,
        {
            "run_id": run.path.resolve().name,
            "hetfield_version": __version__,
            "torch_version": str(torch.__version__),
            "created": now(),
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
            "precision": precision,
        },
    )


def update_config_epochs(run: RunDir, cfg: TrainConfig, precision: str | None = None) -> None:
    """Record resumable changes (e.g. more epochs, the precision used now) in config.yaml."""
    from hetfield.io.atomic import write_yaml_atomic

    if not run.config_path.is_file():
        return
    data = run.config()
    changed = False
    for k in RESUMABLE_CHANGES:
        if data["train"].get(k) != getattr(cfg, k):
            data["train"][k] = getattr(cfg, k)
            changed = True
    if precision is not None and data.get("precision") != precision:
        data["precision"] = precision
        changed = True
    if changed:
        write_yaml_atomic(run.config_path, data)
