"""Helpers shared by tests: running the CLI as a user would, and small simulated datasets.

``tests/`` is on ``sys.path`` (its conftest.py puts it there), so tests import this as ``helpers``.
"""

from __future__ import annotations

import os
from pathlib import Path


def run_cli(*args: str, cwd=None, timeout: float = 600):
    """Run ``hetfield ARGS`` in a fresh interpreter, as a user would; returns the CompletedProcess."""
    import subprocess
    import sys

    env = dict(os.environ, MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "hetfield.cli.app", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


def assert_usage_error(proc, *fragments: str) -> None:
    """Exit code 2, one line on stderr naming what was wrong, no traceback."""
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 or lines[0].startswith("Usage:"), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def simulate_and_setup(root: Path, name: str, **sim) -> Path:
    """Simulate a dataset with the library and prepare it with ``setup``; returns the dataset dir."""
    from hetfield.data.preprocess import prepare_dataset
    from hetfield.data.simulate import simulate

    out = root / name
    simulate(out / "sim", **sim)
    prepare_dataset(out / "dataset", out / "sim" / "particles.star")
    return out
