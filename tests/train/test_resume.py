"""Checkpoints, interrupts and exact resume."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
import torch

from hetfield.errors import RunError
from hetfield.train.config import TrainConfig
from hetfield.train.loop import Interrupted, train
from hetfield.train.rundir import RunDir

from helpers import run_cli, simulate_and_setup

TINY = dict(zdim=2, epochs=3, batch_size=3, field_hidden=32, field_layers=2, enc_hidden=32, enc_embed=16, enc_grid=4, pe_features=16, threads=1, device="cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return simulate_and_setup(tmp_path_factory.mktemp("tiny"), "d", n_particles=16, n_classes=2, n_tilts=5, box=24, snr=1.0, seed=4) / "dataset"


def _assert_same_run(a: RunDir, b: RunDir, epoch: int) -> None:
    sa = torch.load(a.weights_path(epoch), weights_only=True)
    sb = torch.load(b.weights_path(epoch), weights_only=True)
    for name, tensor in sa["model"].items():
        assert torch.equal(tensor, sb["model"][name]), name
    assert sa["optimizer"].keys() == sb["optimizer"].keys()
    for name, opt_a in sa["optimizer"].items():
        if opt_a is None:
            assert sb["optimizer"][name] is None
            continue
        for group_a, group_b in zip(opt_a["state"].values(), sb["optimizer"][name]["state"].values()):
            for key in group_a:
                assert torch.equal(torch.as_tensor(group_a[key]), torch.as_tensor(group_b[key]))
    la, lb = a.latent(epoch), b.latent(epoch)
    assert la.keys() == lb.keys()
    for key in la:
        assert np.array_equal(la[key], lb[key]), key
    ma, mb = a.metrics(), b.metrics()
    assert [m["loss"] for m in ma] == [m["loss"] for m in mb]


@pytest.mark.parametrize("n_classes", [1, 2])
def test_interrupt_then_load_latest_continues_bit_for_bit(tiny, tmp_path, n_classes):
    cfg = TrainConfig(n_classes=n_classes, **TINY)
    train(tmp_path / "straight", tiny, cfg)

    def interrupt(epoch, step, info):
        if epoch == 1 and step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # handled between steps: checkpoint, then stop

    with pytest.raises(Interrupted) as stop:
        train(tmp_path / "resumed", tiny, cfg, progress=interrupt)
    assert stop.value.signum == signal.SIGINT
    run = RunDir(tmp_path / "resumed")
    assert run.resume_path.is_file() and run.epochs() == [1]
    train(tmp_path / "resumed", tiny, cfg, load="latest")
    assert not run.resume_path.exists()
    _assert_same_run(RunDir(tmp_path / "straight"), run, 3)


def test_resume_from_an_epoch_and_extend(tiny, tmp_path):
    cfg = TrainConfig(**TINY)
    train(tmp_path / "straight", tiny, cfg)
    short = TrainConfig(**{**TINY, "epochs": 1})
    train(tmp_path / "extended", tiny, short)
    train(tmp_path / "extended", tiny, cfg, load="1")
    _assert_same_run(RunDir(tmp_path / "straight"), RunDir(tmp_path / "extended"), 3)
    assert RunDir(tmp_path / "extended").config()["train"]["epochs"] == 3


def test_checkpoints_are_plain_tensors_and_writes_are_whole(tiny, tmp_path):
    train(tmp_path / "run", tiny, TrainConfig(**TINY))
    run = RunDir(tmp_path / "run")
    assert run.epochs() == [1, 2, 3]
    state = torch.load(run.weights_path(3), weights_only=True)  # no pickled classes
    assert state["epoch"] == 3 and state["dataset_fingerprint"]
    with np.load(run.latent_path(3), allow_pickle=False) as z:
        assert z["z_mu"].shape == (16, 2) and np.isfinite(z["z_mu"]).all()
    assert not [p for p in run.path.iterdir() if p.name.endswith(".tmp")]
    assert len(run.metrics()) == 3
    assert "epoch 3/3" in run.log_path.read_text()


def test_a_run_directory_is_not_overwritten(tiny, tmp_path):
    cfg = TrainConfig(**{**TINY, "epochs": 1})
    train(tmp_path / "run", tiny, cfg)
    with pytest.raises(RunError, match="--load latest"):
        train(tmp_path / "run", tiny, cfg)
    train(tmp_path / "run", tiny, cfg, force=True)
    assert RunDir(tmp_path / "run").epochs() == [1]


def test_sigterm_from_outside_saves_and_exits(tiny, tmp_path):
    """The CLI under a scheduler's SIGTERM: checkpoint, exit 128+15, then --load latest finishes."""
    import subprocess
    import sys

    args = ["train", tmp_path / "run", "--data", tiny, "--zdim", "2", "--epochs", "60", "--batch-size", "1",
            "--field-hidden", "32", "--enc-hidden", "32", "--threads", "1", "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "hetfield.cli.app", *map(str, args)], stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.is_file() and metrics.read_text().strip()) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "--load latest" in err
    run = RunDir(tmp_path / "run")
    assert run.resume_path.is_file() or run.epochs()
    done = run_cli("train", tmp_path / "run", "--data", tiny, "--load", "latest", "--epochs", str(len(run.metrics()) + 1), "--quiet")
    assert done.returncode == 0, done.stderr
