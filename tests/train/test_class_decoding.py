"""Sparse class decoding (K > 1): the rule, the sparse objective, and what it does to training.

The rule (train.class_decoding): hold and consensus epochs and every ``class_full_pass_every``-th
free epoch decode every class; other epochs decode, per particle, the classes with last posterior
>= ``class_decode_threshold`` and its best one; held-out particles always every class.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from hetfield.data.batching import ParticleBatches
from hetfield.model.forward import ClassSelection
from hetfield.train.class_decoding import ClassDecoding, decoded_classes, full_pass
from hetfield.train.config import TrainConfig
from hetfield.train.factory import build_model

from helpers import simulate_and_setup
from model.synthetic import tilt_series_dataset

TINY = dict(zdim=0, field_hidden=32, field_layers=2, pe_features=16, threads=1, device="cpu")


def test_full_passes_are_the_hold_and_every_nth_free_epoch():
    cfg = TrainConfig(n_classes=3, class_init_epochs=1, class_hold_epochs=2, class_full_pass_every=3, epochs=12)
    assert [full_pass(cfg, e) for e in range(10)] == [True, True, True, True, False, False, True, False, False, True]
    # No EM start: the classes are free from the first epoch, which is a full pass.
    cfg0 = TrainConfig(n_classes=3, class_init_epochs=0, class_full_pass_every=2)
    assert [full_pass(cfg0, e) for e in range(4)] == [True, False, True, False]
    # Off switches, and one field.
    for off in (dict(class_decode_threshold=0.0), dict(class_full_pass_every=1)):
        assert all(full_pass(TrainConfig(n_classes=3, **off), e) for e in range(20))
    assert all(full_pass(TrainConfig(n_classes=1), e) for e in range(20))


def test_an_epoch_after_one_that_moved_classes_is_a_full_pass():
    cfg = TrainConfig(n_classes=3, class_init_epochs=1, class_hold_epochs=1, class_full_pass_every=4, epochs=12)
    assert not full_pass(cfg, 3) and not full_pass(cfg, 3, moved=0.02) and full_pass(cfg, 3, moved=0.03)
    assert full_pass(cfg, 1, moved=0.0) and full_pass(cfg, 6, moved=0.0)  # the hold and the period, whatever moved
    assert not full_pass(TrainConfig(n_classes=3, class_settled_change=1.0, class_hold_epochs=1), 3, moved=0.9)  # the period alone


def test_decoded_classes_are_those_above_the_threshold_and_the_best():
    resp = torch.tensor([[0.98, 0.015, 0.005], [0.4, 0.35, 0.25], [0.0, 0.0, 1.0], [1 / 3, 1 / 3, 1 / 3]])
    assert decoded_classes(resp, 0.01).tolist() == [[True, True, False], [True, True, True], [False, False, True], [True, True, True]]
    # A threshold above every posterior keeps the best class alone (never none).
    assert decoded_classes(resp, 0.99).sum(1).tolist() == [1, 1, 1, 1]
    cfg = TrainConfig(n_classes=3, class_init_epochs=1, class_hold_epochs=1, class_full_pass_every=4, epochs=10)
    assert ClassDecoding.for_epoch(cfg, 2, resp) is None  # the first free epoch: full
    table = ClassDecoding.for_epoch(cfg, 3, resp)
    assert table is not None and table.decoded_fraction == pytest.approx(9 / 12)
    assert ClassDecoding.for_epoch(cfg, 3, None) is None  # K = 1: no posterior, nothing to choose


def test_selection_lists_each_fields_images():
    active = torch.tensor([[True, False, False], [False, True, True], [True, True, True]])
    image_particle = torch.tensor([0, 0, 1, 2, 2, 2])
    sel = ClassSelection.of(active, image_particle)
    assert sel.images[0].tolist() == [0, 1, 3, 4, 5]
    assert sel.images[1].tolist() == [2, 3, 4, 5]
    assert sel.images[2].tolist() == [2, 3, 4, 5]
    every = ClassSelection.of(torch.ones(3, 3, dtype=torch.bool), image_particle)
    assert every.images == [None, None, None]  # all images: no gather, no scatter


@pytest.fixture(scope="module")
def three_field_model():
    ds = tilt_series_dataset(n_particles=6, n_tilts=4, seed=2)
    cfg = TrainConfig(n_classes=3, **TINY).validate()
    model, _ = build_model(ds, cfg)
    with torch.no_grad():  # distinct fields and a non-uniform prior
        for p in model.fields.parameters():
            p.add_(0.2 * torch.randn_like(p, generator=torch.Generator().manual_seed(1)) if p.ndim else 0)
        model.scores.scores.copy_(torch.randn(ds.n_particles, 3, generator=torch.Generator().manual_seed(2)))
    loader = ParticleBatches(ds, model.points, 6, shuffle=False, prefetch=False)
    return model, loader.make_batch(np.arange(6))


def test_all_classes_selected_is_the_full_objective(three_field_model):
    model, batch = three_field_model
    full = model(batch, beta=0.0)
    every = model(batch, beta=0.0, classes=ClassSelection.of(torch.ones(6, 3, dtype=torch.bool), batch.image_particle))
    assert torch.allclose(full["loss"], every["loss"], rtol=1e-6)
    assert torch.allclose(full["responsibility"], every["responsibility"], atol=1e-6)


def test_sparse_objective_is_the_likelihood_over_the_decoded_classes(three_field_model):
    """Dropped classes: out of the logsumexp, responsibility 0, no gradient to their scores or, when no
    image needs them, to their field; the decoded classes' terms are exactly the full ones. A large
    noise level keeps every posterior away from 0 and 1, so every decoded class has a gradient."""
    model, batch = three_field_model
    sigma = 30.0
    active = torch.tensor([[True, False, False], [True, True, False], [False, True, True], [True, False, True], [True, False, False], [False, False, True]])
    model.zero_grad()
    out = model(batch, beta=0.0, std_noise=sigma, classes=ClassSelection.of(active, batch.image_particle))
    out["loss"].backward()
    scores_grad = model.scores.table.weight.grad.to_dense()
    field_grad = model.fields.w_hidden.grad.clone()
    ref = model(batch, beta=0.0, std_noise=sigma)  # the full pass gives every class's per-particle error
    err, log_prior = ref["err"], torch.log_softmax(model.scores.scores.detach(), -1)
    wn = _tilt_weighted_values(model, batch)
    loglik = -wn[:, None] * err / (2 * sigma**2)
    masked = lambda x: x.masked_fill(~active, float("-inf"))  # noqa: E731
    expect = -(2 * sigma**2 / wn) * (torch.logsumexp(masked(log_prior + loglik), 1) - torch.logsumexp(masked(log_prior), 1))
    assert torch.allclose(out["loss"], expect.mean(), rtol=1e-5)
    assert (out["responsibility"][~active] == 0).all() and (out["responsibility"][active] > 1e-3).all()
    assert torch.allclose(out["responsibility"].sum(1), torch.ones(6))
    assert (scores_grad[~active] == 0).all() and (scores_grad[active] != 0).any()
    # Class 1 is decoded for particles 1 and 2 only; restrict to particles without class 1:
    active2 = active.clone()
    active2[:, 1] = False
    active2[1, 0] = active2[2, 2] = True
    model.zero_grad()
    model(batch, beta=0.0, std_noise=sigma, classes=ClassSelection.of(active2, batch.image_particle))["loss"].backward()
    g = model.fields.w_hidden.grad
    assert (g[1] == 0).all() and (g[0] != 0).any() and (g[2] != 0).any()
    assert field_grad[1].abs().sum() > 0  # ... while it had one when particles 1, 2 used it


def test_sparse_prior_weighs_each_class_by_its_share_of_the_batch(three_field_model):
    """A class decoded by a share ``s`` of the batch's particles gets its prior at their slices times
    1/s: over batches, the prior a full pass gives it, whatever the class's size. All classes
    decoded: the full pass's prior."""
    from hetfield.model.forward import observe, render
    from hetfield.model.loss import field_prior_penalty, image_errors, particle_errors, tilt_weights

    model, batch = three_field_model
    active = torch.tensor([[True, False, False], [True, True, False], [False, True, False], [True, False, True], [True, False, False], [False, True, False]])
    with torch.no_grad():
        obs = observe(model, batch, dose_weight=True, dose_mask=True)
        full = render(model, obs, None)
        sparse = render(model, obs, None, classes=ClassSelection.of(active, batch.image_particle))
        se, n_img = image_errors(full, obs)
        w = tilt_weights(batch, n_img, True)
        _, wn, _ = particle_errors(batch, se, n_img, w)
        lam = torch.linspace(0.5, 2.0, obs.y_k.shape[1])
        per_class = torch.stack([field_prior_penalty(full, batch, w, wn, lam, one) for one in torch.eye(3, dtype=torch.bool)[:, None, :].expand(3, 6, 3)], 1)
        assert torch.allclose(per_class.sum(1), field_prior_penalty(full, batch, w, wn, lam), rtol=1e-6)  # one class of six particles: share 1
        got = field_prior_penalty(sparse, batch, w, wn, lam, active)
        share = active.float().mean(0)  # 4/6, 3/6, 1/6
        assert torch.allclose(got, (per_class * active / share).sum(1), rtol=1e-5)
        assert torch.allclose(field_prior_penalty(full, batch, w, wn, lam, torch.ones(6, 3, dtype=torch.bool)), field_prior_penalty(full, batch, w, wn, lam), rtol=1e-6)


