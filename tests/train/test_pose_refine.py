"""--pose-estimation refine: poses held during the warm-up, then shifts corrected.

Measured (60 particles × 5 tilts, box 24, SNR 20, poses perturbed by 7.2° and 1.53 px): shifts
1.53 → 1.14 px in 8 epochs at lr_pose 1e-2, while rotations drift 7.2° → 9.0°; at the default 3e-3,
1.53 → 1.37 px and 7.18° → 7.44° in 10 epochs. At this box the attainable angular precision is
~4–5°, and with the field frozen at the true poses rotations refine 7.2° → 5.8°: joint rotation
refinement is the part still to improve (see the README).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from hetfield.train.config import TrainConfig
from hetfield.train.loop import train
from hetfield.train.rundir import RunDir

from helpers import simulate_and_setup

pytestmark = pytest.mark.slow


def _errors(rot, org, true_rot, true_org):
    d = np.einsum("nij,nkj->nik", rot, true_rot)
    angle = np.degrees(np.arccos(np.clip((np.trace(d, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    return float(angle.mean()), float(np.linalg.norm(org - true_org, axis=1).mean())


def test_refinement_corrects_shifts_after_the_warmup(tmp_path):
    d = simulate_and_setup(tmp_path, "d", n_particles=60, n_classes=1, motion=False, box=24, n_tilts=5, snr=20.0, seed=9)
    arrays_path = d / "dataset" / "arrays.npz"
    arrays = dict(np.load(arrays_path))
    true_rot, true_org = arrays["rotation"].copy(), arrays["origin_px"].copy()
    rng = np.random.default_rng(0)
    arrays["rotation"] = (true_rot @ Rotation.from_rotvec(rng.normal(0, np.deg2rad(8) / np.sqrt(3), (len(true_rot), 3))).as_matrix()).astype(np.float32)
    arrays["origin_px"] = (true_org + rng.normal(0, 1.2, true_org.shape)).astype(np.float32)
    np.savez(arrays_path, **arrays)  # the cache now holds poses with errors
    rot0, org0 = _errors(arrays["rotation"], arrays["origin_px"], true_rot, true_org)

    train(tmp_path / "run", d / "dataset", TrainConfig(zdim=0, pose_estimation="refine", epochs=8, lr_pose=1e-2, pose_warmup_epochs=2, field_hidden=64, device="cpu"))
    run = RunDir(tmp_path / "run")
    held = run.latent(2)
    assert np.allclose(held["rotation"], arrays["rotation"], atol=1e-5) and np.allclose(held["origin_px"], arrays["origin_px"], atol=1e-5)
    final = run.latent(8)
    assert final["rotation"].shape == true_rot.shape and final["origin_px"].shape == true_org.shape
    rot, org = _errors(final["rotation"], final["origin_px"], true_rot, true_org)
    assert org < 0.85 * org0
    assert rot < rot0 + 2.5
