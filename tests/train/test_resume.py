"""Checkpoints, interrupts and exact resume."""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np
import pytest
import torch

from hetfield.errors import Interrupted, RunError
from hetfield.train.config import TrainConfig
from hetfield.train.loop import train
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
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err  # one line: what happened, how to go on
    assert "stopped by SIGTERM" in err and "--load latest" in err
    run = RunDir(tmp_path / "run")
    assert run.resume_path.is_file() or run.epochs()
    done = run_cli("train", tmp_path / "run", "--data", tiny, "--load", "latest", "--epochs", str(len(run.metrics()) + 1), "--quiet")
    assert done.returncode == 0, done.stderr


# -- signals in every phase (issue 9, item 5) -----------------------------------------------------
# K = 2 with an encoder and held-out particles, so that one run has every phase: the consensus
# epoch, the EM class start (epoch 2), validation and the latent pass.
PHASES = dict(n_classes=2, class_init_epochs=1, val_fraction=0.25)


@pytest.fixture(scope="module")
def straight_phases(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    train(out, tiny, TrainConfig(**PHASES, **TINY))
    return RunDir(out)


def _signal_once(monkeypatch, owner, name, when=lambda *a, **k: True):
    """Wrap ``owner.name`` to send SIGINT to this process the first time ``when(...)`` holds; count
    the calls made after the signal (a phase that checks its flag makes none)."""
    original = getattr(owner, name)
    seen = {"sent": False, "after": 0}

    def wrapped(*args, **kwargs):
        if seen["sent"]:
            seen["after"] += 1
        elif when(*args, **kwargs):
            seen["sent"] = True
            os.kill(os.getpid(), signal.SIGINT)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)
    return seen


def _called_from(function: str) -> bool:
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


def test_a_signal_during_the_latent_start_stops_before_training(tiny, tmp_path, monkeypatch):
    """The encoder's factor-model start (train.latent_start) runs before the first step: a stop there
    saves nothing and says so; the same command then starts the run afresh."""
    import hetfield.train.class_start as class_init

    sent = _signal_once(monkeypatch, class_init, "_batch_statistics", when=lambda *a, **k: _called_from("initialise_latent"))
    with pytest.raises(Interrupted) as stop:
        train(tmp_path / "run", tiny, TrainConfig(**TINY))
    assert sent["sent"] and sent["after"] == 0, "no batch of the start was read after the signal"
    assert stop.value.exit_code == 128 + signal.SIGINT and "before training started" in str(stop.value)
    run = RunDir(tmp_path / "run")
    assert not run.resume_path.exists() and run.epochs() == []
    monkeypatch.undo()
    train(tmp_path / "run", tiny, TrainConfig(**TINY), load="latest")
    assert run.epochs() == [1, 2, 3]


def _resume_and_compare(tiny, run: RunDir, straight: RunDir, cfg) -> None:
    train(run.path, tiny, cfg, load="latest")
    assert not run.resume_path.exists()
    assert [m["epoch"] for m in run.metrics()] == [1, 2, 3]
    _assert_same_run(straight, run, 3)
    for key in ("val_data_loss", "class_change_fraction", "class_occupancy"):
        assert [m.get(key) for m in run.metrics()] == [m.get(key) for m in straight.metrics()], key


def test_a_signal_during_the_em_start_stops_it_at_once(tiny, tmp_path, monkeypatch, straight_phases):
    import hetfield.train.class_start as class_init

    cfg = TrainConfig(**PHASES, **TINY)
    sent = _signal_once(monkeypatch, class_init, "_batch_statistics", when=lambda *a, **k: _called_from("lowres_em_labels"))
    solves = _signal_once(monkeypatch, class_init, "_solve_spd", when=lambda *a: False)  # counts EM iterations
    with pytest.raises(Interrupted) as stop:
        train(tmp_path / "run", tiny, cfg)
    assert sent["sent"] and sent["after"] == 0 and solves["after"] == 0  # no EM iteration ran after the signal
    assert stop.value.signum == signal.SIGINT and stop.value.exit_code == 128 + signal.SIGINT
    run = RunDir(tmp_path / "run")
    state = torch.load(run.resume_path, weights_only=True)
    assert state["epoch"] == 1 and state["sums"] is None  # the start of epoch 2, before the EM start
    monkeypatch.undo()
    _resume_and_compare(tiny, run, straight_phases, cfg)


