"""setup's options mean what they say (issue 9, items 2, 3, 7, 9, 11, 12).

Each test names the defect it guards against; each failed on the code before the fix.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from hetfield.data.dataset import Dataset
from hetfield.data.cache import PreprocessSettings
from hetfield.data.preprocess import prepare_dataset
from hetfield.data.simulate import simulate
from hetfield.errors import ConfigError, DatasetError
from hetfield.io.star.read import read_star

TESTS_IO = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "io")
sys.path.insert(0, TESTS_IO)

from iohelpers import write_image_series  # noqa: E402

D = np.diag([1.0, 1.0, -1.0]).astype(np.float32)


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("opts") / "sim"
    simulate(out, n_particles=6, n_classes=1, box=16, n_tilts=3, seed=5)
    return out


@pytest.fixture(scope="module")
def base(sim, tmp_path_factory):
    return Dataset.open(prepare_dataset(tmp_path_factory.mktemp("base") / "ds", sim / "particles.star")[0])


# --- item 2: --angpix keeps shifts in pixels ---------------------------------------------------


def test_angpix_keeps_pixel_shifts(tmp_path):
    """Before: origins in px were converted with the file's pixel size and back with the new one,
    so --angpix 1.5 on a 3 Å file doubled every shift."""
    star = write_image_series(tmp_path / "s", box=8)  # _rlnOriginX/Y = 1, -1 px at 3 Å/px
    ref = Dataset.open(prepare_dataset(tmp_path / "ref", star)[0])
    half = Dataset.open(prepare_dataset(tmp_path / "half", star, settings=PreprocessSettings(angpix_A=1.5))[0])
    np.testing.assert_allclose(ref.arrays["origin_px"], [[1.0, -1.0]] * 12)
    np.testing.assert_allclose(half.arrays["origin_px"], ref.arrays["origin_px"])
    assert half.pixel_size_A == 1.5 and (half.arrays["pixel_size_A"] == 1.5).all()
    assert half.table["origin_x_A"].iloc[0] == pytest.approx(1.5)  # 1 px at the new pixel size


def test_angpix_keeps_angstrom_shifts_in_pixels_too(sim, base, tmp_path):
    ds = Dataset.open(prepare_dataset(tmp_path / "ds", sim / "particles.star", settings=PreprocessSettings(angpix_A=4.0))[0])
    np.testing.assert_allclose(ds.arrays["origin_px"], base.arrays["origin_px"], atol=1e-6)


# --- items 3 and 9: overrides, the hand flip and the reader are part of the dataset ------------


def test_overrides_are_applied_recorded_and_fingerprinted(sim, base, tmp_path):
    s = PreprocessSettings(ctf_premultiplied=True, dose_weighted=True, flip_hand=True)
    ds = Dataset.open(prepare_dataset(tmp_path / "ds", sim / "particles.star", settings=s)[0])
    assert ds.arrays["ctf_premultiplied"].all() and ds.arrays["dose_weighted"].all()
    assert not base.arrays["ctf_premultiplied"].any() and not base.arrays["dose_weighted"].any()
    np.testing.assert_allclose(ds.arrays["rotation"], D @ base.arrays["rotation"] @ D, atol=1e-5)
    np.testing.assert_allclose(ds.arrays["origin_px"], base.arrays["origin_px"])
    # premultiplied images are not inverted: the cache holds the opposite sign of the default
    np.testing.assert_allclose(ds.images, -np.asarray(base.images), atol=1e-5)
    flags = ds.meta["flags"]
    assert flags["ctf_premultiplied"] == {"value": True, "from": "--ctf-premultiplied", "images_true": 18}
    assert flags["dose_weighted"]["from"] == "--dose-weighted" and flags["flip_hand"] == {"value": True, "from": "--flip-hand"}
    assert base.meta["flags"]["flip_hand"] == {"value": False, "from": "file"}
    assert ds.fingerprint != base.fingerprint
    ds.check_fresh()  # the stored identity reproduces the fingerprint


@pytest.mark.parametrize("change", [
    {"source": "relion"},
    {"settings": PreprocessSettings(flip_hand=True)},
    {"settings": PreprocessSettings(ctf_premultiplied=True)},
    {"settings": PreprocessSettings(dose_weighted=False)},
    {"settings": PreprocessSettings(angpix_A=4.0)},
])
def test_another_reader_flip_or_override_is_another_dataset(sim, tmp_path, change):
    """Before: setup with another --source reused the old cache."""
    prepare_dataset(tmp_path / "ds", sim / "particles.star")
    with pytest.warns(UserWarning) if change.get("source") else _nothing():
        with pytest.raises(DatasetError, match="already holds a dataset prepared from other inputs or settings.*--force"):
            prepare_dataset(tmp_path / "ds", sim / "particles.star", **change)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_setup_cli_options_and_help(sim, tmp_path, monkeypatch):
    from helpers import run_cli

    monkeypatch.setenv("COLUMNS", "240")  # rich shortens option names in narrow terminals

    proc = run_cli("setup", tmp_path / "ds", "--particles", sim / "particles.star", "--no-ctf-premultiplied",
                   "--dose-weighted", "--flip-hand")
    assert proc.returncode == 0, proc.stderr
    ds = Dataset.open(tmp_path / "ds")
    assert ds.meta["flags"]["ctf_premultiplied"]["from"] == "--no-ctf-premultiplied"
    assert ds.arrays["dose_weighted"].all() and ds.meta["preprocessing"]["flip_hand"] is True
    out = " ".join(run_cli("setup", "--help").stdout.split())
    for fragment in ("--ctf-premultiplied", "--no-dose-weighted", "--flip-hand", "as the file says",
                     "Shifts keep their size in pixels", "deleted once the new inputs are validated"):
        assert fragment in out, fragment
    shown = " ".join(run_cli("inspect", tmp_path / "ds").stdout.split())
    assert "hand flipped" in shown and "True (--flip-hand)" in shown and "why this reader" in shown


# --- item 7: --force does not need twice the disk; leftovers of killed runs are removed -------


def test_force_removes_the_old_dataset_only_after_validation(sim, tmp_path):
    out = tmp_path / "ds"
    prepare_dataset(out, sim / "particles.star")
    # bad input with --force: the old dataset stays
    with pytest.raises(ConfigError):
        prepare_dataset(out, sim / "particles.star", settings=PreprocessSettings(downsample=15), force=True)
    Dataset.open(out)
    seen = []

    def progress(done, total):  # called while the new images are written
        seen.append((out.exists(), sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp"))))

    prepare_dataset(out, sim / "particles.star", settings=PreprocessSettings(invert=False), force=True, progress=progress)
    assert seen and all(not exists and tmps for exists, tmps in seen), seen  # the old one was gone while writing
    assert Dataset.open(out).meta["preprocessing"]["invert"] is False


def test_leftovers_of_killed_setups_are_removed(sim, tmp_path):
    import socket

    host = socket.gethostname().split(".")[0]
    dead = 2**22 + 12345  # above pid_max defaults: no such process
    stale_tmp = tmp_path / f".ds.{host}-{dead}.abcd.tmp"
    stale_old = tmp_path / f".ds.{host}-{dead}.efgh.old"
    other = tmp_path / f".other.{host}-{dead}.ijkl.tmp"
    for d in (stale_tmp, stale_old, other):
        d.mkdir()
        (d / "images.npy").write_bytes(b"\0" * 1000)
    prepare_dataset(tmp_path / "ds", sim / "particles.star")
    assert not stale_tmp.exists() and not stale_old.exists()
    assert other.exists()  # another path's temporaries are not ours to judge
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".ds"))
    assert left == [".ds.lock"]


# --- item 11: a lock beside the dataset; particles.star round-trips ----------------------------


def test_second_setup_into_a_locked_dataset_fails_at_once(sim, tmp_path):
    from hetfield.io.lock import exclusive_lock

    with exclusive_lock(tmp_path / ".ds.lock", "test", DatasetError, "-"):
        with pytest.raises(DatasetError, match=r"DATASET .*ds is in use by hetfield pid \d+ .*wait for the other "
                                               r"`hetfield setup` to finish, or choose another DATASET"):
            prepare_dataset(tmp_path / "ds", sim / "particles.star")
    assert not (tmp_path / "ds").exists()
    prepare_dataset(tmp_path / "ds", sim / "particles.star")


def test_two_setups_of_different_inputs_cli(sim, tmp_path):
    """Before: both exited 0 and the last one won. A second process holds the lock here, as a
    running setup would."""
    from helpers import assert_usage_error, run_cli

    code = ("import sys, time; from hetfield.io.lock import exclusive_lock; from hetfield.errors import DatasetError\n"
            "with exclusive_lock(sys.argv[1], 'x', DatasetError, '-'):\n    print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / ".ds.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        proc = run_cli("setup", tmp_path / "ds", "--particles", sim / "particles.star")
        assert_usage_error(proc, "DATASET", "is in use by hetfield pid", "wait for the other")
        assert not (tmp_path / "ds").exists()
    finally:
        holder.kill()
        holder.wait()


def test_particles_star_reads_back_with_our_reader(sim, base):
    """Before: empty group names were written as "" and our reader rejected the file."""
    from hetfield.table import IMAGE_COLUMNS
    from hetfield.io.readers import read_particles

    star = read_star(base.path / "particles.star", string_columns={"particle_name", "group", "image_path"})
    df = star.blocks["images"].df
    assert list(df.columns) == list(IMAGE_COLUMNS) and len(df) == base.n_images
    assert (df["group"] == "").all()  # the simulator's image series carry no group name
    t = read_particles(sim / "particles.star").images  # what setup wrote, value for value
    for c in IMAGE_COLUMNS:
        if IMAGE_COLUMNS[c] == "float64":
            np.testing.assert_array_equal(df[c].to_numpy(np.float64), t[c].to_numpy(np.float64))
        elif IMAGE_COLUMNS[c] == "bool":  # written as 0/1
            assert ((df[c].to_numpy() != 0) == t[c].to_numpy()).all(), c
        else:
            assert df[c].astype(str).tolist() == t[c].astype(str).tolist(), c


# --- item 12: names stay text ------------------------------------------------------------------


def test_numeric_looking_group_names_stay_text_everywhere(tmp_path):
    """Before: 000123, 0123 and 123 were read back from particles.star as the number 123."""
    from hetfield.io.readers import export_particles, read_particles

    star = write_image_series(tmp_path / "s", n_particles=3, n_tilts=2)
    text = star.read_text()
    for i, name in enumerate(["000123", "0123", "123"]):
        text = text.replace(f"p{i:03d}\n", f"{name}\n")
    star.write_text(text)
    names = ["000123", "0123", "123"]
    t = read_particles(star)
    assert t.images["particle_name"].drop_duplicates().tolist() == names
    ds = Dataset.open(prepare_dataset(tmp_path / "ds", star)[0])
    assert ds.particle_names == names
    assert ds.table["particle_name"].tolist() == [n for n in names for _ in range(2)]
    out = export_particles(ds.source_info, ds.table.loc[ds.table.particle == 1, "source_row"], tmp_path / "one.star")
    assert read_particles(out[0], datadir=tmp_path / "s").images["particle_name"].tolist() == ["0123", "0123"]


# --- item 12: an output location that cannot be used fails before any work ---------------------


def test_output_location_is_checked_first(sim, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"DATASET .*file/ds: .*file is a file, so no directory can be made below it"):
        prepare_dataset(blocker / "ds", sim / "missing.star")  # the location is checked before the input
    with pytest.raises(ConfigError, match="is a file, not a directory; choose another DATASET path"):
        prepare_dataset(blocker, sim / "particles.star")
    deep = tmp_path / "a" / "b" / "ds"
    with pytest.raises(Exception):
        prepare_dataset(deep, sim / "missing.star")
    assert not (tmp_path / "a").exists(), "bad input leaves no parent directories behind"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_output_location_without_permission(sim, tmp_path):
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="no permission to write in .*ro; choose a DATASET path"):
            prepare_dataset(locked / "ds", sim / "particles.star")
    finally:
        locked.chmod(0o700)


def test_not_a_dataset_is_never_replaced(sim, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(DatasetError, match="holds files that are not a hetfield dataset; choose another DATASET"):
        prepare_dataset(out, sim / "particles.star", force=True)
    assert (out / "notes.txt").read_text() == "precious"
    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_dataset(empty, sim / "particles.star")  # an empty directory made for it is fine
    Dataset.open(empty)
    shutil.rmtree(empty)
