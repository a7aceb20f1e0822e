"""The run directory: the contract between ``train`` and every later step.

```
RUN/config.yaml      resolved settings, versions, command line, seed, dataset fingerprint, run_id
RUN/run.log          human log
RUN/metrics.jsonl    one JSON object per epoch
RUN/weights.N.pt     model + optimiser + RNG state after epoch N (torch.load(weights_only=True))
RUN/latent.N.npz     per-particle latents, class probabilities, refined poses after epoch N
RUN/resume.pt        state written on SIGINT/SIGTERM between checkpoints (removed once an epoch completes)
RUN/.lock            held by the one ``train`` writing the run (flock: released when it dies)
```

Order of an epoch's files: the metrics line, then ``latent.N.npz``, then ``weights.N.pt`` (an
epoch exists once both are there). A kill can therefore leave metrics rows after the last
checkpoint, never a checkpoint without its row; resuming from epoch N drops the rows after N
(:meth:`RunDir.keep_metrics_through`) before training them again, so each epoch appears once.
A run with no checkpoint and no ``resume.pt`` is *unstarted* (killed before its first save): it
simply starts again.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from hetfield.errors import RunError

CHECKPOINT_FORMAT = 1
LOCK_NAME = ".lock"
_WEIGHTS = re.compile(r"^weights\.(\d+)\.pt$")
_OURS = re.compile(r"^(config\.yaml|run\.log|metrics\.jsonl|resume\.pt|\.lock|weights\.\d+\.pt|latent\.\d+\.npz)$")
_DAMAGED = "restore it, or start the run over with --force"


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # -- paths ------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def log_path(self) -> Path:
        return self.path / "run.log"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def resume_path(self) -> Path:
        return self.path / "resume.pt"

    def weights_path(self, epoch: int) -> Path:
        return self.path / f"weights.{epoch}.pt"

    def latent_path(self, epoch: int) -> Path:
        return self.path / f"latent.{epoch}.npz"

    @property
    def run_id(self) -> str:
        cfg = self.config(required=False)
        return str(cfg.get("run_id")) if cfg and cfg.get("run_id") else self.path.resolve().name

    # -- contents ---------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.config_path.is_file()

    def config(self, required: bool = True) -> dict[str, Any]:
        import yaml

        if not self.config_path.is_file():
            if required:
                raise RunError(f"{self.path}: not a hetfield run (no config.yaml); train one with `hetfield train {self.path} --data …`")
            return {}
        try:
            data = yaml.safe_load(self.config_path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError):
            raise RunError(f"{self.config_path}: unreadable YAML; {_DAMAGED}") from None
        if not isinstance(data, dict):
            raise RunError(f"{self.config_path}: not a hetfield run configuration (expected a mapping); {_DAMAGED}")
        return data

    def train_settings(self) -> dict[str, Any]:
        """The stored training settings, checked: every option present, of the right type."""
        from hetfield.errors import ConfigError
        from hetfield.train.config import FIELD_NAMES, TrainConfig

        from hetfield.train.config import PREDATED

        data = self.config()
        train = data.get("train")
        if not isinstance(train, dict):
            raise RunError(f"{self.config_path}: no 'train' settings; {_DAMAGED}")
        predates = [k for k in PREDATED if k not in train]
        if "latent_start" in predates and train.get("beta") is None and isinstance(data.get("beta_effective"), (int, float)):
            # Its default beta (None) meant 1/zdim then, recorded as beta_effective.
            train = {**train, "beta": float(data["beta_effective"])}
        # Written before these options existed: the run was trained as their PREDATED values say.
        train = {**{k: PREDATED[k] for k in predates}, **train}
        missing = [k for k in FIELD_NAMES if k not in train]
        unknown = sorted(set(map(str, train)) - set(FIELD_NAMES))
        if missing or unknown:
            what = "; ".join(x for x in (f"missing train.{', train.'.join(missing)}" if missing else "", f"unknown train.{', train.'.join(unknown)}" if unknown else "") if x)
            raise RunError(f"{self.config_path}: {what}; {_DAMAGED}")
        try:
            TrainConfig(**train).validate(where=str(self.config_path))
        except ConfigError as err:
            raise RunError(f"{err}; {_DAMAGED}") from None
        train = dict(train)
        if "precision" not in data and train["amp"] is True:
            # Written before amp had an "auto": true was the default and meant bf16 on GPU only.
            train["amp"] = "auto"
        return train

    def dataset_fingerprint(self) -> str:
        dataset = self.config().get("dataset")
        fingerprint = dataset.get("fingerprint") if isinstance(dataset, dict) else None
        if not isinstance(fingerprint, str) or not fingerprint:
            raise RunError(f"{self.config_path}: no dataset.fingerprint; {_DAMAGED}")
        return fingerprint

    def started(self) -> bool:
        """A checkpoint or ``resume.pt`` exists: there is trained state to lose or resume."""
        return bool(self.epochs()) or self.resume_path.is_file()

    def foreign_entries(self) -> list[Path]:
        """Entries that no ``train`` writes (the user's own files): never ours to delete or overwrite."""
        if not self.path.is_dir():
            return []
        return sorted(p for p in self.path.iterdir() if not _OURS.match(p.name) and not p.name.startswith(("analysis.", "convergence")))

    def keep_metrics_through(self, epoch: int) -> int:
        """Rewrite metrics.jsonl with the rows of epochs ``1..epoch`` only (once each); return how
        many rows were dropped (rows of epochs trained after the state being resumed, or repeats)."""
        from hetfield.io.atomic import write_text_atomic

        if not self.metrics_path.is_file():
            return 0
        lines = [line for line in self.metrics_path.read_text(errors="replace").splitlines() if line.strip()]
        kept, seen = [], set()
        for line in lines:
            try:
                row = json.loads(line)
                e = int(row["epoch"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a torn line of a killed writer
            if e <= epoch and e not in seen:
                seen.add(e)
                kept.append(line)
        if len(kept) != len(lines):
            write_text_atomic(self.metrics_path, "".join(f"{line}\n" for line in kept))
        return len(lines) - len(kept)

    def epochs(self) -> list[int]:
        """Epochs with a saved checkpoint *and* latent file, ascending."""
        if not self.path.is_dir():
            return []
        found = []
        for p in self.path.iterdir():
            m = _WEIGHTS.match(p.name)
            if m and self.latent_path(int(m.group(1))).is_file():
                found.append(int(m.group(1)))
        return sorted(found)

    def last_epoch(self) -> int | None:
        e = self.epochs()
        return e[-1] if e else None

    def metrics(self) -> list[dict[str, Any]]:
        """Per-epoch metrics; a torn last line (a killed writer) is ignored."""
        if not self.metrics_path.is_file():
            return []
        rows = []
        for line in self.metrics_path.read_text(errors="replace").splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def latent(self, epoch: int) -> dict[str, Any]:
        import zipfile

        import numpy as np

        path = self.latent_path(epoch)
        if not path.is_file():
            raise RunError(f"{path}: no latent file for epoch {epoch}; available epochs: {self.epochs() or 'none'}")
        damaged = f"{path}: damaged latent file"
        todo = f"delete it and weights.{epoch}.pt, then resume the run with --load latest to train the epoch again"
        try:
            with np.load(path, allow_pickle=False) as npz:
                out = {k: npz[k] for k in npz.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as err:  # ValueError: pickled object arrays
            raise RunError(f"{damaged} ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else 'truncated'}); {todo}") from None
        rows = {k: v.shape[0] for k, v in out.items() if k in ("z_mu", "z_logvar", "class_probs", "class_idx", "held_out") and v.ndim >= 1}
        if "class_probs" not in out or len(set(rows.values())) > 1 or any(v.dtype == object for v in out.values()):
            raise RunError(f"{damaged} (arrays missing or of inconsistent shapes: {rows}); {todo}")
        return out

    def resolve_epoch(self, epoch: int | str | None, option: str = "--epoch") -> int:
        """``None``/``"last"``/``"latest"`` → the last saved epoch; a number must be a saved epoch
        (a :class:`RunError` naming ``option`` and the saved epochs otherwise)."""
        saved = self.epochs()
        if not saved:
            raise RunError(f"{self.path}: no saved epochs yet; train it first")
        if epoch is None or str(epoch).lower() in ("last", "latest"):
            return saved[-1]
        listed = ", ".join(map(str, saved))
        try:
            e = int(epoch)
        except (TypeError, ValueError):
            raise RunError(f"{option} {epoch!r}: give a saved epoch number ({listed}) or 'last'") from None
        if e not in saved:
            raise RunError(f"{option} {e}: not saved in {self.path} (saved epochs: {listed}); give one of them or 'last'")
        return e


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    from hetfield.io.atomic import write_atomic

    write_atomic(path, lambda p: torch.save(state, p))


_STATE_KEYS = {"epoch": int, "model": dict, "optimizer": dict, "train": dict, "shape": dict}


def load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise RunError(f"{path}: no such checkpoint")
    what = "delete it to resume from the last epoch" if path.name == "resume.pt" else "delete it (and its latent file) and resume from an earlier epoch"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged files
        raise RunError(f"{path}: unreadable checkpoint ({type(err).__name__}, a truncated or damaged file); {what}") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path}: not a hetfield checkpoint of format {CHECKPOINT_FORMAT}; {what}")
    bad = [k for k, t in _STATE_KEYS.items() if not isinstance(state.get(k), t) or isinstance(state.get(k), bool)]
    if bad or state["epoch"] < 0:
        raise RunError(f"{path}: damaged checkpoint (missing or malformed {', '.join(bad) or 'epoch'}); {what}")
    return state


def find_checkpoint(run: RunDir, load: str) -> Path | None:
    """``latest`` → the newest state (``resume.pt`` if newer than the last epoch), or None for an
    unstarted run; N → epoch N."""
    if load == "latest":
        last = run.last_epoch()
        if run.resume_path.is_file():
            resume = load_checkpoint(run.resume_path)
            if last is None or resume["epoch"] >= last:
                return run.resume_path
        return None if last is None else run.weights_path(last)
    try:
        n = int(load)
    except ValueError:
        raise RunError(f"--load {load!r}: give 'latest' or an epoch number") from None
    if n not in run.epochs():
        raise RunError(f"--load {n}: epoch {n} was not saved in {run.path}; saved epochs: {', '.join(map(str, run.epochs())) or 'none'}; give one of them, or --load latest")
    return run.weights_path(n)
