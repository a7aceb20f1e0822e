"""Bad training configuration fails before any training, with one clear line and exit code 2."""

from __future__ import annotations

import pytest

from helpers import assert_usage_error, run_cli, simulate_and_setup


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return simulate_and_setup(tmp_path_factory.mktemp("cfg"), "d", n_particles=8, n_classes=1, n_tilts=3, box=24, seed=5)


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--zdim", "-1"], ["--zdim", "at least 0"]),
        (["--n-classes", "0"], ["--n-classes", "at least 1"]),
        (["--beta", "-0.5"], ["--beta", "zero or positive"]),
        (["--epochs", "0"], ["--epochs", "at least 1"]),
        (["--lr", "0"], ["--lr", "positive"]),
        (["--conf-estimation", "magic"], ["--conf-estimation", "encoder, autodecoder, none"]),
        (["--pose-estimation", "magic"], ["--pose-estimation", "fixed, refine, abinit"]),
        (["--pose-estimation", "abinit", "--epochs", "5"], ["--epochs", "--pose-search-epochs 6"]),
        (["--pose-estimation", "abinit", "--pose-search-base-nside", "3"], ["--pose-search-base-nside", "1, 2, 4 or 8"]),
        (["--pose-estimation", "abinit", "--pose-search-epochs", "0"], ["--pose-search-epochs", "1 or more"]),
        (["--pose-estimation", "abinit", "--pose-search-refine-rounds", "-1"], ["--pose-search-refine-rounds", "0 or more"]),
        (["--field-prior-tau2-fudge", "0"], ["--field-prior-tau2-fudge", "positive"]),
        (["--field-prior-precondition", "0.5"], ["--field-prior-precondition", "at least 1"]),
        (["--conf-estimation", "none", "--zdim", "4"], ["--zdim", "homogeneous"]),
        (["--device", "tpu"], ["--device", "auto, cpu, cuda"]),
        (["--bogus-option", "1"], ["No such option", "--bogus-option"]),
    ],
)
def test_bad_options(dataset, tmp_path, args, fragments):
    proc = run_cli("train", tmp_path / "run", "--data", dataset / "dataset", *args)
    assert_usage_error(proc, *fragments)
    assert not (tmp_path / "run").exists()


