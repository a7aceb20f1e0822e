"""The CLI boundary: no exception reaches the user as a traceback, each kind has its line and exit code.

The failures are injected into the command in this process (the CLI's ``main`` is called as the
console script calls it), since a full disk or an exhausted memory cannot be arranged in a test.
"""

from __future__ import annotations

import contextlib
import errno
import io
import sys
from types import SimpleNamespace

import pytest

from hetfield import errors


def cli(*args, env=None, monkeypatch=None):
    from hetfield.cli.app import main

    if env and monkeypatch:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["hetfield", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.argv = argv
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def _raiser(exc):
    def run(*args, **kwargs):
        raise exc

    return run


@pytest.fixture
def failing_convergence(monkeypatch):
    """``hetfield convergence RUN`` whose work raises what the test sets."""
    import hetfield.analysis.convergence as conv

    def set_error(exc):
        monkeypatch.setattr(conv, "run_convergence", _raiser(exc))

    return set_error


def _one_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("hetfield: error: "), proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    "code, path, fragments",
    [
        (errno.EACCES, "/data/out/report.html", ["/data/out/report.html", "permission denied", "ls -ld /data/out"]),
        (errno.ENOSPC, "/scratch/run/weights.3.pt", ["/scratch/run/weights.3.pt", "no space left", "df -h"]),
        (errno.EROFS, "/mnt/ro/x", ["/mnt/ro/x", "read-only file system", "writable"]),
        (errno.ENOTDIR, "/a/file/x", ["/a/file/x", "not a directory"]),
        (errno.EIO, "/nfs/x", ["/nfs/x", "input/output error", "check the disk"]),
    ],
)
def test_os_errors_name_the_path_the_reason_and_what_to_do(failing_convergence, code, path, fragments):
    import os

    failing_convergence(OSError(code, os.strerror(code), path))
    proc = cli("convergence", "run", "-q")
    line = _one_line(proc)
    assert proc.returncode == errors.EXIT_OS_ERROR == 74
    for f in fragments:
        assert f in line, (f, line)
    assert "HETFIELD_DEBUG=1" in line


def test_ctrl_c(failing_convergence):
    failing_convergence(KeyboardInterrupt())
    proc = cli("convergence", "run", "-q")
    line = _one_line(proc)
    assert proc.returncode == 130 and "interrupted" in line and "run the command again" in line


def test_memory_error(failing_convergence):
    failing_convergence(MemoryError())
    proc = cli("convergence", "run", "-q")
    line = _one_line(proc)
    assert proc.returncode == errors.EXIT_OUT_OF_MEMORY == 71
    assert "out of memory" in line and "--batch-size" in line


def test_any_other_exception_is_reported_as_a_bug(failing_convergence):
    failing_convergence(ValueError("operands could not be broadcast together\nwith shapes (3,) (4,)"))
    proc = cli("convergence", "run", "-q")
    line = _one_line(proc)
    assert proc.returncode == errors.EXIT_INTERNAL == 70
    for f in ("internal error", "ValueError", "bug in hetfield", "HETFIELD_DEBUG=1", "report it", "issue tracker"):
        assert f in line, (f, line)


def test_debug_variable_shows_the_traceback(failing_convergence, monkeypatch):
    failing_convergence(ValueError("boom"))
    proc = cli("convergence", "run", "-q", env={"HETFIELD_DEBUG": "1"}, monkeypatch=monkeypatch)
    assert proc.returncode == 70
    assert "Traceback" in proc.stderr and "ValueError: boom" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("hetfield: error: internal error")


def test_stop_iteration_is_not_swallowed_by_the_boundary(failing_convergence):
    """StopIteration (the original item-4 symptom) is a bug like any other: reported, never silent."""
    failing_convergence(StopIteration())
    proc = cli("convergence", "run", "-q")
    assert proc.returncode == 70 and "StopIteration" in _one_line(proc)


def test_ctrl_c_in_a_sweep_subcommand(monkeypatch):
    import hetfield.sweep.summary as summary

    monkeypatch.setattr(summary, "summarize", _raiser(KeyboardInterrupt()))
    proc = cli("sweep", "summarize", "x", "--out", "y")
    assert proc.returncode == 130 and "interrupted" in _one_line(proc)


def test_hetfield_errors_keep_their_codes(failing_convergence):
    failing_convergence(errors.Interrupted("stopped by SIGTERM; resume with --load latest", 15))
    proc = cli("convergence", "run", "-q")
    assert proc.returncode == 143 and "SIGTERM" in _one_line(proc)
    failing_convergence(errors.CudaOutOfMemory("CUDA out of memory; use a smaller --batch-size"))
    assert cli("convergence", "run", "-q").returncode == 75


def test_exit_codes_are_documented():
    doc = errors.__doc__
    for code in ("2 ", "70", "71", "74", "75", "128+N", "130", "143"):
        assert code in doc, code
