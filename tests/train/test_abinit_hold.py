"""abinit, K > 1: the low-resolution start's classes are held through the search rounds, and each
particle's searched pose is written under its held class, not under the training posterior's
argmax (which compares the classes at one class's pose while every class has its own frame).

The quality figure behind it (benchmarks/abinit.py, far beyond this file's budget) is in
docs/internals.md; this file checks the rule on a tiny model in well under a second of training."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from helpers import simulate_and_setup

from hetfield.data.dataset import Dataset
from hetfield.imaging.rotations import random_rotations, rot6d_to_matrix
from hetfield.model.search_data import SearchResult
from hetfield.train.abinit_search import write_poses
from hetfield.train.config import PREDATED, TrainConfig
from hetfield.train.factory import build_model


def test_hold_covers_the_search_rounds():
    base = dict(pose_estimation="abinit", n_classes=2, pose_search_epochs=6, epochs=9, class_hold_epochs=2)
    assert TrainConfig(**base).effective_class_hold_epochs == 7  # the start (epoch 0) and the 6 search rounds
    assert TrainConfig(**base, pose_search_hold_classes=False).effective_class_hold_epochs == 2
    assert TrainConfig(**{**base, "class_hold_epochs": 8, "epochs": 12}).effective_class_hold_epochs == 8
    assert TrainConfig(**{**base, "n_classes": 1}).effective_class_hold_epochs == 2
    assert TrainConfig(n_classes=2, class_hold_epochs=2).effective_class_hold_epochs == 2  # not abinit
    assert PREDATED["pose_search_hold_classes"] is False  # runs from before it released the start's classes


def test_a_refined_start_is_kept_until_the_last_search_round():
    from hetfield.train.abinit import keep_rounds

    base = dict(pose_estimation="abinit", n_classes=2, epochs=9)
    assert keep_rounds(TrainConfig(**base, pose_search_epochs=6)) == 5  # refined (the default): rounds 1-5 keep it
    assert keep_rounds(TrainConfig(**base, pose_search_epochs=6, pose_search_refine_rounds=0)) == 1  # the plain start: round 1
    assert keep_rounds(TrainConfig(**base, pose_search_epochs=1)) == 0  # one round searches
    assert keep_rounds(TrainConfig(**base, pose_search_epochs=1, pose_search_refine_rounds=0)) == 0
    assert PREDATED["pose_search_refine_rounds"] == 0  # runs from before the refinement keep their schedule


def test_held_poses_follow_the_held_class(tmp_path):
    root = simulate_and_setup(tmp_path, "d", n_particles=3, n_classes=2, box=16, seed=2, mode="spa")
    ds = Dataset.open(root / "dataset")
    cfg = TrainConfig(zdim=0, n_classes=2, pose_estimation="abinit", epochs=9, field_hidden=16, field_layers=1, pe_features=8)
    model, _ = build_model(ds, cfg)
    p, k = 3, 2
    rot = torch.as_tensor(random_rotations(p * k, np.random.default_rng(0)), dtype=torch.float32).reshape(p, k, 3, 3)
    shift = torch.arange(p * k * 2, dtype=torch.float32).reshape(p, k, 2) / 10
    error = torch.tensor([[1.0, 2.0], [2.0, 1.0], [3.0, 1.0]])  # the search's best: 0, 1, 1
    res = SearchResult(rotation=rot, shift_px=shift, error=error, candidate_error=error[..., None])
    with torch.no_grad():  # the start's partition: particle 0 in class 1, particle 1 in class 0, particle 2 held out
        model.scores.scores.copy_(torch.tensor([[0.0, 3.0], [3.0, 0.0], [0.0, 0.0]]))
    resp = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.9, 0.1]])  # a posterior that disagrees
    idx = torch.arange(p)
    batch = SimpleNamespace(particles=idx, images=idx, image_particle=idx, n_particles=p, n_images=p)
    data = SimpleNamespace(geometry=None)

    def written():
        return rot6d_to_matrix(model.poses.rot6d.weight.detach()), model.poses.origin.weight.detach() * model.poses.origin_unit_px

    write_poses(model, batch, data, res, resp, k, held=True)
    a, o = written()
    for i, c in enumerate([1, 0, 1]):  # held class; the held-out particle takes its best by the search
        assert torch.allclose(a[i], rot[i, c], atol=1e-5) and torch.allclose(o[i], shift[i, c], atol=1e-5)
    write_poses(model, batch, data, res, resp, k, held=False)  # released: the posterior's argmax
    a, _ = written()
    for i, c in enumerate([0, 1, 0]):
        assert torch.allclose(a[i], rot[i, c], atol=1e-5)


def test_the_guard_keeps_whichever_pose_has_the_smaller_error():
    from hetfield.train.abinit_search import better_of

    p, k = 2, 2
    rot = torch.as_tensor(random_rotations(2 * p * k, np.random.default_rng(1)), dtype=torch.float32).reshape(2, p, k, 3, 3)
    image_particle = torch.tensor([0, 0, 0, 1])  # particle 0 has three images (a tilt series), particle 1 one
    shift = torch.arange(2 * 4 * k * 2, dtype=torch.float32).reshape(2, 4, k, 2)
    glob = SearchResult(rotation=rot[0], shift_px=shift[0], error=torch.tensor([[1.0, 5.0], [2.0, 2.0]]), candidate_error=torch.zeros(p, k, 1))
    loc = SearchResult(rotation=rot[1], shift_px=shift[1], error=torch.tensor([[3.0, 4.0], [1.0, 2.0]]), candidate_error=torch.ones(p, k, 1))
    out, took = better_of(glob, loc, image_particle)
    take_local = torch.tensor([[False, True], [True, False]])  # strictly smaller error only: a tie keeps the global search's
    assert torch.equal(took, take_local)
    assert torch.equal(out.error, torch.tensor([[1.0, 4.0], [1.0, 2.0]]))
    for i in range(p):
        for c in range(k):
            src = 1 if take_local[i, c] else 0
            assert torch.equal(out.rotation[i, c], rot[src, i, c])
            for img in (image_particle == i).nonzero()[:, 0]:
                assert torch.equal(out.shift_px[img, c], shift[src, img, c])
    assert torch.equal(out.candidate_error, glob.candidate_error)
