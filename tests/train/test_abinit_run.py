"""``train --pose-estimation abinit`` end to end on a tiny simulated tilt series (contracts, not
quality: the quality figures at the issue's sizes, 1 000 SPA and 200 tilt particles, come from
benchmarks/abinit.py, far beyond this file's budget). Input poses are ignored, every particle keeps
its tilt geometry, the schedule's phases leave their figures in metrics.jsonl, both classes keep
particles (the low-resolution start's minimum share), and the poses reach latent.N.npz and the STAR files analyze writes."""

from __future__ import annotations

import json

import numpy as np

from helpers import run_cli, simulate_and_setup

from hetfield.analysis.pose_metrics import geodesic_deg
from hetfield.data.dataset import Dataset


def test_abinit_tilt_series_run(tmp_path):
    root = simulate_and_setup(tmp_path, "d", n_particles=24, n_classes=2, n_tilts=3, box=16, seed=4, mode="tilt")
    ds = Dataset.open(root / "dataset")
    run = tmp_path / "run"
    proc = run_cli(
        "train", run, "--data", root / "dataset", "--zdim", "0", "--n-classes", "2", "--pose-estimation", "abinit",
        "--epochs", "4", "--pose-search-epochs", "2", "--class-hold-epochs", "1", "--pose-search-base-nside", "1",
        "--field-hidden", "32", "--field-layers", "1", "--pe-features", "16", "--batch-size", "8", "--threads", "1", "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "lowres_seconds" in rows[0] and "search_s_per_image_class" not in rows[0]
    assert rows[0]["refine_rounds"] == 3 and len(rows[0]["refine_classes_searched"]) == 3  # the start refined against half maps
    # Classes held (the default): round 1 keeps the start's poses, round 2 searches globally
    assert rows[1]["search_s_per_image_class"] == 0 and rows[2]["search_s_per_image_class"] > 0
    assert rows[2]["search_local"] is False and 0 <= rows[2]["search_class_agreement"] <= 1
    # the guard of a held global round: particles whose locally refined pose beat the global search's
    assert rows[1]["search_kept_current"] == 0 and 0 <= rows[2]["search_kept_current"] <= 24
    assert rows[1]["search_classes"] == rows[2]["search_classes"] == 2  # every round searches every class
    assert min(rows[0]["lowres_class_sizes"]) >= 0.5 * 24 / 2  # the low-res start's minimum share per class
    assert "search_s_per_image_class" not in rows[3]  # gradient refinement
    assert all(r["search_rebalanced"] >= 0 for r in rows[1:3])  # the rebalancing after every search round ran
    assert min(rows[2]["class_occupancy"]) >= 0.25 - 1e-6  # ... and kept every class at >= half its share
    lat = np.load(run / "latent.4.npz")
    rot = lat["rotation"].astype(np.float64)
    assert rot.shape == (ds.n_images, 3, 3) and lat["origin_px"].shape == (ds.n_images, 2)
    given = np.asarray(ds.arrays["rotation"], np.float64)
    first = np.repeat(np.asarray(ds.offsets)[:-1], np.diff(ds.offsets))
    # The tilt geometry (each image relative to its particle's first) is the metadata's ...
    geo_given = given @ np.transpose(given[first], (0, 2, 1))
    geo_learned = rot @ np.transpose(rot[first], (0, 2, 1))
    assert geodesic_deg(geo_learned, geo_given).max() < 3.0  # gradient refinement moves images a little
    # ... while the particles' rotations are not the input ones.
    assert np.median(geodesic_deg(rot[first], given[first])) > 10.0
    proc = run_cli("analyze", run, "--epoch", "4", "--no-umap", "--truth", root / "sim")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run / "analysis.4" / "summary.json").read_text())
    assert "particles/all.star" in summary["files"]["star"]
    poses = summary["truth"]["poses"]
    assert poses["n_images"] == ds.n_images and 0 <= poses["median_error_deg"] <= 180
    assert set(poses["per_class"]) <= {"0", "1"}


def test_one_class_keeps_its_refined_start_until_the_last_round(tmp_path):
    root = simulate_and_setup(tmp_path, "d", n_particles=24, n_classes=1, box=16, seed=4, mode="spa")
    run = tmp_path / "run"
    proc = run_cli(
        "train", run, "--data", root / "dataset", "--zdim", "0", "--pose-estimation", "abinit", "--epochs", "4",
        "--pose-search-epochs", "2", "--pose-search-base-nside", "1", "--field-hidden", "32", "--field-layers", "1",
        "--pe-features", "16", "--batch-size", "8", "--threads", "1", "--quiet",
    )
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["refine_rounds"] == 3
    first, last = np.load(run / "latent.1.npz"), np.load(run / "latent.2.npz")
    assert rows[1]["search_s_per_image_class"] == 0 and np.array_equal(first["rotation"], last["rotation"])  # round 1 keeps the start
    assert rows[2]["search_s_per_image_class"] > 0 and 0 <= rows[2]["search_kept_current"] <= 24  # the last round, guarded