def _exit_code_and_torch(argv: list[str]) -> tuple[list[str], str]:
    """``hetfield ARGV`` in a fresh interpreter: (its exit code and whether torch was imported, stderr)."""
    import subprocess
    import sys

    code = ("import runpy, sys\n"
            f"sys.argv = {['hetfield', *argv]!r}\n"
            "try:\n    runpy.run_module('hetfield.cli.app', run_name='__main__')\n"
            "except SystemExit as stop:\n    print(stop.code, 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return proc.stdout.split(), proc.stderr


@pytest.mark.parametrize("args", [["--data", "{ds}", "--zdim", "-1"], ["--data", "{nowhere}"]])
def test_a_bad_option_or_dataset_is_refused_before_torch_is_imported(dataset, tmp_path, args):
    """Answered in a fraction of a second: importing torch costs 2.6 s of CPU (4.7 s with the
    optimisers' torch._dynamo), more than the whole check."""
    argv = ["train", str(tmp_path / "run")] + [a.format(ds=dataset / "dataset", nowhere=tmp_path / "nowhere") for a in args]
    out, err = _exit_code_and_torch(argv)
    assert out == ["2", "False"], (out, err)
    assert "hetfield: error:" in err


def test_a_run_directory_in_the_way_is_refused_before_torch_is_imported(dataset, tmp_path):
    (tmp_path / "run").write_text("not a run\n")
    out, err = _exit_code_and_torch(["train", str(tmp_path / "run"), "--data", str(dataset / "dataset")])
    assert out == ["2", "False"], (out, err)
    assert "is not a directory" in err and (tmp_path / "run").read_text() == "not a run\n"


def test_missing_dataset(tmp_path):
    proc = run_cli("train", tmp_path / "run", "--data", tmp_path / "nowhere")
    assert_usage_error(proc, "nowhere", "hetfield setup")
    assert not (tmp_path / "run").exists()


def test_stale_dataset(tmp_path):
    d = simulate_and_setup(tmp_path, "d", n_particles=6, n_classes=1, n_tilts=3, box=24, seed=6)
    star = d / "sim" / "particles.star"
    star.write_text(star.read_text() + "\n")  # the user edited the particles after setup
    proc = run_cli("train", tmp_path / "run", "--data", d / "dataset")
    assert_usage_error(proc, "stale", "--force")
    assert not (tmp_path / "run").exists()


def test_config_file_and_overrides(dataset, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("zdim: 3\nepochs: 5\nfield-hidden: 16\nfield_layers: 1\nenc_hidden: 16\nenc_grid: 3\n")
    proc = run_cli("train", tmp_path / "run", "--data", dataset / "dataset", "--config", base, "--epochs", "1", "--quiet")
    assert proc.returncode == 0, proc.stderr
    import yaml

    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["train"]["zdim"] == 3 and cfg["train"]["epochs"] == 1 and cfg["train"]["field_hidden"] == 16
    assert cfg["dataset"]["fingerprint"] and cfg["run_id"] == "run" and cfg["command"].startswith("hetfield train")


@pytest.mark.parametrize(
    "text, fragment",
    [("zdim: [unclosed\n", "unreadable YAML"), ("zdimm: 3\n", "unknown option(s) zdimm"), ("- 1\n- 2\n", "mapping")],
)
def test_bad_config_file(dataset, tmp_path, text, fragment):
    base = tmp_path / "base.yaml"
    base.write_text(text)
    proc = run_cli("train", tmp_path / "run", "--data", dataset / "dataset", "--config", base)
    assert_usage_error(proc, str(base), fragment)


def test_bad_value_in_config_file_names_the_file(dataset, tmp_path):
    """A value read from --config is named in that file, not as an option the user did not type; the
    same value given on the command line (overriding a good one in the file) is named as the option."""
    base = tmp_path / "base.yaml"
    base.write_text("epochs: 2\nlr: -1\n")
    proc = run_cli("train", tmp_path / "run", "--data", dataset / "dataset", "--config", base)
    assert_usage_error(proc, f"--config {base}: lr -1", "fix lr in that file")
    assert "--lr" not in proc.stderr
    base.write_text("epochs: 2\nlr: 0.001\n")
    proc = run_cli("train", tmp_path / "run", "--data", dataset / "dataset", "--config", base, "--lr", "-1")
    assert_usage_error(proc, "--lr -1.0", "positive")
    assert str(base) not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_resume_with_changed_model_is_refused(dataset, tmp_path):
    first = run_cli("train", tmp_path / "run", "--data", dataset / "dataset", "--zdim", "2", "--epochs", "1", "--field-hidden", "16", "--enc-hidden", "16", "--quiet")
    assert first.returncode == 0, first.stderr
    proc = run_cli("train", tmp_path / "run", "--data", dataset / "dataset", "--load", "latest", "--zdim", "3")
    assert_usage_error(proc, "zdim", "differ from the run being resumed")
    proc = run_cli("train", tmp_path / "run", "--data", dataset / "dataset", "--load", "7")
    assert_usage_error(proc, "--load 7", "saved epochs")


def test_pose_estimation_needs_poses_except_abinit():
    from types import SimpleNamespace

    from hetfield.errors import ConfigError
    from hetfield.train.config import TrainConfig
    from hetfield.train.prepare import check_pose_estimation

    posed, bare = SimpleNamespace(has_poses=True), SimpleNamespace(has_poses=False)
    for mode in ("fixed", "refine"):
        with pytest.raises(ConfigError, match=f"--pose-estimation {mode}: ds has no poses; use --pose-estimation abinit"):
            check_pose_estimation(TrainConfig(pose_estimation=mode), bare, "ds")
        check_pose_estimation(TrainConfig(pose_estimation=mode), posed, "ds")
    check_pose_estimation(TrainConfig(pose_estimation="abinit"), bare, "ds")  # input poses are never read
