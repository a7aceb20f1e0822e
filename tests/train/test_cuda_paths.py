"""The device paths, on a CUDA GPU only (skipped elsewhere, with the reason)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hetfield.imaging.projection import translate_images
from hetfield.imaging.rotations import random_rotations
from hetfield.model.fields import FourierFeatures
from hetfield.model.points import LatticePoints
from hetfield.train.config import TrainConfig
from hetfield.train.loop import train
from hetfield.train.rundir import RunDir

from helpers import simulate_and_setup

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (the CPU runs of the same code are in test_precision_run.py and test_no_sync.py)")


def test_translate_images_stays_on_the_gpu_and_matches_the_cpu():
    imgs = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(0))
    shift = torch.tensor([[1.5, -2.0], [0.0, 3.25], [-4.0, 0.5]])
    got = translate_images(imgs.cuda(), shift.cuda())
    assert got.device.type == "cuda"
    assert torch.allclose(got.cpu(), translate_images(imgs, shift), atol=1e-4)


def test_cuda_autocast_features_equal_fp32():
    pts = LatticePoints(128).cuda()
    ff = FourierFeatures(64, 128).cuda()
    rot = torch.as_tensor(random_rotations(4, np.random.default_rng(0)), dtype=torch.float32, device="cuda")
    ref = ff(pts.frequencies_3d(rot))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got = ff(pts.frequencies_3d(rot))
    assert got.dtype == torch.float32
    # TF32 may be on for fp32 matmuls elsewhere; these products are 3-long, so compare phases loosely.
    assert float((got - ref).abs().max()) < 1e-3 * math.pi


def test_a_default_run_on_the_gpu_is_bf16_mixed(tmp_path):
    ds = simulate_and_setup(tmp_path, "d", n_particles=24, n_classes=2, n_tilts=4, box=32, snr=1.0, seed=3) / "dataset"
    cfg = TrainConfig(zdim=2, epochs=2, batch_size=4, field_hidden=32, field_layers=2, enc_hidden=32, enc_embed=16, enc_grid=4, pe_features=16, device="cuda")
    metrics = train(tmp_path / "run", ds, cfg)
    assert RunDir(tmp_path / "run").config()["precision"] == "bf16-mixed"
    assert math.isfinite(metrics["loss"])
