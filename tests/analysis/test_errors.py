"""Every user mistake in the analysis commands: exit code 2 and one line saying what to do."""

from __future__ import annotations

import contextlib
import io
import sys
from types import SimpleNamespace

import pytest

from helpers import assert_usage_error, run_cli


def cli(*args):
    """The CLI in this process (fast): returns an object like subprocess.CompletedProcess."""
    from hetfield.cli.app import main

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


def test_missing_run_in_a_real_process(tmp_path):
    proc = run_cli("analyze", tmp_path / "nope")
    assert_usage_error(proc, "no such run directory")


@pytest.mark.parametrize("command", ["analyze", "convergence"])
def test_not_a_run(tmp_path, command):
    (tmp_path / "empty").mkdir()
    assert_usage_error(cli(command, tmp_path / "empty"), "not a hetfield run")


@pytest.mark.slow
def test_bad_epochs_classes_and_files(run_mixture, tmp_path):
    assert_usage_error(cli("analyze", run_mixture, "--epoch", "99", "-q"), "--epoch 99: not saved", "saved epochs: ")
    assert_usage_error(cli("analyze", run_mixture, "--epoch", "soon", "-q"), "--epoch 'soon'")
    assert_usage_error(cli("analyze", run_mixture, "--class-idx", "2", "-q"), "--class-idx 2", "0..1")
    assert_usage_error(cli("analyze", run_mixture, "--class-idx", "first", "-q"), "--class-idx 'first'")
    assert_usage_error(cli("analyze", run_mixture, "--epoch", "auto", "--convergence", tmp_path / "none", "-q"),
                       "no convergence.json", "hetfield convergence")
    assert_usage_error(cli("analyze", run_mixture, "--truth", tmp_path / "nothing", "-q"), "--truth")
    assert_usage_error(cli("analyze", run_mixture, "--k", "0", "-q"), "--k 0")
    assert_usage_error(cli("convergence", run_mixture, "--every", "0", "-q"), "--every 0")
    bad = tmp_path / "z.txt"
    bad.write_bytes(b"\x00\x01binary\xff")
    assert_usage_error(cli("volumes", run_mixture, "--out", tmp_path / "v", "--z", bad, "-q"), "has no latent")
    assert_usage_error(cli("volumes", run_mixture, "--out", tmp_path / "v", "-q"), "nothing to decode")
    assert_usage_error(cli("volumes", run_mixture, "--out", tmp_path / "v", "--class-idx", "5", "-q"), "--class-idx 5")
    assert_usage_error(cli("volumes", run_mixture, "--out", tmp_path / "v", "--class-idx", "0", "--box", "15", "-q"), "--box 15")
    assert not (tmp_path / "v").exists()  # a failure leaves no output behind


@pytest.mark.slow
def test_unreadable_latent_files(run_latent, tmp_path):
    bad = tmp_path / "z.txt"
    bad.write_text("0.1 0.2\nnot numbers\n")
    assert_usage_error(cli("volumes", run_latent, "--out", tmp_path / "v", "--z", bad, "-q"), "--z", "cannot read latent points")
    wrong = tmp_path / "w.txt"
    wrong.write_text("0.1 0.2 0.3\n")
    assert_usage_error(cli("volumes", run_latent, "--out", tmp_path / "v", "--z", wrong, "-q"), "3 numbers", "zdim")
    idx = tmp_path / "i.txt"
    idx.write_text("0\n1000\n")
    assert_usage_error(cli("volumes", run_latent, "--out", tmp_path / "v", "--particle-index", idx, "-q"), "1000", "out of range")
    assert_usage_error(cli("volumes", run_latent, "--out", tmp_path / "v", "--z", wrong, "--pc", "1", "-q"), "alternatives")
    assert_usage_error(cli("volumes", run_latent, "--out", tmp_path / "v", "--pc", "3", "-q"), "--pc 3")
    assert_usage_error(cli("volumes", run_latent, "--out", tmp_path / "v", "--pc", "1", "--epoch", "x", "-q"), "epoch 'x'")


def test_backproject_errors(tmp_path, two_class):
    assert_usage_error(cli("backproject", tmp_path / "nods", "--out", tmp_path / "bp", "-q"), "no prepared dataset")
    idx = tmp_path / "i.txt"
    idx.write_text("0\n99999\n")
    assert_usage_error(cli("backproject", two_class / "dataset", "--out", tmp_path / "bp", "--particles", idx, "-q"), "99999")
    assert_usage_error(cli("backproject", two_class / "dataset", "--out", tmp_path / "bp", "--lowpass-A", "1", "-q"), "--lowpass-A 1")
    assert_usage_error(cli("backproject", two_class / "dataset", "--out", tmp_path / "bp", "--max-images", "0", "-q"), "--max-images 0")
    assert_usage_error(cli("backproject", two_class / "dataset", "--out", tmp_path / "bp", "--ref", tmp_path / "x.mrc", "-q"), "--ref")
    assert not (tmp_path / "bp").exists()