def _tilt_weighted_values(model, batch):
    from hetfield.model.forward import observe
    from hetfield.model.loss import image_errors, particle_errors, tilt_weights

    with torch.no_grad():
        obs = observe(model, batch, dose_weight=True, dose_mask=True)
        r = model.forward.__globals__["render"](model, obs, None)
        se, n_img = image_errors(r, obs)
        _, wn, _ = particle_errors(batch, se, n_img, tilt_weights(batch, n_img, True))
    return wn


@pytest.fixture(scope="module")
def three_class(tmp_path_factory):
    return simulate_and_setup(tmp_path_factory.mktemp("three_class"), "d", n_particles=66, n_classes=3, box=24, n_tilts=6, snr=0.5, seed=4, threads=1)


@pytest.mark.slow
def test_sparse_decoding_keeps_classes_and_validation_loss(three_class, tmp_path, monkeypatch):
    """Three simulated classes: the sparse rule decodes ~1/K of the (image, class) pairs in its sparse
    epochs, with the same class ARI and validation loss as decoding every class every step, and the
    held-out particles are decoded by every class."""
    from sklearn.metrics import adjusted_rand_score

    from hetfield.model.fields import NeuralFields
    from hetfield.train.loop import train
    from hetfield.train.rundir import RunDir

    truth = pd.read_csv(three_class / "sim" / "truth" / "particles.csv").sort_values("particle")["class"].to_numpy()
    # class_init 1 + hold 1: epoch 2 (0-based) is the first free epoch, a full pass, and so are 3 and 4
    # (epochs 2 and 3 changed 12 % and 11 % of the classes: still moving), 5 is sparse, 6 full (the
    # period), 7 sparse. With the default field prior, whose per-class weight sparse epochs keep
    # (model.loss.field_prior_penalty).
    base = dict(n_classes=3, epochs=8, class_hold_epochs=1, class_full_pass_every=4, checkpoint_every=8, field_hidden=48, batch_size=6, threads=1, device="cpu", zdim=0)
    decoded: list[tuple[bool, int]] = []  # (training, image-class pairs decoded) per field call
    original = NeuralFields.forward

    def counting(self, q, z=None, n_classes=None, images=None):
        k = self.n_classes if n_classes is None else n_classes
        decoded.append((self.training, sum(q.shape[0] if i is None else len(i) for i in (images or [None] * k)), q.shape[0] * k))
        return original(self, q, z, n_classes, images)

    monkeypatch.setattr(NeuralFields, "forward", counting)
    results = {}
    for name, threshold in (("full", 0.0), ("sparse", 0.01)):
        decoded.clear()
        run = tmp_path / name
        train(run, three_class / "dataset", TrainConfig(class_decode_threshold=threshold, **base))
        rd = RunDir(run)
        metrics = rd.metrics()
        results[name] = dict(
            ari=adjusted_rand_score(truth, rd.latent(8)["class_idx"]), val=[m["val_data_loss"] for m in metrics],
            fraction=[m["class_decode_fraction"] for m in metrics], calls=list(decoded),
        )
    full, sparse = results["full"], results["sparse"]
    assert full["ari"] >= 0.9 and sparse["ari"] == full["ari"]
    # The first sparse epoch starts from the same state as the full run's: its validation loss is the
    # full one's to 1.6e-4 (8e-3 when an undecoded class lost that particle's prior).
    assert sparse["val"][5] == pytest.approx(full["val"][5], rel=1e-3)
    assert sparse["val"][-1] == pytest.approx(full["val"][-1], rel=3e-3)
    assert full["fraction"] == [1.0] * 8
    assert sparse["fraction"][:5] == [1.0] * 5 and sparse["fraction"][6] == 1.0  # epoch 4: still moving; 6: the period
    assert all(sparse["fraction"][e] < 0.4 for e in (5, 7))  # confident: ~1/3
    # Validation (eval mode) always decodes every class; training decodes far fewer pairs in total.
    assert all(done == every for training, done, every in sparse["calls"] if not training)
    train_pairs = lambda calls: sum(done for training, done, _ in calls if training)  # noqa: E731
    # The consensus epoch decodes one field, then 5 full and 2 sparse epochs: (1 + 15 + 2) / 22 = 0.82.
    assert train_pairs(sparse["calls"]) < 0.85 * train_pairs(full["calls"])


