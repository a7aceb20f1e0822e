"""kill -9 at random moments of `hetfield setup` (issue 9, item 7).

Whatever moment a setup dies at, DATASET is either absent, the old complete dataset, or the new
complete one (every file loadable), and the next setup finishes cleanly and removes the hidden
temporaries the killed ones left (before: a 72 MB hidden copy stayed for good).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from hetfield.data.dataset import Dataset
from hetfield.data.simulate import simulate

N_KILLS = 12


def _setup_cmd(ds, star, *extra):
    return [sys.executable, "-m", "hetfield.cli.app", "setup", str(ds), "--particles", str(star), *map(str, extra)]


def _check_complete(ds, n_images):
    """DATASET is absent or whole: every file loads and agrees with dataset.yaml."""
    if not ds.exists():
        return "absent"
    opened = Dataset.open(ds)
    assert opened.n_images == n_images
    assert len(opened.table) == n_images
    np.asarray(opened.images[-1])  # the last image is on disk
    assert all(p.is_file() for p in opened.source_info.files.values())
    return "complete"


@pytest.mark.slow
def test_kill_minus_9_at_random_moments(tmp_path):
    simulate(tmp_path / "sim", n_particles=100, n_classes=1, box=32, n_tilts=10, seed=4)
    star = tmp_path / "sim" / "particles.star"
    n_images = 1000
    ds = tmp_path / "ds"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    subprocess.run(_setup_cmd(tmp_path / "ref", star), check=True, capture_output=True, env=env)
    full = time.perf_counter() - t0
    ref = Dataset.open(tmp_path / "ref")

    rng = np.random.default_rng(0)
    states, phases = [], []
    for k in range(N_KILLS):
        # alternate settings so that --force replaces a complete dataset (it must never be half gone)
        extra = ["--force", "--no-window"] if k % 2 else ["--force"]
        proc = subprocess.Popen(_setup_cmd(ds, star, *extra), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        if k % 3 == 2:  # a random moment of the whole run (mostly start-up and validation)
            time.sleep(rng.uniform(0.2, full))
            phases.append("any")
        else:  # a random moment after the hidden temporary appeared: removing the old one, or writing
            deadline = time.perf_counter() + 3 * full
            while proc.poll() is None and time.perf_counter() < deadline:
                if any(p.name.startswith(".ds.") and p.name.endswith((".tmp", ".old")) for p in tmp_path.iterdir()):
                    break
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.3))
            phases.append("writing")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        states.append(_check_complete(ds, n_images))
        left = [p for p in tmp_path.iterdir() if p.name.startswith(".ds.") and p.name.endswith((".tmp", ".old"))]
        phases[-1] += f"/{len(left)} left"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".ds.") and p.name != ".ds.lock"]

    done = subprocess.run(_setup_cmd(ds, star, "--force"), capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert _check_complete(ds, n_images) == "complete"
    np.testing.assert_array_equal(np.asarray(Dataset.open(ds).images), np.asarray(ref.images))
    after = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ds"))
    assert after == [".ds.lock"], (after, leftovers, states)
    assert len(states) == N_KILLS
    assert any("writing" in p and not p.endswith("/0 left") for p in phases), phases  # some kills hit the writing
