"""benchmarks/abinit.py's bound (what the data allow a run's poses) holds each searched particle out of
the maps it is searched against: a map built from a particle's own images fits its noise at the pose
the map was built at, and an in-sample bound came out 10x tighter than any run can reach."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import simulate_and_setup

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture()
def abinit_bench():
    sys.path.insert(0, str(BENCH))
    try:
        import abinit
    finally:
        sys.path.pop(0)
    return abinit


def test_the_bound_searches_every_particle_against_maps_without_its_own_images(tmp_path, monkeypatch, abinit_bench):
    import hetfield.model.abinit_lowres as lowres
    import hetfield.model.pose_search as pose_search

    root = simulate_and_setup(tmp_path, "d", n_particles=30, n_classes=2, box=16, seed=3, mode="spa", snr=0.5)
    built, searched = [], []
    reconstruct, search = lowres.reconstruct, pose_search.search_poses

    def spy_reconstruct(data, *a, **kw):
        built.append(data.y.numpy().reshape(data.n_images, -1).copy())
        return reconstruct(data, *a, **kw)

    def spy_search(maps, data, *a, **kw):
        searched.append(data.y.numpy().reshape(data.n_images, -1).copy())
        return search(maps, data, *a, **kw)

    monkeypatch.setattr(lowres, "reconstruct", spy_reconstruct)
    monkeypatch.setattr(pose_search, "search_poses", spy_search)
    bound = abinit_bench.pose_bound(root, k=2, search_epochs=2, folds=3)

    assert len(built) == len(searched) == 3
    for maps_from, held in zip(built, searched):
        own = (held[:, None, :] == maps_from[None, :, :]).all(-1).any(1)  # a held image inside its maps
        assert not own.any() and len(held) + len(maps_from) == 30
    assert sum(len(h) for h in searched) == 30  # every particle is searched once
    per = bound["per_true_class"]
    assert set(per) == {"0", "1"} and bound["folds"] == 3
    assert all(0 <= v["median_error_deg"] <= 180 and 0 <= v["fraction_within_10deg"] <= 1 for v in per.values())
    assert 0 <= bound["pooled_median_error_deg"] <= 180 and -1 <= bound["class_ari"] <= 1
    assert np.isfinite(bound["band_px"]).all()