@pytest.fixture(scope="module")
def tiny_two_class(tmp_path_factory):
    return simulate_and_setup(tmp_path_factory.mktemp("tiny2"), "d", n_particles=16, n_classes=2, n_tilts=5, box=24, snr=1.0, seed=4) / "dataset"


@pytest.mark.parametrize("settled, epochs", [(1.0, 3), (0.4, 5)], ids=["sparse-epoch", "full-after-moving"])
def test_an_interrupted_sparse_epoch_resumes_bit_for_bit(tiny_two_class, tmp_path, settled, epochs):
    """The epoch's table comes from the posteriors at its start; the particles a resumed epoch still
    has to train were not visited since, so it takes the same table (and the same steps). And the
    share of classes the epoch before changed, which decides whether it is a full pass, comes back
    from the checkpoint (the run's last epoch is one the period makes sparse)."""
    import os
    import signal

    from hetfield.errors import Interrupted
    from hetfield.train.loop import train
    from hetfield.train.rundir import RunDir

    from .test_resume import _assert_same_run

    # class_init 1, no hold, a full pass every 2 epochs: epoch index 1 full, 2 sparse (3 full, 4 sparse).
    cfg = TrainConfig(
        n_classes=2, epochs=epochs, batch_size=3, class_hold_epochs=0, class_full_pass_every=2, class_settled_change=settled,
        **{**TINY, "zdim": 2, "enc_hidden": 32, "enc_embed": 16, "enc_grid": 4},
    )
    train(tmp_path / "straight", tiny_two_class, cfg)
    metrics = RunDir(tmp_path / "straight").metrics()
    if settled == 1.0:
        assert metrics[-1]["class_decode_fraction"] < 1.0  # the last epoch was sparse
    else:  # a full pass only because the epoch before still moved classes
        assert metrics[-2]["class_change_fraction"] > settled and metrics[-1]["class_decode_fraction"] == 1.0

    def interrupt(epoch, step, info):
        if epoch == epochs - 1 and step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        train(tmp_path / "resumed", tiny_two_class, cfg, progress=interrupt)
    train(tmp_path / "resumed", tiny_two_class, cfg, load="latest")
    _assert_same_run(RunDir(tmp_path / "straight"), RunDir(tmp_path / "resumed"), epochs)
