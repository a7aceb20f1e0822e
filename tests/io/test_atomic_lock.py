"""Atomic writes respect the umask and clean killed writers' leftovers; locks refuse a second writer."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from hetfield.errors import RunError
from hetfield.io.atomic import atomic_directory, remove_stale_temporaries, write_atomic, write_text_atomic
from hetfield.io.lock import exclusive_lock


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_files_and_directories_follow_the_umask(tmp_path, umask_022):
    f = write_text_atomic(tmp_path / "report.html", "<html/>")
    assert _mode(f) == 0o644
    # a writer that creates its own file with a private mode (as mkstemp does) still ends 0644
    g = write_atomic(tmp_path / "w.pt", lambda p: (p.unlink(), os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o600))))
    assert _mode(g) == 0o644
    with atomic_directory(tmp_path / "analysis.3") as d:
        (d / "summary.json").write_text("{}")
    assert _mode(tmp_path / "analysis.3") == 0o755
    assert _mode(tmp_path / "analysis.3" / "summary.json") == 0o644


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    host = socket.gethostname().split(".")[0]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".ds.{host}-{dead_pid}.abc12345.tmp"
    live = tmp_path / f".ds.{host}-{os.getpid()}.abc12345.tmp"
    remote = tmp_path / f".ds.otherhost-{dead_pid}.abc12345.tmp"
    other_name = tmp_path / f".run.{host}-{dead_pid}.abc12345.tmp"
    for p in (stale, live, remote, other_name):
        p.mkdir()
    assert remove_stale_temporaries(tmp_path, "ds") == [stale]
    assert live.exists() and remote.exists() and other_name.exists()
    # building the directory again cleans its own leftovers
    stale.mkdir()
    with atomic_directory(tmp_path / "ds") as d:
        (d / "x").write_text("1")
    assert not stale.exists() and (tmp_path / "ds" / "x").is_file()


def test_a_held_lock_refuses_a_second_process_with_one_line(tmp_path):
    code = (
        "import sys\nfrom hetfield.io.lock import exclusive_lock\nfrom hetfield.errors import RunError\n"
        f"try:\n    with exclusive_lock({str(tmp_path / 'x.lock')!r}, 'run directory R', RunError, 'wait for it'):\n        pass\n"
        "except RunError as e:\n    print(e); sys.exit(2)\n"
    )
    with exclusive_lock(tmp_path / "x.lock", "run directory R", RunError, "wait for it"):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode == 2, proc.stderr
        assert f"run directory R is in use by hetfield pid {os.getpid()}" in proc.stdout
        assert "wait for it" in proc.stdout
    # released: the next holder gets it
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
