"""A damaged prepared dataset is one DatasetError line in every command that opens it (issue 9, item 12).

Before, keys missing or of the wrong type in ``dataset.yaml``, a truncated ``arrays.npz`` or arrays
of the wrong shape ended in tracebacks (KeyError, BadZipFile, IndexError deep in training). Each
case is one line: a name, what to do to a copy of a good dataset, and fragments of the message.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml

from hetfield.data.dataset import Dataset
from hetfield.data.preprocess import prepare_dataset
from hetfield.data.simulate import simulate
from hetfield.errors import DatasetError

from helpers import assert_usage_error, run_cli


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    root = tmp_path_factory.mktemp("damage")
    simulate(root / "sim", n_particles=4, n_classes=1, box=16, n_tilts=3, seed=2)
    return prepare_dataset(root / "ds", root / "sim" / "particles.star")[0]


def _yaml(key, value=None, delete=False):
    def edit(ds):
        meta = yaml.safe_load((ds / "dataset.yaml").read_text())
        node, *path = key.split(".")
        parent = meta
        parts = key.split(".")
        for p in parts[:-1]:
            parent = parent[p]
        if delete:
            del parent[parts[-1]]
        else:
            parent[parts[-1]] = value
        (ds / "dataset.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return edit


def _arrays(change):
    def edit(ds):
        with np.load(ds / "arrays.npz") as z:
            arrays = {k: z[k] for k in z.files}
        change(arrays)
        np.savez(ds / "arrays.npz", **arrays)
    return edit


def _truncate(name, keep=0.5):
    def edit(ds):
        data = (ds / name).read_bytes()
        (ds / name).write_bytes(data[: int(len(data) * keep)])
    return edit


def _write(name, text):
    def edit(ds):
        (ds / name).write_text(text)
    return edit


def _object_array(ds):
    with np.load(ds / "arrays.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["rotation"] = np.array([{"a": 1}] * 2, dtype=object)
    np.savez(ds / "arrays.npz", **arrays)


def _star_rows(ds):
    lines = (ds / "particles.star").read_text().splitlines()
    (ds / "particles.star").write_text("\n".join(lines[:-3]) + "\n")


# (name, damage, fragments, where the error shows: "open" or "table")
CASES = [
    ("key box missing", _yaml("box", delete=True), ["dataset.yaml", "key box is missing", "--force"], "open"),
    ("box is text", _yaml("box", "abc"), ["key box holds 'abc', not an integer"], "open"),
    ("n_images is text", _yaml("n_images", "12"), ["key n_images holds '12', not an integer"], "open"),
    ("n_particles is a bool", _yaml("n_particles", True), ["key n_particles holds True"], "open"),
    ("has_poses is a number", _yaml("has_poses", 3), ["key has_poses holds 3, not true or false"], "open"),
    ("lattice inconsistent", _yaml("lattice", 20), ["lattice = 20", "lattice = box + 1"], "open"),
    ("odd box", _yaml("box", 15), ["box = 15", "even"], "open"),
    ("negative pixel size", _yaml("pixel_size_A", -2.0), ["pixel_size_A = -2.0"], "open"),
    ("std missing", _yaml("normalization.std", delete=True), ["key normalization.std is missing"], "open"),
    ("std zero", _yaml("normalization.std", 0.0), ["normalization.std = 0.0"], "open"),
    ("source is a list", _yaml("source", [1, 2]), ["key source holds [1, 2], not a mapping"], "open"),
    ("unknown reader", _yaml("source.reader", "warp9"), ["source.reader = 'warp9'"], "open"),
    ("fingerprint is a number", _yaml("fingerprint", 12), ["key fingerprint holds 12, not text"], "open"),
    ("unknown preprocessing key", _yaml("preprocessing.sharpen", True), ["preprocessing settings"], "open"),
    ("old cache format", _yaml("cache_format", 2), ["cache format 2", "--force"], "open"),
    ("yaml is a list", _write("dataset.yaml", "- 1\n- 2\n"), ["not a hetfield dataset summary"], "open"),
    ("unreadable yaml", _write("dataset.yaml", "box: [unclosed\n"), ["unreadable YAML"], "open"),
    ("more images than the cache", _yaml("n_images", 13), ["images.npy", "does not match dataset.yaml"], "open"),
    ("truncated arrays.npz", _truncate("arrays.npz"), ["arrays.npz: damaged or truncated"], "open"),
    ("empty arrays.npz", _truncate("arrays.npz", 0.0), ["arrays.npz: damaged or truncated"], "open"),
    ("array missing", _arrays(lambda a: a.pop("rotation")), ["array 'rotation' is missing"], "open"),
    ("array dtype", _arrays(lambda a: a.update(origin_px=a["origin_px"].astype(np.float64))),
     ["array 'origin_px' is float64 (12, 2), expected float32 (12, 2)"], "open"),
    ("array shape", _arrays(lambda a: a.update(rotation=a["rotation"].reshape(12, 9))),
     ["array 'rotation' is float32 (12, 9), expected float32 (12, 3, 3)"], "open"),
    ("NaN defocus", _arrays(lambda a: a["defocus_u_A"].__setitem__(3, np.nan)), ["'defocus_u_A' holds NaN"], "open"),
    ("offsets inconsistent", _arrays(lambda a: a.update(particle_offsets=np.array([0, 3, 3, 9, 12]))),
     ["particle_offsets do not split 12 images into 4 particles"], "open"),
    ("particle disagrees", _arrays(lambda a: a["particle"].__setitem__(0, 2)), ["'particle' disagrees"], "open"),
    ("object array (pickle)", _object_array, ["arrays.npz: damaged or truncated", "pickle"], "open"),
    ("truncated images.npy", _truncate("images.npy"), ["images.npy: damaged"], "open"),
    ("images.npy is text", _write("images.npy", "hello"), ["images.npy: damaged"], "open"),
    ("particles.star missing", lambda ds: (ds / "particles.star").unlink(), ["missing particles.star"], "open"),
    ("particles.star short", _star_rows, ["particles.star: 9 rows, but dataset.yaml says 12 images"], "table"),
    ("particles.star garbage", _write("particles.star", "data_images\nloop_\n_particle\n1\n"),
     ["particles.star: columns", "are missing"], "table"),
]


@pytest.mark.parametrize("name,damage,fragments,where", CASES, ids=[c[0] for c in CASES])
def test_damaged_dataset_is_one_dataset_error(good, tmp_path, name, damage, fragments, where):
    ds = tmp_path / "ds"
    shutil.copytree(good, ds)
    damage(ds)
    with pytest.raises(DatasetError) as e:
        opened = Dataset.open(ds)
        if where == "table":
            opened.table
    msg = str(e.value)
    assert where == "open" or Dataset.open(ds)  # table damage does not stop opening
    for f in fragments:
        assert f in msg, (f, msg)
    assert "\n" not in msg and ("--force" in msg or "setup" in msg), msg


def test_every_command_that_opens_it_answers_in_one_line(good, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(good, ds)
    _truncate("arrays.npz")(ds)
    for args in (("inspect", ds), ("train", tmp_path / "run", "--data", ds, "--epochs", "1"),
                 ("setup", ds, "--particles", good.parent / "sim" / "particles.star")):
        proc = run_cli(*args)
        if args[0] == "setup":  # same inputs, damaged cache: setup rebuilds it
            assert proc.returncode == 0, proc.stderr
            Dataset.open(ds)
            continue
        assert_usage_error(proc, "arrays.npz", "damaged or truncated", "--force")
    assert not (tmp_path / "run").exists()
    _star_rows(ds)
    assert_usage_error(run_cli("inspect", ds), "particles.star", "9 rows")


def test_the_corpus_is_large():
    assert len(CASES) >= 30


def test_metadata_alone_opens_for_analyses_but_not_for_training(good, tmp_path):
    """Without images.npy a dataset opens with images=False (what analyses and the pipeline's ANALYZE
    use), with the same names and table; opening it for images names the missing file."""
    from hetfield.data.cache import METADATA_PATHS, SOURCE_DIR

    meta_dir = tmp_path / "metadata"
    meta_dir.mkdir()
    for name in METADATA_PATHS:
        (shutil.copytree if name == SOURCE_DIR else shutil.copy)(good / name, meta_dir / name)
    full, light = Dataset.open(good), Dataset.open(meta_dir, images=False)
    assert light.images is None and full.images is not None
    assert light.particle_names == full.particle_names and light.fingerprint == full.fingerprint
    assert light.table["source_row"].tolist() == full.table["source_row"].tolist()
    assert all(f.is_file() for f in light.source_info.files.values())  # what STAR exports are written from
    with pytest.raises(DatasetError, match=r"incomplete dataset \(missing images\.npy\)"):
        Dataset.open(meta_dir)
    (meta_dir / "arrays.npz").unlink()
    with pytest.raises(DatasetError, match=r"missing arrays\.npz"):
        Dataset.open(meta_dir, images=False)
