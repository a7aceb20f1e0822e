"""The run directory as users meet it: locks, resumes across devices and settings, damage, leftovers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml

from hetfield.errors import ConfigError, RunError
from hetfield.train.config import TrainConfig
from hetfield.train.loop import train
from hetfield.train.prepare import resume_config
from hetfield.train.rundir import RunDir

from helpers import assert_usage_error, run_cli, simulate_and_setup

TINY = dict(zdim=2, epochs=1, batch_size=4, field_hidden=32, field_layers=2, enc_hidden=32, enc_embed=16, enc_grid=4, pe_features=16, threads=1, device="cpu")
TINY_ARGS = ["--zdim", "2", "--batch-size", "4", "--field-hidden", "32", "--field-layers", "2", "--enc-hidden", "32", "--enc-embed", "16",
             "--enc-grid", "4", "--pe-features", "16", "--threads", "1", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return simulate_and_setup(tmp_path_factory.mktemp("rundir"), "d", n_particles=12, n_classes=1, n_tilts=4, box=24, snr=1.0, seed=8) / "dataset"


@pytest.fixture(scope="module")
def one_epoch(tiny, tmp_path_factory):
    """A finished one-epoch run, copied by the tests that damage it."""
    path = tmp_path_factory.mktemp("one") / "run"
    train(path, tiny, TrainConfig(**TINY))
    return path


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return RunDir(dst)


def _resume(run_path, data, load="latest", config_file=None, **given):
    """What ``hetfield train RUN --data DATA --load … [--config FILE] [options]`` does."""
    cfg, sources = resume_config(run_path, config_file, given)
    return train(run_path, data, cfg, load=load, sources=sources)


# -- item 4: a resume on another device ----------------------------------------------------------
def test_resume_takes_a_noise_generator_state_saved_on_another_device(tiny, one_epoch, tmp_path):
    run = _copy(one_epoch, tmp_path / "run")
    state = torch.load(run.weights_path(1), weights_only=True)
    torch.Generator().set_state(state["generator"])  # what we write now: a CPU generator's state, for any device
    # A CUDA generator's state (Philox seed + offset, 16 bytes), as runs trained on a GPU wrote it.
    state["generator"] = torch.zeros(16, dtype=torch.uint8)
    torch.save(state, run.weights_path(1))
    _resume(run.path, tiny, epochs=2)
    assert run.epochs() == [1, 2]
    assert "another device type" in run.log_path.read_text()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_run_moves_between_cpu_and_cuda(tiny, one_epoch, tmp_path):
    run = _copy(one_epoch, tmp_path / "run")
    _resume(run.path, tiny, epochs=2, device="cuda")
    _resume(run.path, tiny, epochs=3, device="cpu")
    assert run.epochs() == [1, 2, 3] and [m["epoch"] for m in run.metrics()] == [1, 2, 3]
    assert "another device type" not in run.log_path.read_text()


# -- item 9: --config with --load, and the defaults in --help -------------------------------------
def test_config_with_load_applies_resumable_settings_and_refuses_others(tiny, one_epoch, tmp_path):
    run = _copy(one_epoch, tmp_path / "run")
    more = tmp_path / "more.yaml"
    more.write_text("epochs: 2\nbatch_size: 3\n")
    _resume(run.path, tiny, config_file=more)
    assert run.epochs() == [1, 2]
    assert run.config()["train"]["epochs"] == 2 and run.config()["train"]["batch_size"] == 3
    other = tmp_path / "other.yaml"
    other.write_text("epochs: 3\nzdim: 3\nlr: 0.01\n")
    with pytest.raises(ConfigError) as err:
        _resume(run.path, tiny, config_file=other)
    message = str(err.value)
    assert "zdim (2 → 3 from --config" in message and "lr (0.003 → 0.01 from --config" in message and "epochs (" not in message
    assert run.epochs() == [1, 2]


def test_train_help_shows_every_default_of_the_training_settings():
    from dataclasses import fields

    env = dict(os.environ, COLUMNS="400", TERM="dumb")
    proc = subprocess.run([sys.executable, "-m", "hetfield.cli.app", "train", "--help"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    lines, current = {}, None
    for line in proc.stdout.splitlines():
        words = line.strip("│ ").split()
        if words and words[0].startswith("--"):
            current = words[0]
            lines[current] = line.rstrip("│ ")
        elif current and line.startswith("│") and words:  # a long help wraps onto the next lines
            lines[current] += " " + line.strip("│ ")
        else:
            current = None
    for f in fields(TrainConfig):
        option = f"--{f.name.replace('_', '-')}"
        line = lines[option]
        if isinstance(f.default, bool):
            shown = option if f.default else f"--no-{f.name.replace('_', '-')}"
        elif f.default is None:
            shown = None  # a rule, not a value (beta: 1/zdim, threads: torch's choice)
        elif isinstance(f.default, float):
            shown = f"{f.default:g}"
        else:
            shown = str(f.default)
        assert "[default: " in line, line
        if shown is not None:
            assert f"[default: {shown}]" in line, line


def test_sweep_run_checks_a_run_directory_with_the_resume_rule(one_epoch):
    """``sweep run`` and ``--load`` compare stored and requested settings in one place (issue 10)."""
    from hetfield.train.prepare import check_same_settings

    check_same_settings(one_epoch, TrainConfig(**TINY))
    check_same_settings(one_epoch, TrainConfig(**{**TINY, "epochs": 5, "batch_size": 2}))  # may change on resume
    with pytest.raises(ConfigError) as err:
        check_same_settings(one_epoch, TrainConfig(**{**TINY, "zdim": 3, "lr": 1e-3}))
    assert "zdim (2 → 3)" in str(err.value) and "lr (0.003 → 0.001)" in str(err.value) and "--force" in str(err.value)
    check_same_settings(one_epoch, TrainConfig(**{**TINY, "zdim": 3}), force=True)


# -- item 11: one train per run; metrics and checkpoints agree ------------------------------------
def test_a_second_train_of_the_same_run_is_refused(tiny, tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "hetfield.cli.app", "train", str(run), "--data", str(tiny), *TINY_ARGS, "--epochs", "500", "--batch-size", "1"]
    first = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "config.yaml").is_file() and time.time() < deadline:
            time.sleep(0.1)
        # Even --force, which would start the run over, must not write into a run being trained.
        second = run_cli("train", run, "--data", tiny, *TINY_ARGS, "--epochs", "1", "--force")
        assert_usage_error(second, f"run directory {run} is in use by hetfield pid {first.pid}", "wait for that training to finish")
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, err
    assert RunDir(run).config()["train"]["epochs"] == 500  # the first run's settings, untouched


def test_metrics_rows_after_the_resumed_state_are_dropped_then_trained_again(tiny, tmp_path):
    run = RunDir(tmp_path / "run")
    train(run.path, tiny, TrainConfig(**{**TINY, "epochs": 2}))
    # A kill between epoch 3's metrics line and its checkpoint leaves this:
    with open(run.metrics_path, "a") as fh:
        fh.write(json.dumps({"epoch": 3, "loss": -1.0}) + "\n")
    _resume(run.path, tiny, epochs=3)
    rows = run.metrics()
    assert [m["epoch"] for m in rows] == [1, 2, 3] and rows[2]["loss"] > 0
    # Resuming from an earlier epoch would mix two trainings: refused, or --force discards the later ones.
    with pytest.raises(RunError, match="holds epochs 2, 3 trained after epoch 1"):
        _resume(run.path, tiny, load="1")
    cfg, _ = resume_config(run.path, None, {"epochs": 2})
    train(run.path, tiny, cfg, load="1", force=True)
    assert run.epochs() == [1, 2] and [m["epoch"] for m in run.metrics()] == [1, 2]


# -- item 12: nothing created on a bad device, unstarted runs start, damage is one line ------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unusable_device_creates_nothing(tiny, tmp_path):
    proc = run_cli("train", tmp_path / "run", "--data", tiny, *TINY_ARGS[:-3], "--device", "cuda", "--quiet")
    assert_usage_error(proc, "--device cuda", "CUDA is not available", "--device cpu")
    assert not (tmp_path / "run").exists()


def _unstarted(one_epoch, path):
    """A run killed after its first metrics line but before its first checkpoint."""
    run = _copy(one_epoch, path)
    run.weights_path(1).unlink()
    run.latent_path(1).unlink()
    return run


def test_a_run_killed_before_its_first_checkpoint_simply_starts(tiny, one_epoch, tmp_path):
    run = _unstarted(one_epoch, tmp_path / "a")
    again = run_cli("train", run.path, "--data", tiny, *TINY_ARGS, "--epochs", "1")
    assert again.returncode == 0, again.stderr
    assert run.epochs() == [1] and [m["epoch"] for m in run.metrics()] == [1]
    run = _unstarted(one_epoch, tmp_path / "b")
    resumed = run_cli("train", run.path, "--data", tiny, "--load", "latest", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert run.epochs() == [1] and [m["epoch"] for m in run.metrics()] == [1]
    assert "nothing was saved yet" in run.log_path.read_text()
    empty = tmp_path / "c"
    empty.mkdir()  # killed before config.yaml was written
    _resume(empty, tiny, epochs=1, **{k: v for k, v in TINY.items() if k != "epochs"})
    assert RunDir(empty).epochs() == [1]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit_config(run, edit):
    data = yaml.safe_load(run.config_path.read_text())
    edit(data)
    run.config_path.write_text(yaml.safe_dump(data))


def _wrong_shape(run):
    state = torch.load(run.weights_path(1), weights_only=True)
    name = next(k for k, v in state["model"].items() if v.ndim == 2)
    state["model"][name] = torch.zeros(3, 3)
    torch.save(state, run.weights_path(1))


def _resume_pt(run, damage):
    run.resume_path.write_bytes(run.weights_path(1).read_bytes())
    damage(run.resume_path)


DAMAGE = {
    "truncated weights": (lambda run: _truncate(run.weights_path(1)), ["weights.1.pt", "unreadable checkpoint", "truncated", "delete it"]),
    "truncated resume.pt": (lambda run: _resume_pt(run, _truncate), ["resume.pt", "unreadable checkpoint", "delete it"]),
    "weights of another shape": (_wrong_shape, ["weights.1.pt", "does not fit this run's model", "--force"]),
    "config without train": (lambda run: _edit_config(run, lambda d: d.pop("train")), ["config.yaml", "no 'train' settings", "--force"]),
    "config missing a key": (lambda run: _edit_config(run, lambda d: d["train"].pop("zdim")), ["config.yaml", "missing train.zdim", "--force"]),
    "config of a wrong type": (lambda run: _edit_config(run, lambda d: d["train"].update(zdim="two")), ["config.yaml: train.zdim 'two'", "whole number", "--force"]),
    "config bool of a wrong type": (lambda run: _edit_config(run, lambda d: d["train"].update(dose_weight="yes")), ["train.dose_weight 'yes'", "true or false"]),
    "config not YAML": (lambda run: run.config_path.write_text("train: [unclosed\n"), ["config.yaml", "unreadable YAML", "--force"]),
    "config without fingerprint": (lambda run: _edit_config(run, lambda d: d.pop("dataset")), ["config.yaml", "dataset.fingerprint", "--force"]),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_run_is_one_clear_line(tiny, one_epoch, tmp_path, case):
    damage, fragments = DAMAGE[case]
    run = _copy(one_epoch, tmp_path / "run")
    damage(run)
    with pytest.raises(RunError) as err:
        _resume(run.path, tiny, epochs=2)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_a_damaged_run_through_the_cli(tiny, one_epoch, tmp_path):
    run = _copy(one_epoch, tmp_path / "run")
    _edit_config(run, lambda d: d["train"].pop("lr"))
    proc = run_cli("train", run.path, "--data", tiny, "--load", "latest", "--epochs", "2")
    assert_usage_error(proc, "config.yaml", "missing train.lr", "--force")


def test_a_damaged_latent_file_is_a_run_error(one_epoch, tmp_path):
    run = _copy(one_epoch, tmp_path / "run")
    _truncate(run.latent_path(1))
    with pytest.raises(RunError, match="latent.1.npz: damaged latent file .*--load latest"):
        run.latent(1)
    np.savez(run.latent_path(1), z_mu=np.zeros((12, 2)), class_probs=np.ones((5, 1)))
    with pytest.raises(RunError, match="inconsistent shapes"):
        run.latent(1)
    with open(run.latent_path(1), "wb") as fh:
        np.savez(fh, class_probs=np.array([object()] * 12, dtype=object))
    with pytest.raises(RunError, match="damaged latent file"):
        run.latent(1)


def test_an_unusable_location_is_refused_before_anything_is_written(tiny, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(RunError, match="a_file is a file; choose another location"):
        train(blocker / "run", tiny, TrainConfig(**TINY))
    with pytest.raises(RunError, match="exists and is not a directory"):
        train(blocker, tiny, TrainConfig(**TINY))
    with pytest.raises(RunError, match="does not exist; start the run without --load"):
        train(tmp_path / "nowhere", tiny, TrainConfig(**TINY), load="latest")
    assert not (tmp_path / "nowhere").exists()


def test_temporaries_of_killed_writers_are_removed_at_the_next_start(tiny, one_epoch, tmp_path):
    run = _copy(one_epoch, tmp_path / "run")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname().split(".")[0]
    stale = [run.path / f".weights.2.pt.{host}-{dead.pid}.x1y2.tmp", run.path / f".latent.2.npz.{host}-{dead.pid}.a9b8.tmp"]
    live = run.path / f".metrics.jsonl.{host}-{os.getpid()}.zz00.tmp"  # a live writer's: kept
    for p in (*stale, live):
        p.write_bytes(b"partial")
    _resume(run.path, tiny, epochs=2)
    assert not any(p.exists() for p in stale) and live.exists()
