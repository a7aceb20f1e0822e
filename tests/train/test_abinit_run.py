"""``train --pose-estimation abinit`` end to end on small simulated sets, input poses ignored: the
poses (after the best global rotation, either hand) and the map (after the same alignment) are
compared with the truth. Sizes are far below the issue's (1 000 SPA / 200 tilt particles, see
benchmarks/abinit.py for those figures) so that the file stays inside the suite's budget."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import simulate_and_setup

from hetfield.analysis.metrics import masked_correlation, soft_sphere_mask
from hetfield.analysis.pose_metrics import align_rotations, aligned_map
from hetfield.data.dataset import Dataset
from hetfield.io.mrc import read_volume
from hetfield.train.config import TrainConfig

SMALL = dict(zdim=0, pose_estimation="abinit", field_hidden=64, field_layers=2, pe_features=32, batch_size=8,
             pose_search_base_nside=2, threads=1, val_fraction=0.0)


def _train(root, **cfg):
    from hetfield.model.decode import decode_volumes
    from hetfield.train.load import load_trained as load_run
    from hetfield.train.loop import train

    c = TrainConfig(**{**SMALL, **cfg})
    train(root / "run", root / "dataset", c)
    lat = np.load(root / "run" / f"latent.{c.epochs}.npz")
    model, _, _ = load_run(root / "run")
    return lat, model, decode_volumes


@pytest.mark.slow
def test_homogeneous_spa_recovers_poses_and_map(tmp_path):
    root = simulate_and_setup(tmp_path, "d", n_particles=240, n_classes=1, box=24, pixel_size_A=10.0, snr=2.0, motion=False, mode="spa", seed=3)
    ds = Dataset.open(root / "dataset")
    lat, model, decode = _train(root, epochs=5, pose_search_epochs=3)
    al = align_rotations(lat["rotation"].astype(np.float64), np.asarray(ds.arrays["rotation"], np.float64))
    assert al.median_deg < 15.0, al.median_deg
    vol = decode(model, None, np.zeros(1, np.int64))[0]
    true, _ = read_volume(root / "sim" / "truth" / "class_0.mrc")
    cc = masked_correlation(aligned_map(vol, true, al), true, soft_sphere_mask(24))
    assert cc > 0.9, cc
