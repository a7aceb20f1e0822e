"""--amp on CPU: bf16 autocast runs (the numbers change) without changing the quality; the
precision used is recorded; runs written before amp had "auto" load and resume as before."""

from __future__ import annotations

import pytest
import yaml

from hetfield.train.config import TrainConfig, resolve_config
from hetfield.train.loop import train
from hetfield.train.rundir import RunDir

from helpers import simulate_and_setup

SMALL = dict(zdim=2, epochs=3, batch_size=4, field_hidden=32, field_layers=2, enc_hidden=32, enc_embed=16, enc_grid=4,
             pe_features=16, threads=1, device="cpu", val_fraction=0.2)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return simulate_and_setup(tmp_path_factory.mktemp("amp"), "d", n_particles=30, n_classes=2, n_tilts=5, box=32, snr=1.0, seed=6) / "dataset"


def test_amp_on_cpu_trains_in_bf16_with_the_validation_loss_of_fp32(small, tmp_path):
    fp32 = train(tmp_path / "fp32", small, TrainConfig(amp="auto", **SMALL))
    bf16 = train(tmp_path / "bf16", small, TrainConfig(amp=True, **SMALL))
    assert bf16["loss"] != fp32["loss"]  # autocast did run
    assert abs(bf16["val_data_loss"] / fp32["val_data_loss"] - 1) < 0.01, (bf16["val_data_loss"], fp32["val_data_loss"])
    assert RunDir(tmp_path / "fp32").config()["precision"] == "fp32"
    assert RunDir(tmp_path / "bf16").config()["precision"] == "bf16-mixed"
    assert "precision bf16-mixed" in (tmp_path / "bf16" / "run.log").read_text()
    assert "precision fp32" in (tmp_path / "fp32" / "run.log").read_text()


def test_amp_is_auto_true_or_false_and_nothing_else():
    assert TrainConfig().amp == "auto"
    assert resolve_config(None, {"amp": False}).amp is False
    with pytest.raises(Exception, match="must be auto .* true .* or false"):
        TrainConfig(amp="bf16").validate()


def test_a_run_written_before_auto_resumes_with_amp_auto(small, tmp_path):
    cfg = TrainConfig(**{**SMALL, "epochs": 1})
    train(tmp_path / "r", small, cfg)
    run = RunDir(tmp_path / "r")
    data = run.config()
    data.pop("precision")
    data["train"]["amp"] = True  # the old default: bf16 on GPU only
    run.config_path.write_text(yaml.safe_dump(data))
    assert run.train_settings()["amp"] == "auto"
    from hetfield.train.prepare import resume_config

    resumed, _ = resume_config(run.path, None, {"epochs": 2})
    assert resumed.amp == "auto"
    train(run.path, small, resumed, load="latest")
    assert run.config()["precision"] == "fp32"  # CPU: still fp32, as before
    assert "precision fp32" in run.log_path.read_text().splitlines()[-2]
