"""The run directory: the contract between ``train`` and every later step.

```
RUN/config.yaml      resolved settings, versions, command line, seed, dataset fingerprint, run_id
RUN/run.log          human log
RUN/metrics.jsonl    one JSON object per epoch
RUN/weights.N.pt     model + optimiser + RNG state after epoch N (torch.load(weights_only=True))
RUN/latent.N.npz     per-particle latents, class probabilities, refined poses after epoch N
RUN/resume.pt        mid-epoch state written on SIGINT/SIGTERM (removed once the epoch completes)
```
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from hetfield.errors import RunError

CHECKPOINT_FORMAT = 1
_WEIGHTS = re.compile(r"^weights\.(\d+)\.pt$")


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
        except yaml.YAMLError:
            raise RunError(f"{self.config_path}: unreadable YAML") from None
        if not isinstance(data, dict):
            raise RunError(f"{self.config_path}: not a hetfield run configuration")
        return data

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
        for line in self.metrics_path.read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return rows

    def latent(self, epoch: int) -> dict[str, Any]:
        import numpy as np

        path = self.latent_path(epoch)
        if not path.is_file():
            raise RunError(f"{path}: no latent file for epoch {epoch}; available epochs: {self.epochs() or 'none'}")
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def resolve_epoch(self, epoch: int | str | None) -> int:
        """``None``/``"last"`` → the last saved epoch; an int must exist."""
        epochs = self.epochs()
        if not epochs:
            raise RunError(f"{self.path}: no saved epochs yet; train it first")
        if epoch in (None, "last", "latest"):
            return epochs[-1]
        try:
            e = int(epoch)
        except (TypeError, ValueError):
            raise RunError(f"epoch {epoch!r}: give a number, 'last' or 'auto'") from None
        if e not in epochs:
            raise RunError(f"{self.path}: epoch {e} was not saved; saved epochs: {', '.join(map(str, epochs))}")
        return e


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    from hetfield.io.atomic import write_atomic

    write_atomic(path, lambda p: torch.save(state, p))


def load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise RunError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for damaged files
        raise RunError(f"{path}: unreadable checkpoint ({type(err).__name__}); delete it and resume from an earlier epoch") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise RunError(f"{path}: not a hetfield checkpoint of format {CHECKPOINT_FORMAT}")
    return state


def find_checkpoint(run: RunDir, load: str) -> Path:
    """``latest`` → the newest state (a mid-epoch ``resume.pt`` if newer than the last epoch); N → epoch N."""
    if load == "latest":
        last = run.last_epoch()
        if run.resume_path.is_file():
            resume = load_checkpoint(run.resume_path)
            if last is None or resume["epoch"] >= last:
                return run.resume_path
        if last is None:
            raise RunError(f"{run.path}: nothing to resume (no checkpoint yet); start without --load")
        return run.weights_path(last)
    try:
        n = int(load)
    except ValueError:
        raise RunError(f"--load {load!r}: give 'latest' or an epoch number") from None
    path = run.weights_path(n)
    if not path.is_file():
        raise RunError(f"--load {n}: {path} does not exist; saved epochs: {run.epochs() or 'none'}")
    return path
