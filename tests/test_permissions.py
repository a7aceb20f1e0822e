"""Outputs can be shared (issue 9, item 6): under umask 022 every file hetfield writes is 0644 and
every directory 0755, so a colleague, a web server or another cluster account can read a report, a
map or a checkpoint. The whole chain runs as a user runs it, one command after another.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from helpers import run_cli

pytestmark = pytest.mark.slow


def _modes(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = os.lstat(p).st_mode
    return out


def test_every_output_is_readable_by_others(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    os.chmod(ws, 0o755)
    old = os.umask(0o022)
    try:
        steps = [
            ["simulate", "sim", "--n-particles", "16", "--n-classes", "2", "--box", "16", "--n-tilts", "3", "--seed", "3"],
            ["setup", "ds", "--particles", "sim/particles.star"],
            ["train", "run", "--data", "ds", "--epochs", "2", "--zdim", "2", "--field-hidden", "16", "--enc-hidden", "16",
             "--enc-embed", "8", "--pe-features", "8", "--device", "cpu", "--threads", "1", "-q"],
            ["convergence", "run", "--no-umap", "-q"],
            ["analyze", "run", "--no-umap", "--k", "2", "-q"],
            ["volumes", "run", "--out", "vols", "--pc", "1", "--n", "2", "-q"],
            ["backproject", "ds", "--out", "bp", "-q"],
            ["sweep", "plan", "--zdim", "2", "--set", "epochs=2", "--out", "plan.csv"],
            ["sweep", "summarize", "run", "--out", "summary"],
        ]
        for step in steps:
            proc = run_cli(*step, cwd=ws)
            assert proc.returncode == 0, (step, proc.stderr[-2000:])
    finally:
        os.umask(old)
    modes = _modes(ws)
    expected = {"sim", "ds", "run", "run/convergence", "run/analysis.2", "vols", "bp", "plan.csv", "summary"}
    assert expected <= set(modes), sorted(expected - set(modes))
    kinds = {
        ".png": "run/convergence/plots", ".mrc": "vols", ".html": "summary", ".csv": "plan.csv", ".json": "bp",
        ".mrcs": "sim/stacks", ".star": "sim", ".npz": "run", ".pt": "run", ".npy": "ds", ".yaml": "ds",
    }
    for ext, where in kinds.items():  # every kind of writer was exercised
        assert any(k.startswith(where) and k.endswith(ext) for k in modes), (ext, where)
    wrong = {k: oct(stat.S_IMODE(m)) for k, m in modes.items()
             if stat.S_IMODE(m) != (0o755 if stat.S_ISDIR(m) else 0o644) or not (stat.S_ISDIR(m) or stat.S_ISREG(m))}
    assert not wrong, wrong
    assert not [k for k in modes if Path(k).name.startswith(".") and Path(k).name.endswith((".tmp", ".old"))], "temporaries left"
