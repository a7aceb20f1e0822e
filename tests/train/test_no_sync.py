"""The training step builds no tensor from Python numbers and reads nothing back to the host.

Counted on CPU by wrapping the calls that would copy host → device (``torch.tensor``) or wait for
the device (``item``, ``tolist``, ``float()``/``int()``/``bool()`` of a tensor, ``cpu``, ``numpy``):
a run with twice as many steps must make exactly as many such calls — whatever the count outside the
steps (setup, validation, checkpoints), none of it grows with the number of steps.
"""

from __future__ import annotations

import collections
import sys

import pytest
import torch

from hetfield.train.config import TrainConfig
from hetfield.train.loop import train

from helpers import simulate_and_setup

TINY = dict(zdim=2, epochs=1, field_hidden=16, field_layers=2, enc_hidden=16, enc_embed=8, enc_grid=4, pe_features=8, threads=1,
            device="cpu", val_fraction=0.0)
WATCHED = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return simulate_and_setup(tmp_path_factory.mktemp("sync"), "d", n_particles=12, n_classes=1, n_tilts=3, box=16, snr=1.0, seed=2) / "dataset"


def _count_calls(monkeypatch, run) -> collections.Counter:
    counts: collections.Counter = collections.Counter()

    def wrap(owner, name):
        original = getattr(owner, name)

        def counted(*args, **kwargs):
            # Only hetfield's own calls: torch's optimisers read their step counters, CPU tensors
            # on every device, with item() (no device sync).
            if sys._getframe(1).f_globals.get("__name__", "").startswith("hetfield"):
                counts[name] += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)

    wrap(torch, "tensor")
    for name in WATCHED:
        wrap(torch.Tensor, name)
    try:
        run()
    finally:
        monkeypatch.undo()
    return counts


@pytest.mark.parametrize("zdim,conf", [(2, "encoder"), (2, "autodecoder")])
def test_training_steps_make_no_host_device_round_trips(tiny, tmp_path, monkeypatch, zdim, conf):
    few = _count_calls(monkeypatch, lambda: train(tmp_path / "few", tiny, TrainConfig(batch_size=6, conf_estimation=conf, **{**TINY, "zdim": zdim})))
    many = _count_calls(monkeypatch, lambda: train(tmp_path / "many", tiny, TrainConfig(batch_size=2, conf_estimation=conf, **{**TINY, "zdim": zdim})))
    # 2 steps against 6: any per-step call shows as a difference.
    assert many == few, {k: (few[k], many[k]) for k in set(few) | set(many) if few[k] != many[k]}
