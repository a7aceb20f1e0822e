"""Pose errors after the best global rotation (either hand), and maps brought into the truth's frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hetfield.analysis.metrics import masked_correlation, soft_sphere_mask
from hetfield.analysis.pose_metrics import align_rotations, aligned_map, aligned_map_correlation, geodesic_deg, median_pose_error_deg
from hetfield.imaging.projection import project
from hetfield.imaging.rotations import random_rotations

J = np.diag([1.0, 1.0, -1.0])


def _noisy(r, deg, rng):
    return r @ Rotation.from_rotvec(rng.normal(0, np.deg2rad(deg) / np.sqrt(3), (len(r), 3))).as_matrix()


def test_global_rotation_is_removed_and_outliers_do_not_move_it():
    rng = np.random.default_rng(0)
    true = random_rotations(400, rng)
    m = Rotation.from_euler("zyz", [30, 100, -50], degrees=True).as_matrix()
    est = _noisy(true @ m, 3.0, rng)
    est[:100] = random_rotations(100, rng)  # a quarter of the particles lost
    al = align_rotations(est, true)
    assert not al.mirrored
    assert geodesic_deg(al.rotation, m) < 1.0
    assert 2.0 < np.median(al.errors_deg[100:]) < 4.0
    assert al.fraction_within(10) > 0.7
    # Without the alignment the same poses look random.
    assert np.median(geodesic_deg(est, true)) > 60


def test_the_mirror_image_is_recognised():
    rng = np.random.default_rng(1)
    true = random_rotations(200, rng)
    m = Rotation.from_euler("zyz", [-70, 40, 10], degrees=True).as_matrix()
    est = _noisy(J @ true @ J @ m, 2.0, rng)
    al = align_rotations(est, true)
    assert al.mirrored and al.median_deg < 3.0
    assert align_rotations(est, true, allow_mirror=False).median_deg > 20
    assert median_pose_error_deg(est, true) == pytest.approx(al.median_deg)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="same n"):
        align_rotations(np.zeros((3, 3, 3)), np.zeros((4, 3, 3)))


def _blobs(box, centres):
    c = np.arange(box) - box // 2
    z, y, x = np.meshgrid(c, c, c, indexing="ij")
    return sum(np.exp(-((x - a) ** 2 + (y - b) ** 2 + (z - d) ** 2) / 4.0) for a, b, d in centres).astype(np.float32)


@pytest.mark.parametrize("mirrored", [False, True])
def test_a_turned_shifted_map_is_brought_back(mirrored):
    box = 24
    ref = _blobs(box, [(0, 0, 0), (4, 0, 0), (0, 5, 1), (-2, -3, 4), (3, 3, -4)])
    m = Rotation.from_euler("zyz", [50, 60, 20], degrees=True).as_matrix()
    mh = J @ m if mirrored else m
    # The estimate V_est(x) = V_true(x @ mh^T), shifted by 2 voxels: its poses are J^h R J^h M.
    centres = np.array([(0, 0, 0), (4, 0, 0), (0, 5, 1), (-2, -3, 4), (3, 3, -4)], float) @ mh + [2, 0, -1]
    est = _blobs(box, centres)
    true_rot = random_rotations(50, np.random.default_rng(2))
    est_rot = (J @ true_rot @ J @ m) if mirrored else true_rot @ m
    # The convention itself: the estimate projected at its poses gives the truth's images.
    shifted = _blobs(box, centres - [2, 0, -1])
    img_a, img_b = project(ref, true_rot[:3]).numpy(), project(shifted, est_rot[:3]).numpy()
    assert np.corrcoef(img_a.ravel(), img_b.ravel())[0, 1] > 0.99
    al = align_rotations(est_rot, true_rot)
    assert al.mirrored == mirrored
    mask = soft_sphere_mask(box)
    assert masked_correlation(est, ref, mask) < 0.5
    assert aligned_map_correlation(est, ref, al) > 0.95  # trilinear resampling blurs 1.4 px blobs a little
    assert aligned_map(est, ref, al).shape == ref.shape


def test_true_rotations_are_read_by_particle_name_and_missing_poses_are_said():
    """``Truth.rotations_for`` (analyze --truth's pose errors, benchmarks/abinit.py's bound): RELION
    Euler angles of the named particles, in the dataset's order; a truth without them has no poses."""
    import pandas as pd

    from hetfield.analysis.truth import Truth
    from hetfield.imaging.rotations import matrix_to_euler

    rng = np.random.default_rng(3)
    a = random_rotations(3, rng)
    rot, tilt, psi = matrix_to_euler(a)
    df = pd.DataFrame({"particle_name": ["p0", "p1", "p2"], "class": [0, 1, 0],
                       "euler_rot_deg": rot, "euler_tilt_deg": tilt, "euler_psi_deg": psi})
    truth = Truth(path=Path("truth"), particles=df)
    assert truth.has_poses
    assert np.allclose(truth.rotations_for(["p2", "p0"]), a[[2, 0]], atol=1e-8)
    assert not Truth(path=Path("truth"), particles=df.drop(columns=["euler_psi_deg"])).has_poses
    assert not Truth(path=Path("truth")).has_poses
