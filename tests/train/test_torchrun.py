"""``hetfield train`` under torchrun: 2 gloo processes train the run one process trains.

The scheme (train.distributed) splits every global batch between the ranks and keeps tables,
posteriors and the noise generator identical on every rank, so the runs agree far inside the
required 3 % (measured: losses equal to ~1e-7 relative, validation losses equal to the bit here).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from hetfield.train.rundir import RunDir

from helpers import run_cli, simulate_and_setup

OPTS = ["--zdim", "2", "--batch-size", "5", "--field-hidden", "32", "--field-layers", "2", "--enc-hidden", "32", "--enc-embed", "16",
        "--enc-grid", "4", "--pe-features", "16", "--threads", "1", "--device", "cpu", "--val-fraction", "0.2", "-q"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return simulate_and_setup(tmp_path_factory.mktemp("ddp"), "d", n_particles=24, n_classes=2, n_tilts=5, box=24, snr=1.0, seed=4) / "dataset"


def _free_port() -> int:
    with socket.socket() as s:  # tests run side by side: not torchrun's fixed default port
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args, n: int = 2):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n), "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "hetfield.cli.app", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def _metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _one_writer(run, epochs: int) -> None:
    """Rank 0 alone wrote: one row per epoch, one start line, the files of a one-process run."""
    assert [m["epoch"] for m in _metrics(run)] == list(range(1, epochs + 1))
    assert sum("new run" in line for line in (run / "run.log").read_text().splitlines()) == 1
    assert all(m["world_size"] == 2 for m in _metrics(run))


def test_two_gloo_processes_train_the_run_of_one_and_resume(data, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    proc = run_cli("train", one, "--data", data, "--n-classes", "2", "--epochs", "3", *OPTS)
    assert proc.returncode == 0, proc.stderr
    proc = torchrun("train", two, "--data", data, "--n-classes", "2", "--epochs", "2", *OPTS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = torchrun("train", two, "--data", data, "--n-classes", "2", "--epochs", "3", "--load", "latest", *OPTS)  # resume, 2 ranks
    assert proc.returncode == 0, proc.stderr[-3000:]
    _one_writer(two, 3)
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    m1, m2 = _metrics(one), _metrics(two)
    for a, b in zip(m1, m2):
        assert abs(b["val_data_loss"] / a["val_data_loss"] - 1) < 0.03, (a, b)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)  # the same computation, summed in another order
    assert m2[-1]["class_occupancy"] == m1[-1]["class_occupancy"]
    la, lb = RunDir(one).latent(3), RunDir(two).latent(3)
    assert lb["z_mu"].shape[0] == 24 and np.isfinite(lb["z_mu"]).all()  # a latent for every particle
    assert np.allclose(lb["z_mu"], la["z_mu"], atol=1e-3)


@pytest.mark.slow
def test_two_processes_keep_the_autodecoder_and_pose_tables_of_one(data, tmp_path):
    opts = ["--conf-estimation", "autodecoder", "--pose-estimation", "refine", "--pose-warmup-epochs", "1", "--epochs", "3", *OPTS]
    assert run_cli("train", tmp_path / "one", "--data", data, *opts).returncode == 0
    proc = torchrun("train", tmp_path / "two", "--data", data, *opts)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _one_writer(tmp_path / "two", 3)
    for a, b in zip(_metrics(tmp_path / "one"), _metrics(tmp_path / "two")):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4)
    la, lb = RunDir(tmp_path / "one").latent(3), RunDir(tmp_path / "two").latent(3)
    assert lb["z_mu"].shape[0] == 24
    assert np.allclose(lb["z_mu"], la["z_mu"], atol=1e-4)


@pytest.fixture(scope="module")
def small_tilt(tmp_path_factory):
    return simulate_and_setup(tmp_path_factory.mktemp("ddp_abinit"), "d", n_particles=24, n_classes=2, n_tilts=3, box=16, seed=4, mode="tilt") / "dataset"


def test_two_processes_train_the_abinit_run_of_one(small_tilt, tmp_path):
    """Each rank searches its own share of every batch; the searched rows reach every rank before a
    checkpoint (abinit.BatchSearch.share), so rank 0 saves every particle's pose, not stale ones for
    the other rank's particles, and the rebalancing reads every particle's search. One field layer:
    its empty hidden-bias parameter is kept out of DDP (which refused it at the second step)."""
    opts = ["--n-classes", "2", "--pose-estimation", "abinit", "--epochs", "4", "--pose-search-epochs", "2", "--class-hold-epochs", "1",
            "--pose-search-base-nside", "1", "--zdim", "0", "--batch-size", "8", "--field-hidden", "32", "--field-layers", "1", "--pe-features", "16",
            "--threads", "1", "--device", "cpu", "-q"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_cli("train", one, "--data", small_tilt, *opts).returncode == 0
    proc = torchrun("train", two, "--data", small_tilt, *opts)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _one_writer(two, 4)
    m1, m2 = _metrics(one), _metrics(two)
    assert m2[2]["search_s_per_image_class"] > 0 and m2[2]["search_local"] is False  # a global search round
    assert m2[2]["search_kept_current"] == m1[2]["search_kept_current"]  # the guard's counter summed over the ranks
    for a, b in zip(m1, m2):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), (a, b)
    for epoch in (3, 4):  # after the global search round, and after gradient refinement
        la, lb = RunDir(one).latent(epoch), RunDir(two).latent(epoch)
        assert np.array_equal(la["class_idx"], lb["class_idx"])
        assert np.abs(lb["rotation"] - la["rotation"]).max() < 1e-3 and np.abs(lb["origin_px"] - la["origin_px"]).max() < 1e-3
