"""The fields' per-shell gradient preconditioning (``--field-prior-precondition``): the values the
fields decode, and so every loss, are unchanged; the gradients upstream are the shell-weighted ones."""

from __future__ import annotations

import pytest
import torch

from hetfield.model.fields import scale_gradient
from hetfield.model.reconstruction import Reconstruction
from hetfield.model.shape import ModelShape
from hetfield.train.field_prior import gradient_weights

BOX = 16


def _model(seed: int = 0) -> Reconstruction:
    torch.manual_seed(seed)
    shape = ModelShape(box=BOX, n_particles=4, n_images=8, zdim=2, field_hidden=32, field_layers=2, pe_features=8, enc_hidden=16, enc_layers=1,
                       enc_embed=8, enc_grid=5, latent_start="none", field_prior=True)
    return Reconstruction(shape)


def _loss_and_grads(model, q, z, target):
    model.zero_grad()
    z = z.clone().requires_grad_(True)
    f = model.field_values(q, z)
    loss = ((f - target) ** 2).sum()
    loss.backward()
    return f.detach(), {n: p.grad.clone() for n, p in model.fields.named_parameters() if p.grad is not None}, z.grad.clone()


def _inputs():
    g = torch.Generator().manual_seed(1)
    q = (torch.rand(3, 60, 3, generator=g) - 0.5) * 0.9  # shells 0 … 7
    return q, torch.randn(3, 2, generator=g), torch.randn(3, 1, 60, 2, generator=g)


def test_values_unchanged_and_gradients_weighted_per_shell():
    q, z, target = _inputs()
    shell = (q.norm(dim=-1) * BOX).round().long()
    plain = _model()
    f0, g0, gz0 = _loss_and_grads(plain, q, z, target)

    # Weight 0 beyond shell 3: the gradients are those of the loss over shells 0-3 alone.
    cut = _model()
    cut.field_grad_weight.copy_((torch.arange(cut.field_grad_weight.shape[0]) <= 3).float())
    f1, g1, gz1 = _loss_and_grads(cut, q, z, target)
    assert torch.equal(f1, f0)  # the forward is the identity
    inner = _model()
    inner.zero_grad()
    zz = z.clone().requires_grad_(True)
    f = inner.field_values(q, zz)
    ((f - target) ** 2 * (shell <= 3)[:, None, :, None]).sum().backward()
    for name, grad in g1.items():
        torch.testing.assert_close(grad, dict(inner.fields.named_parameters())[name].grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gz1, zz.grad, rtol=1e-4, atol=1e-5)
    assert any((g0[n] - g1[n]).abs().max() > 1e-4 for n in g0)  # the cut did change them

    # A constant weight c scales every gradient by c.
    three = _model()
    three.field_grad_weight.fill_(3.0)
    _, g3, _ = _loss_and_grads(three, q, z, target)
    for name, grad in g3.items():
        torch.testing.assert_close(grad, 3 * g0[name], rtol=1e-4, atol=1e-5)


def test_no_scaling_without_gradients_and_under_cpu_autocast():
    q, z, target = _inputs()
    model = _model()
    model.field_grad_weight.fill_(5.0)
    with torch.no_grad():
        a = model.field_values(q, z)
    plain = _model()
    with torch.no_grad():
        assert torch.equal(a, plain.field_values(q, z))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f = model.field_values(q, z)
        loss = ((f - target) ** 2).sum()
    loss.backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f_plain = plain.field_values(q, z)
        ((f_plain - target) ** 2).sum().backward()
    for (name, p), p_plain in zip(model.fields.named_parameters(), plain.fields.parameters()):
        if p.grad is not None:
            # bf16 rounds the scaled and the plain products differently: compare whole tensors
            assert (p.grad - 5 * p_plain.grad).norm() <= 0.03 * (5 * p_plain.grad).norm(), name


def test_scale_gradient_broadcasts():
    x = torch.randn(2, 3, requires_grad=True)
    y = scale_gradient(x, torch.tensor([[1.0, 2.0, 0.5]]))
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([[1.0, 2.0, 0.5]] * 2))


def test_gradient_weights_undo_the_signal_share_up_to_the_cap():
    s = torch.tensor([1.0, 0.5, 0.2, 0.01, 0.0])
    torch.testing.assert_close(gradient_weights(s, 8.0), torch.tensor([1.0, 2.0, 5.0, 8.0, 8.0]))
    assert torch.equal(gradient_weights(s, 1.0), torch.ones(5))  # 1: none


def test_checkpoints_from_before_load_with_no_scaling():
    model = _model()
    state = {k: v for k, v in model.state_dict().items() if k != "field_grad_weight"}
    fresh = _model(seed=3)
    fresh.field_grad_weight.fill_(4.0)
    fresh.load_state_dict(state)  # strict: the missing key is filled, not an error
    assert torch.equal(fresh.field_grad_weight, torch.ones_like(fresh.field_grad_weight))


@pytest.mark.parametrize("value", [0.5, True])
def test_bad_precondition_is_refused(value):
    from hetfield.errors import ConfigError
    from hetfield.train.config import TrainConfig

    with pytest.raises(ConfigError, match="--field-prior-precondition .*at least 1"):
        TrainConfig(field_prior_precondition=value).validate()


def test_default_is_four_for_one_field_and_none_for_a_mixture():
    from hetfield.train.config import PREDATED, TrainConfig

    assert TrainConfig().effective_field_prior_precondition == 4.0
    assert TrainConfig(n_classes=2).effective_field_prior_precondition == 1.0
    assert TrainConfig(n_classes=2, field_prior_precondition=3).effective_field_prior_precondition == 3.0
    assert PREDATED["field_prior_precondition"] == 1.0  # runs from before trained without it


def test_the_prior_installs_the_weights_from_its_signal_share():
    import numpy as np

    from hetfield.train.config import TrainConfig
    from hetfield.train.field_prior import initialise_field_prior

    from .synthetic import tilt_series_dataset

    ds = tilt_series_dataset(n_particles=8, n_tilts=5, seed=3)
    shape = ModelShape(box=ds.box, n_particles=ds.n_particles, n_images=ds.n_images, zdim=0, conf_estimation="none", field_hidden=16, field_layers=1,
                       pe_features=8, latent_start="none", field_prior=True)
    cfg = TrainConfig(zdim=0, conf_estimation="none")
    model = Reconstruction(shape)
    before = model.amplitude.clone()
    initialise_field_prior(model, ds, cfg, np.arange(ds.n_particles))
    s = model.amplitude / before  # the signal's share the prior put on the amplitude
    torch.testing.assert_close(model.field_grad_weight, gradient_weights(s, 4.0), rtol=1e-5, atol=1e-6)
    assert model.field_grad_weight.max() > 1  # the synthetic set's high shells are noise: scaled

