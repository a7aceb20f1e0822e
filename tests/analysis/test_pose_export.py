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
