"""Bad inputs to ``hetfield setup`` (and reading a prepared dataset): one line, exit 2, nothing left.

Each case starts from a small simulated dataset and breaks one thing, as users' files break.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from hetfield.data.simulate import simulate

from helpers import assert_usage_error, run_cli


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pristine")
    # two stacks (images_per_stack), so that one can be broken alone
    simulate(root / "sim", n_particles=6, n_classes=1, box=24, n_tilts=3, images_per_stack=9, seed=7)
    return root / "sim"


@pytest.fixture
def sim(pristine, tmp_path) -> Path:
    shutil.copytree(pristine, tmp_path / "sim")
    return tmp_path / "sim"


def _edit_star(sim: Path, old: str, new: str, count: int = 1) -> Path:
    star = sim / "particles.star"
    text = star.read_text()
    assert old in text, old
    star.write_text(text.replace(old, new, count))
    return star


def _first_data_row(sim: Path) -> str:
    return next(line for line in (sim / "particles.star").read_text().splitlines() if "@stacks/" in line)


def _setup(sim: Path, tmp_path: Path, *extra, particles: Path | None = None):
    return run_cli("setup", tmp_path / "ds", "--particles", particles or sim / "particles.star", *extra)


def _stacks(sim: Path) -> list[Path]:
    return sorted((sim / "stacks").glob("*.mrcs"))


CASES = {}


def case(name):
    def register(fn):
        CASES[name] = fn
        return fn

    return register


@case("missing particles file")
def _(sim, tmp):
    return _setup(sim, tmp, particles=sim / "nope.star"), ["nope.star", "no such file"]


@case("empty STAR file")
def _(sim, tmp):
    (sim / "particles.star").write_text("")
    return _setup(sim, tmp), ["particles.star"]


@case("STAR without data rows")
def _(sim, tmp):
    text = (sim / "particles.star").read_text()
    (sim / "particles.star").write_text("\n".join(l for l in text.splitlines() if "@stacks/" not in l) + "\n")
    return _setup(sim, tmp), ["particles.star", "no data rows"]


@case("misspelt required column")
def _(sim, tmp):
    _edit_star(sim, "_rlnDefocusU ", "_rlnDefocusUu ")
    return _setup(sim, tmp), ["particles.star", "_rlnDefocusU"]


@case("non-numeric value")
def _(sim, tmp):
    row = _first_data_row(sim)
    fields = row.split()
    fields[2] = "abc"  # the defocus column
    _edit_star(sim, row, " ".join(fields))
    return _setup(sim, tmp), ["particles.star", "row 1"]


@case("missing stack file")
def _(sim, tmp):
    _stacks(sim)[-1].unlink()
    return _setup(sim, tmp), [_stacks_name(sim, -1), "--datadir"]


def _stacks_name(sim, i):
    return "particles_001.mrcs"


@case("index beyond the stack")
def _(sim, tmp):
    row = _first_data_row(sim)
    _edit_star(sim, row, row.replace(row.split()[0], "999@" + row.split()[0].split("@")[1], 1))
    return _setup(sim, tmp), ["999", "particles_000.mrcs"]


@case("mismatched box sizes")
def _(sim, tmp):
    second = _stacks(sim)[1]
    n = mrcfile.mmap(second, permissive=True).data.shape[0]
    with mrcfile.new(second, overwrite=True) as m:
        m.set_data(np.zeros((n, 32, 32), np.float32))
    return _setup(sim, tmp), ["particles_000.mrcs", "particles_001.mrcs", "24", "32"]


@case("NaN pixels")
def _(sim, tmp):
    with mrcfile.open(_stacks(sim)[0], mode="r+") as m:
        m.data[1, 3, 3] = np.nan
    return _setup(sim, tmp), ["NaN", "particles_000.mrcs"]


@case("truncated MRC")
def _(sim, tmp):
    path = _stacks(sim)[0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return _setup(sim, tmp), ["particles_000.mrcs"]


@case("non-positive pixel size")
def _(sim, tmp):
    text = (sim / "particles.star").read_text()
    (sim / "particles.star").write_text(text.replace(" 8.000000 ", " 0.000000 "))
    return _setup(sim, tmp), ["pixel", "positive"]


@case("duplicate images")
def _(sim, tmp):
    row = _first_data_row(sim)
    second = [l for l in (sim / "particles.star").read_text().splitlines() if "@stacks/" in l][1]
    _edit_star(sim, second, second.replace(second.split()[0], row.split()[0], 1))
    return _setup(sim, tmp), ["already used", "duplicate"]


@case("not a STAR file")
def _(sim, tmp):
    (sim / "particles.star").write_bytes(bytes(range(256)) * 4)
    return _setup(sim, tmp), ["particles.star"]


@case("unknown --source")
def _(sim, tmp):
    return _setup(sim, tmp, "--source", "warp2000"), ["--source", "image-series"]


@case("forced reader that does not fit")
def _(sim, tmp):
    return _setup(sim, tmp, "--source", "optimisation-set"), ["particles.star", "tomograms STAR", "--tomograms"]


@case("odd --downsample")
def _(sim, tmp):
    return _setup(sim, tmp, "--downsample", "15"), ["--downsample 15", "even"]


@case("--downsample larger than the box")
def _(sim, tmp):
    return _setup(sim, tmp, "--downsample", "48"), ["--downsample 48", "larger", "24"]


@case("negative --angpix")
def _(sim, tmp):
    return _setup(sim, tmp, "--angpix", "-1"), ["--angpix", "positive"]


@case("stacks not found without --datadir")
def _(sim, tmp):
    star = tmp / "elsewhere" / "particles.star"
    star.parent.mkdir()
    shutil.copy(sim / "particles.star", star)
    return _setup(sim, tmp, particles=star), ["particles_000.mrcs", "--datadir"]


@case("DATASET below a file")
def _(sim, tmp):
    (tmp / "afile").write_text("x")
    return run_cli("setup", tmp / "afile" / "ds", "--particles", sim / "particles.star"), [
        "afile is a file, so no directory can be made below it", "choose another DATASET path"]


@case("DATASET is a file")
def _(sim, tmp):
    (tmp / "ds.txt").write_text("x")
    return run_cli("setup", tmp / "ds.txt", "--particles", sim / "particles.star"), ["is a file, not a directory"]


@case("tilt series with a misspelt column")
def _(sim, tmp):
    _edit_star(sim, "_rlnAngleTilt ", "_rlnAngleTlt ")
    return _setup(sim, tmp), ["look like tilt-series images", "image-series: lacks _rlnAngleTilt", "--source"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, sim, tmp_path):
    proc, fragments = CASES[name](sim, tmp_path)
    assert_usage_error(proc, *fragments)
    assert not (tmp_path / "ds").exists(), "no half-written dataset"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds.")], "no temporary directory left"


def test_at_least_fifteen_cases():
    assert len(CASES) >= 15


def test_an_existing_dataset_is_not_replaced_without_force(sim, tmp_path):
    assert run_cli("setup", tmp_path / "ds", "--particles", sim / "particles.star").returncode == 0
    before = (tmp_path / "ds" / "dataset.yaml").read_text()
    _edit_star(sim, "_rlnVoltage", "_rlnVoltage")  # same file …
    (sim / "particles.star").write_text((sim / "particles.star").read_text() + "\n")  # … changed bytes
    proc = run_cli("setup", tmp_path / "ds", "--particles", sim / "particles.star")
    assert_usage_error(proc, "already holds", "--force")
    assert (tmp_path / "ds" / "dataset.yaml").read_text() == before
    assert run_cli("setup", tmp_path / "ds", "--particles", sim / "particles.star", "--force").returncode == 0


def test_unreadable_dataset_yaml(sim, tmp_path):
    assert run_cli("setup", tmp_path / "ds", "--particles", sim / "particles.star").returncode == 0
    (tmp_path / "ds" / "dataset.yaml").write_text("box: [unclosed\n")
    assert_usage_error(run_cli("inspect", tmp_path / "ds"), "dataset.yaml", "unreadable YAML")
    assert_usage_error(run_cli("train", tmp_path / "run", "--data", tmp_path / "ds"), "dataset.yaml", "unreadable YAML")
    assert not (tmp_path / "run").exists()


def test_help_is_fast_because_nothing_heavy_is_imported():
    """`hetfield --help` must not import torch, pandas, sklearn or matplotlib (measured: 0.25 s)."""
    import subprocess
    import sys

    code = "import sys, hetfield.cli.app; print(sorted(m for m in ('torch', 'pandas', 'sklearn', 'matplotlib', 'umap', 'starfile') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