@pytest.mark.parametrize(
    "phase, epoch",
    [("validation", 2), ("latents", 2), ("validation", 3), ("latents", 3)],  # epoch 3 is the last
)
def test_a_signal_during_validation_or_the_latent_pass_is_honoured(tiny, tmp_path, monkeypatch, straight_phases, phase, epoch):
    from hetfield.model.reconstruction import Reconstruction

    cfg = TrainConfig(**PHASES, **TINY)
    run = RunDir(tmp_path / "run")
    done = lambda: len(run.metrics()) >= epoch - 1 and run.epochs() == list(range(1, epoch))  # noqa: E731
    if phase == "validation":  # the held-out particles' forward pass: sample=False, training mode off
        sent = _signal_once(monkeypatch, Reconstruction, "forward", when=lambda self, batch, **kw: done() and not kw.get("sample", True))
    else:
        sent = _signal_once(monkeypatch, Reconstruction, "embed", when=lambda *a, **k: done())
    with pytest.raises(Interrupted):
        train(run.path, tiny, cfg)
    assert sent["sent"]
    # Stopped within the phase: the epoch was not saved and training did not go on.
    assert run.epochs() == list(range(1, epoch))
    state = torch.load(run.resume_path, weights_only=True)
    assert state["epoch"] == epoch - 1 and int(state["sums"][3]) == 12  # every training particle of the epoch
    monkeypatch.undo()
    _resume_and_compare(tiny, run, straight_phases, cfg)


def test_a_signal_during_the_last_checkpoint_still_stops_with_its_code(tiny, tmp_path, monkeypatch):
    import hetfield.train.loop as loop

    cfg = TrainConfig(**{**TINY, "epochs": 2})
    run = RunDir(tmp_path / "run")
    sent = _signal_once(monkeypatch, loop, "save_checkpoint", when=lambda path, state: path.name == "weights.2.pt")
    with pytest.raises(Interrupted) as stop:
        train(run.path, tiny, cfg)
    assert sent["sent"] and stop.value.exit_code == 128 + signal.SIGINT
    assert "the run is complete" in str(stop.value)
    assert run.epochs() == [1, 2] and not run.resume_path.exists()


def test_a_run_written_before_the_latent_start_and_field_prior_resumes_as_it_was_trained(tiny, tmp_path):
    """Runs of before issue 13 lack latent_start and field_prior, and their beta None meant 1/zdim:
    they resume with what they were trained with (bit for bit), not with today's defaults."""
    import yaml

    before = {**TINY, "latent_start": "none", "field_prior": False, "beta": 0.5}
    train(tmp_path / "straight", tiny, TrainConfig(**before))
    train(tmp_path / "old", tiny, TrainConfig(**{**before, "epochs": 1}))
    run = RunDir(tmp_path / "old")
    config = yaml.safe_load(run.config_path.read_text())
    for key in ("latent_start", "field_prior"):
        del config["train"][key], config["model"][key]
    for key in ("class_decode_threshold", "class_full_pass_every"):  # options of the same round
        del config["train"][key]
    config["train"]["beta"] = None  # the old default, 1/zdim = 0.5 at zdim 2
    assert config["beta_effective"] == 0.5
    run.config_path.write_text(yaml.safe_dump(config))
    state = torch.load(run.weights_path(1), weights_only=True)
    for key in ("latent_start", "field_prior"):
        del state["shape"][key]
        state["train"].pop(key, None)
    state["train"]["beta"] = None
    torch.save(state, run.weights_path(1))
    proc = run_cli("train", run.path, "--data", tiny, "--load", "latest", "--epochs", "3", "-q")
    assert proc.returncode == 0, proc.stderr
    _assert_same_run(RunDir(tmp_path / "straight"), run, 3)
