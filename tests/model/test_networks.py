"""Properties of the fields and the encoder that the training relies on."""

from __future__ import annotations

import numpy as np
import torch

from hetfield.data.batching import ParticleBatches
from hetfield.model.fields import NeuralFields
from hetfield.model.reconstruction import Reconstruction
from hetfield.model.shape import ModelShape

from .synthetic import tilt_series_dataset


def test_k_fields_in_one_pass_equal_each_field_alone():
    torch.manual_seed(0)
    k_fields = NeuralFields(box=16, n_classes=3, zdim=2, hidden=32, layers=3, n_features=8, seed=1)
    with torch.no_grad():  # make the classes really different
        for p in k_fields.parameters():
            p.add_(0.3 * torch.randn_like(p))
    q = torch.rand(5, 40, 3) - 0.5
    z = torch.randn(5, 2)
    together = k_fields(q, z)
    for k in range(3):
        one = NeuralFields(box=16, n_classes=1, zdim=2, hidden=32, layers=3, n_features=8, seed=1)
        one.load_state_dict({name: (t[k : k + 1] if name.startswith(("w_", "b_")) else t) for name, t in k_fields.state_dict().items()})
        assert torch.allclose(one(q, z)[:, 0], together[:, k], atol=1e-5)


def test_fields_are_hermitian():
    f = NeuralFields(box=16, n_classes=2, zdim=3, hidden=16, layers=2, n_features=8)
    q = torch.rand(4, 30, 3) - 0.5
    z = torch.randn(4, 3)
    a, b = f(q, z), f(-q, z)
    assert torch.allclose(a[..., 0], b[..., 0]) and torch.allclose(a[..., 1], -b[..., 1])
    origin = f(torch.zeros(1, 1, 3), z[:1])
    assert origin[..., 1].abs().max() == 0  # F(0) of a real volume is real


def _encoder_model(ds):
    shape = ModelShape(box=ds.box, n_particles=ds.n_particles, n_images=ds.n_images, zdim=3, enc_hidden=32, enc_layers=1, enc_embed=16, field_hidden=16, field_layers=1, pe_features=8, enc_grid=5)
    model = Reconstruction(shape).eval()
    with torch.no_grad():  # a random but non-trivial encoder
        for p in model.encoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_encoder_is_deterministic_and_ignores_tilt_order_and_batch_company():
    ds = tilt_series_dataset(n_particles=6, n_tilts=6, ragged=True, seed=7)
    model = _encoder_model(ds)
    loader = ParticleBatches(ds, model.points, 6, shuffle=False, prefetch=False)
    batch = loader.make_batch(np.arange(6))
    mu1, logvar1 = model.embed(batch)
    mu2, _ = model.embed(batch)
    assert torch.equal(mu1, mu2)  # the same z every time: no sampled subset of tilts
    # each particle alone (no padding from longer tilt series) gives the same z
    for p in range(6):
        mu_p, _ = model.embed(loader.make_batch(np.array([p])))
        assert torch.allclose(mu_p[0], mu1[p], atol=1e-5)
    # shuffling the images within each particle (tilt order) changes nothing
    perm = np.concatenate([np.random.default_rng(p).permutation(np.arange(ds.offsets[p], ds.offsets[p + 1])) for p in range(6)])
    shuffled = tilt_series_dataset(n_particles=6, n_tilts=6, ragged=True, seed=7)
    shuffled.images = ds.images[perm]
    shuffled.arrays = {k: (v[perm] if k not in ("particle_offsets",) else v) for k, v in ds.arrays.items()}
    mu3, _ = model.embed(ParticleBatches(shuffled, model.points, 6, shuffle=False, prefetch=False).make_batch(np.arange(6)))
    assert torch.allclose(mu3, mu1, atol=1e-5)


def test_encoder_uses_every_tilt():
    """No truncation to the smallest tilt count (tomoDRGN's concatenate pooling): the last image matters."""
    ds = tilt_series_dataset(n_particles=2, n_tilts=6, seed=8)
    model = _encoder_model(ds)
    loader = ParticleBatches(ds, model.points, 2, shuffle=False, prefetch=False)
    mu, _ = model.embed(loader.make_batch(np.arange(2)))
    ds.images = ds.images.copy()
    ds.images[ds.offsets[1] - 1] *= -3.0  # alter the last image of particle 0 only
    mu2, _ = model.embed(loader.make_batch(np.arange(2)))
    assert not torch.allclose(mu[0], mu2[0], atol=1e-4)
    assert torch.allclose(mu[1], mu2[1], atol=1e-6)


def test_recomputed_fields_give_the_same_gradients(monkeypatch):
    """``recompute`` keeps one field's activations over the batch and runs the other chunks again in
    the backward: every gradient (fields, encoder, score table) is the one of keeping them all, for a
    full pass and a sparse step, in fp32 and under bf16 autocast."""
    import hetfield.model.fields as fields_module
    from hetfield.model.forward import ClassSelection
    from hetfield.train.config import TrainConfig
    from hetfield.train.factory import build_model

    ds = tilt_series_dataset(n_particles=6, n_tilts=4, seed=2)
    cfg = TrainConfig(n_classes=3, zdim=2, field_hidden=32, field_layers=3, pe_features=8, enc_hidden=32, enc_embed=16, enc_grid=4, device="cpu").validate()
    model, _ = build_model(ds, cfg)
    assert model.fields.recompute  # the default
    with torch.no_grad():  # distinct fields, a non-uniform prior, a field prior
        for p in model.fields.parameters():
            p.add_(0.2 * torch.randn_like(p, generator=torch.Generator().manual_seed(1)))
        model.scores.scores.copy_(torch.randn(ds.n_particles, 3, generator=torch.Generator().manual_seed(2)))
        model.prior_weight.copy_(torch.linspace(0.1, 1.0, model.prior_weight.shape[0]))
    model.fields.chunk_points = 3 * 60  # several chunks of 3 images a class (box 16: < 60 points an image)
    batch = ParticleBatches(ds, model.points, 6, shuffle=False, prefetch=False).make_batch(np.arange(6))
    active = torch.tensor([[True, False, False], [True, True, False], [False, True, True], [True, False, True], [True, False, False], [False, False, True]])
    calls = []
    original = fields_module.checkpoint
    monkeypatch.setattr(fields_module, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k))

    def grads(recompute: bool, classes, bf16: bool):
        model.fields.recompute = recompute
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = model(batch, beta=1.0, std_noise=5.0, generator=torch.Generator().manual_seed(3), classes=classes)
        out["loss"].backward()
        return {n: p.grad.to_dense() for n, p in model.named_parameters() if p.grad is not None}  # the score table's is sparse

    for classes in (None, ClassSelection.of(active, batch.image_particle)):
        for bf16 in (False, True):
            calls.clear()
            kept = grads(False, classes, bf16)
            assert not calls
            again = grads(True, classes, bf16)
            assert calls  # chunks beyond one field's images were recomputed
            assert kept.keys() == again.keys() and {"fields.w_in", "encoder.head.0.weight", "scores.table.weight"} <= kept.keys()
            for name in kept:
                assert torch.allclose(kept[name], again[name], rtol=1e-6, atol=1e-9), name
    with torch.no_grad():  # nothing to recompute without a backward
        calls.clear()
        model(batch, beta=1.0)
        assert not calls
