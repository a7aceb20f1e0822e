"""The class score table (K > 1): lazy updates, and an EM start that leaves held-out particles alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import hetfield.train.class_start as class_init
from hetfield.data.batching import ParticleBatches
from hetfield.data.dataset import Dataset
from hetfield.train.config import TrainConfig
from hetfield.train.factory import build_model
from hetfield.train.loop import train
from hetfield.train.optim import Optimizers
from hetfield.train.rundir import RunDir
from hetfield.train.validation import split_validation

from helpers import simulate_and_setup

TINY = dict(zdim=0, n_classes=2, batch_size=4, field_hidden=32, field_layers=2, pe_features=16, threads=1, device="cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return simulate_and_setup(tmp_path_factory.mktemp("scores"), "d", n_particles=16, n_classes=2, n_tilts=5, box=24, snr=1.0, seed=7) / "dataset"


def test_a_score_row_moves_only_when_its_particle_is_trained(tiny):
    """Dense Adam moved every visited row along its stale momentum at each later step (6x its own
    step over an epoch); lazy Adam leaves a row exactly where its last visit put it."""
    ds = Dataset.open(tiny)
    cfg = TrainConfig(**TINY, lr_score_table=0.1).validate()
    model, _ = build_model(ds, cfg)
    opt = Optimizers(model, cfg.lr, cfg.lr_latent, cfg.lr_score_table, cfg.lr_pose, cfg.weight_decay, cfg.lr_encoder)
    loader = ParticleBatches(ds, model.points, 4, shuffle=False, prefetch=False)
    batches = list(loader.epoch(0))
    scores = model.scores.scores
    history = [scores.detach().clone()]
    for batch in batches:
        out = model(batch, beta=0.0)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        history.append(scores.detach().clone())
    first = batches[0].particles
    own_step = (history[1][first] - history[0][first]).abs().sum()
    assert own_step > 0  # the visit moved the row
    for before, after in zip(history[1:], history[2:]):
        assert torch.equal(before[first], after[first])  # and nothing after it did
    untouched = batches[-1].particles
    assert torch.equal(history[-2][untouched], history[0][untouched])  # not yet visited: still at 0


def test_held_out_particles_take_no_part_in_the_em_start(tiny, tmp_path, monkeypatch):
    """The validation loss ranks sweep runs: held-out particles must not be fitted by the EM start
    nor get its prior; they keep uniform scores (lazy updates never touch their rows)."""
    fitted: list[int] = []
    original = class_init._batch_statistics

    def spy(model, batch, *args, **kwargs):
        fitted.extend(batch.particles.tolist())
        return original(model, batch, *args, **kwargs)

    monkeypatch.setattr(class_init, "_batch_statistics", spy)
    cfg = TrainConfig(**TINY, epochs=3, class_init_epochs=1, class_hold_epochs=1, val_fraction=0.25)
    train(tmp_path / "run", tiny, cfg)
    _, val = split_validation(16, 0.25, cfg.seed)
    assert len(val) == 4
    assert fitted and not set(fitted) & set(val.tolist())
    assert sorted(set(fitted)) == sorted(set(range(16)) - set(val.tolist()))
    latent = RunDir(tmp_path / "run").latent(3)
    assert latent["held_out"].sum() == 4
    gate = latent["class_gate"]
    assert np.array_equal(gate[latent["held_out"]], np.full((4, 2), 0.5, np.float32))
    assert (gate[~latent["held_out"]].max(1) > 0.9).all()  # the training particles got their EM prior
    metrics = RunDir(tmp_path / "run").metrics()
    assert all(np.isfinite(m["val_data_loss"]) for m in metrics)


def test_weights_saved_with_the_dense_score_table_still_load(tiny):
    """Runs trained before the table became an embedding stay analysable (``load_trained``)."""
    ds = Dataset.open(tiny)
    cfg = TrainConfig(**TINY).validate()
    model, _ = build_model(ds, cfg)
    with torch.no_grad():
        model.scores.scores.uniform_()
    old = dict(model.state_dict())
    old["scores.scores"] = old.pop("scores.table.weight")
    fresh, _ = build_model(ds, cfg)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.scores.scores, model.scores.scores)
