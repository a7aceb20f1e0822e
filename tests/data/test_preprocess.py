"""setup's preprocessing: the numbers in the cache, the fingerprint, reuse and downsampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hetfield.data import preprocess
from hetfield.data.dataset import Dataset
from hetfield.data.cache import PreprocessSettings
from hetfield.data.preprocess import prepare_dataset
from hetfield.data.transform import contrast_signs
from hetfield.data.simulate import simulate
from hetfield.errors import DatasetError
from hetfield.imaging.hartley import fft2_center, symmetrize
from hetfield.imaging.window import soft_circular_window
from hetfield.io.mrc import open_stack


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "sim"
    simulate(out, n_particles=8, n_classes=2, box=24, n_tilts=4, seed=3)
    return out


def _raw_images(ds):
    df = ds.table
    return np.stack([open_stack(p).read([i])[0] for p, i in zip(df["image_path"], df["image_index"])])


def _expected_hartley(raw, box, out_box, sign):
    f = fft2_center(raw * soft_circular_window(raw.shape[-1])[None].astype(np.float64))
    lo = box // 2 - out_box // 2
    f = f[..., lo : lo + out_box, lo : lo + out_box]
    return sign * symmetrize(f.real - f.imag)


def test_cache_holds_windowed_inverted_normalised_hartley(sim, tmp_path):
    out, reused = prepare_dataset(tmp_path / "ds", sim / "particles.star")
    assert not reused
    ds = Dataset.open(out)
    assert ds.images.shape == (32, 25, 25) and isinstance(ds.images, np.memmap)
    std = ds.meta["normalization"]["std"]
    expected = _expected_hartley(_raw_images(ds), 24, 24, -1.0) / std  # white particles: inverted
    assert np.allclose(ds.images, expected, atol=1e-4 * np.abs(expected).max())
    # fewer than 10 000 images: the normalisation uses them all, so the cache has unit variance
    assert ds.meta["normalization"]["n_sampled_images"] == 32
    assert np.std(np.asarray(ds.images, np.float64)) == pytest.approx(1.0, rel=1e-4)
    # the summary numbers people check first
    s = ds.meta["summary"]
    assert ds.meta["n_particles"] == 8 and s["tilts_per_particle"]["min"] == 4
    assert s["dose_e_per_A2"] == [0.0, 9.0] and ds.meta["pixel_size_A"] == 8.0
    assert ds.arrays["particle_offsets"].tolist() == list(range(0, 33, 4))


def test_uninvert_and_sampled_normalisation(sim, tmp_path, monkeypatch):
    monkeypatch.setattr(preprocess, "NORM_SAMPLE_SIZE", 5)
    out, _ = prepare_dataset(tmp_path / "ds", sim / "particles.star", settings=PreprocessSettings(invert=False))
    ds = Dataset.open(out)
    assert ds.meta["normalization"]["n_sampled_images"] == 5
    std = ds.meta["normalization"]["std"]
    assert np.isfinite(std) and std > 0
    expected = _expected_hartley(_raw_images(ds), 24, 24, +1.0) / std
    assert np.allclose(ds.images, expected, atol=1e-4 * np.abs(expected).max())


def test_one_image_is_enough_for_a_finite_normalisation(tmp_path):
    simulate(tmp_path / "sim", n_particles=1, n_classes=1, box=24, mode="spa", seed=1)
    ds = Dataset.open(prepare_dataset(tmp_path / "ds", tmp_path / "sim" / "particles.star")[0])
    assert np.isfinite(ds.meta["normalization"]["std"]) and np.isfinite(ds.images).all()


def test_downsampling_is_a_fourier_crop(sim, tmp_path):
    out, _ = prepare_dataset(tmp_path / "ds", sim / "particles.star", settings=PreprocessSettings(downsample=12))
    ds = Dataset.open(out)
    assert ds.box == 12 and ds.images.shape[1:] == (13, 13)
    assert ds.pixel_size_A == pytest.approx(16.0)
    assert ds.arrays["origin_px"] == pytest.approx(Dataset.open(prepare_dataset(tmp_path / "full", sim / "particles.star")[0]).arrays["origin_px"] / 2)
    expected = _expected_hartley(_raw_images(ds), 24, 12, -1.0) / ds.meta["normalization"]["std"]
    assert np.allclose(ds.images, expected, atol=1e-4 * np.abs(expected).max())


def test_reuse_and_fingerprint(sim, tmp_path):
    out, _ = prepare_dataset(tmp_path / "ds", sim / "particles.star")
    stamp = (out / "images.npy").stat().st_mtime_ns
    again, reused = prepare_dataset(tmp_path / "ds", sim / "particles.star")
    assert reused and (out / "images.npy").stat().st_mtime_ns == stamp
    # other settings are other inputs
    with pytest.raises(DatasetError, match="--force"):
        prepare_dataset(tmp_path / "ds", sim / "particles.star", settings=PreprocessSettings(invert=False))
    _, reused = prepare_dataset(tmp_path / "ds", sim / "particles.star", settings=PreprocessSettings(invert=False), force=True)
    assert not reused
    # the source files are kept for exports, and the dataset knows when they change
    ds = Dataset.open(out)
    assert all(p.is_file() for p in ds.source_info.files.values())
    ds.check_fresh()
    stack = sorted((sim / "stacks").glob("*.mrcs"))[0]
    stack.touch()
    import os

    os.utime(stack, ns=(stack.stat().st_atime_ns, stack.stat().st_mtime_ns + 10**9))
    with pytest.raises(DatasetError, match="stale"):
        Dataset.open(out).check_fresh()


def test_premultiplied_images_are_not_inverted():
    df = pd.DataFrame({"ctf_premultiplied": [False, True, False]})
    assert contrast_signs(df, invert=True).tolist() == [-1.0, 1.0, -1.0]
    assert contrast_signs(df, invert=False).tolist() == [1.0, 1.0, 1.0]
