"""kill -9 at random moments of ``train``: whatever is left is whole, and ``--load latest`` finishes
the run as if it had never been killed (issue 9: every file complete and loadable, each epoch once
in metrics.jsonl)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from hetfield.train.config import TrainConfig
from hetfield.train.loop import train
from hetfield.train.rundir import RunDir, load_checkpoint

from helpers import simulate_and_setup

pytestmark = pytest.mark.slow

# Every phase in a few seconds: a consensus epoch, the EM class start, held-out validation, a
# checkpoint and latent file every epoch.
SETTINGS = dict(zdim=2, n_classes=2, class_init_epochs=1, val_fraction=0.25, epochs=14, batch_size=2, field_hidden=32, field_layers=2,
                enc_hidden=32, enc_embed=16, enc_grid=4, pe_features=16, threads=1, device="cpu")
KILLS = 10


def _args(run, data):
    args = ["train", str(run), "--data", str(data), "--quiet"]
    for key, value in SETTINGS.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return [sys.executable, "-m", "hetfield.cli.app", *args]


def _log_lines(run: RunDir) -> int:
    return len(run.log_path.read_text().splitlines()) if run.log_path.is_file() else 0


def _raw_rows(run: RunDir) -> list[str]:
    return run.metrics_path.read_text().splitlines() if run.metrics_path.is_file() else []


def _wait(proc, condition, timeout: float = 120.0) -> None:
    t0 = time.time()
    while proc.poll() is None and not condition() and time.time() - t0 < timeout:
        time.sleep(0.005)


def _assert_whole(run: RunDir) -> None:
    """Every file a killed train left is complete and loadable."""
    if not run.path.exists():  # killed before it created the directory
        return
    if run.config_path.is_file():
        yaml.safe_load(run.config_path.read_text())
        run.train_settings()
    if run.metrics_path.is_file():
        for line in run.metrics_path.read_text().splitlines():
            json.loads(line)
    for p in run.path.iterdir():
        if p.name.startswith("weights.") or p.name == "resume.pt":
            load_checkpoint(p)
        elif p.name.startswith("latent."):
            run.latent(int(p.name.split(".")[1]))


def test_kill_9_at_random_moments_then_load_latest_finishes_exactly(tmp_path):
    data = simulate_and_setup(tmp_path, "d", n_particles=16, n_classes=2, n_tilts=5, box=24, snr=1.0, seed=4) / "dataset"
    run = RunDir(tmp_path / "run")
    rng = np.random.default_rng(9)
    kills, attempts, moments = 0, 0, []
    while kills < KILLS and attempts < 3 * KILLS:
        attempts += 1
        args = _args(run.path, data) + (["--load", "latest"] if run.path.exists() else [])
        lines, rows = _log_lines(run), len(_raw_rows(run))
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t0 = time.time()
        mode = "anytime" if attempts % 3 == 1 else ("after an epoch" if attempts % 3 == 2 else "after a metrics line")
        if mode == "anytime":  # start-up, lock, config, amplitude profile, first epoch, …
            _wait(proc, lambda: time.time() - t0 > rng.uniform(0.5, 5.0))
        elif mode == "after an epoch":  # 1–3 epochs (or the EM start) later, at a random moment
            more = int(rng.integers(2, 5))
            _wait(proc, lambda: _log_lines(run) >= lines + more)
            t1, delay = time.time(), rng.uniform(0.0, 0.5)
            _wait(proc, lambda: time.time() - t1 > delay)
        else:  # within ~50 ms of an epoch's metrics line: while its latents and weights are written
            _wait(proc, lambda: len(_raw_rows(run)) > rows)
            t1, delay = time.time(), rng.uniform(0.0, 0.05)
            _wait(proc, lambda: time.time() - t1 > delay)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            kills += 1
            tmp = [p.name for p in run.path.iterdir() if p.name.endswith(".tmp")] if run.path.exists() else []
            moments.append(f"{mode}: saved {run.last_epoch()}, rows {len(_raw_rows(run))}, temporaries {len(tmp)}")
        else:
            err = proc.stderr.read()
            assert proc.returncode == 0, err
            if run.epochs() and run.epochs()[-1] == SETTINGS["epochs"]:
                break
        proc.stderr.close()
        _assert_whole(run)
    print(f"\n{kills} kills in {attempts} attempts:\n  " + "\n  ".join(moments))
    assert kills >= KILLS, (kills, moments)

    done = subprocess.run(_args(run.path, data) + ["--load", "latest"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    epochs = list(range(1, SETTINGS["epochs"] + 1))
    assert run.epochs() == epochs
    assert [m["epoch"] for m in run.metrics()] == epochs, moments
    assert not [p.name for p in run.path.iterdir() if p.name.endswith(".tmp")]
    assert not run.resume_path.exists()
    _assert_whole(run)

    # Killed and resumed or not, the same run: bit-for-bit the weights of an uninterrupted one.
    straight = RunDir(tmp_path / "straight")
    train(straight.path, data, TrainConfig(**SETTINGS))
    last = SETTINGS["epochs"]
    a = torch.load(straight.weights_path(last), weights_only=True)["model"]
    b = torch.load(run.weights_path(last), weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [m["loss"] for m in straight.metrics()] == [m["loss"] for m in run.metrics()]
