"""Learned poses go into the STAR files analyze writes, in the RELION convention our readers invert:
reading an export back gives the learned rotation and origin of every image (SPA and tilt series)."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import simulate_and_setup

from hetfield.analysis.pose_export import learned_poses, write_poses_into
from hetfield.analysis.pose_metrics import geodesic_deg
from hetfield.data.dataset import Dataset
from hetfield.imaging.rotations import euler_to_matrix, random_rotations
from hetfield.io.readers import export_particles, read_particles


@pytest.mark.parametrize("mode, n_tilts", [("spa", 1), ("tilt", 3)])
def test_exported_poses_read_back(tmp_path, mode, n_tilts):
    root = simulate_and_setup(tmp_path, "d", n_particles=6, n_classes=1, n_tilts=n_tilts, box=16, seed=2, mode=mode)
    ds = Dataset.open(root / "dataset")
    rng = np.random.default_rng(0)
    lat = {
        "rotation": random_rotations(ds.n_images, rng).astype(np.float32),
        "origin_px": rng.uniform(-2, 2, (ds.n_images, 2)).astype(np.float32),
    }
    poses = learned_poses(ds, lat)
    # The particles 1 and 4, all their images: rows in file order.
    chosen = np.isin(np.asarray(ds.arrays["particle"]), [1, 4])
    rows = np.unique(ds.table["source_row"].to_numpy(np.int64)[chosen])
    (path,) = export_particles(ds.source_info, rows, tmp_path / "out.star")
    assert write_poses_into(ds, poses, path, rows)
    back = read_particles(path, datadir=root / "sim", check_images=False).images
    a = euler_to_matrix(back["euler_rot_deg"], back["euler_tilt_deg"], back["euler_psi_deg"])
    img = np.flatnonzero(chosen)
    assert len(back) == len(img)
    np.testing.assert_allclose(a, lat["rotation"][img], atol=2e-5)  # float32 poses, written as shortest reprs
    origin_px = back[["origin_x_A", "origin_y_A"]].to_numpy() / ds.pixel_size_A
    np.testing.assert_allclose(origin_px, lat["origin_px"][img], atol=1e-4)
    # The input poses were different: the export did replace them.
    assert geodesic_deg(np.asarray(ds.arrays["rotation"])[img], lat["rotation"][img]).min() > 1.0


def test_pose_truth_pools_every_image_after_each_class_alignment():
    """K > 1: each class is aligned on its own (its own frame) and the run's figure is the median over
    every image of those errors, as the data's bound pools (benchmarks/abinit.py), not a mean of the
    classes' medians: a class with half its particles at a near-symmetric mate pulls that mean far
    above what most images show."""
    from types import SimpleNamespace

    from hetfield.analysis.pose_export import pose_truth
    from hetfield.imaging.rotations import rotvec_to_matrix

    rng = np.random.default_rng(0)
    n = 200
    true = random_rotations(n, rng)
    cls = np.repeat([0, 1], n // 2)
    frame = [random_rotations(1, rng)[0], random_rotations(1, rng)[0]]  # each class's own global turn
    jitter = rotvec_to_matrix(rng.normal(size=(n, 3)) * np.radians(2.0))
    est = true @ np.stack([frame[c] for c in cls]) @ jitter
    flipped = np.flatnonzero(cls == 1)[:40]  # 40 % of class 1 at a 90° mate
    est[flipped] = est[flipped] @ rotvec_to_matrix(np.array([[0.0, 0.0, np.pi / 2]]))[0]
    ds = SimpleNamespace(particle_names=[f"p{i}" for i in range(n)], has_poses=False, offsets=np.arange(n + 1),
                         arrays={"particle": np.arange(n), "stage_tilt_deg": np.zeros(n)})
    ctx = SimpleNamespace(dataset=ds, n_classes=2, latent=lambda epoch: {"rotation": est})
    truth = SimpleNamespace(has_poses=True, rotations_for=lambda names: true)
    out = pose_truth(ctx, truth, 1, cls, [])
    per = out["per_class"]
    assert per["0"]["median_error_deg"] < 5 and per["0"]["fraction_within_10deg"] == 1.0
    assert per["1"]["fraction_within_10deg"] == pytest.approx(0.6)
    assert out["class_aligned_fraction_within_10deg"] == pytest.approx(0.8)
    assert out["class_aligned_median_error_deg"] < 5  # 80 % of the images are within a few degrees
