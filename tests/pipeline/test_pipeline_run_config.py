"""`hetfield sweep config`: one plan row as the YAML TRAIN passes to `hetfield train --config`.

The pipeline and `hetfield sweep run` must train the same settings from the same plan row; both go
through hetfield.sweep.run_config. These checks are fast (no training): the YAML loads back to the
exact TrainConfig the runner resolves, extra plan columns and a grid's base reach it, and bad input
is one line with exit code 2.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from hetfield.errors import ConfigError
from hetfield.sweep.plan import read_plan
from hetfield.sweep.run_config import resolve_run, run_options, write_run_config
from hetfield.train.config import TrainConfig, resolve_config


def cli(*args, cwd: Path, env) -> subprocess.CompletedProcess:
    return subprocess.run(["hetfield", *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def plan(tmp_path, cli_env) -> Path:
    grid = tmp_path / "grid.yaml"
    grid.write_text("grid:\n  zdim: [2]\n  n_classes: [1, 2]\nbase:\n  field_hidden: 16\n  lr: 2.0e-3\n")
    proc = cli("sweep", "plan", "--grid", grid, "--set", "epochs=2", "--set", "dose_mask=false", "--out", "plan.csv", cwd=tmp_path, env=cli_env)
    assert proc.returncode == 0, proc.stderr
    return tmp_path / "plan.csv"


def test_the_yaml_is_every_setting_sweep_run_trains(plan, tmp_path, cli_env):
    rows = read_plan(plan)
    for row in rows:
        out = tmp_path / f"{row['run_id']}.yaml"
        proc = cli("sweep", "config", plan, "--run-id", row["run_id"], "--out", out, cwd=tmp_path, env=cli_env)
        assert proc.returncode == 0, proc.stderr
        written = yaml.safe_load(out.read_text())
        assert set(written) == set(TrainConfig.__dataclass_fields__), "every setting, defaults included"
        runner = resolve_run(plan, row)
        assert resolve_config(out, {}) == runner, "`hetfield train --config` resolves the runner's TrainConfig"
        assert (written["epochs"], written["field_hidden"], written["lr"], written["dose_mask"]) == (2, 16, 0.002, False)
        assert written["n_classes"] == row["n_classes"] and written["beta"] == 2.0
        assert out.read_text().splitlines().count("batch_size: 4") == 1, "one `option: value` line each (TRAIN reads batch_size)"


def test_a_base_config_sits_under_the_plan_row(plan, tmp_path):
    row = read_plan(plan)[0]
    cfg = write_run_config(plan, row["run_id"], tmp_path / "r.yaml", base={"epochs": 9, "enc_hidden": 64})
    assert (cfg.epochs, cfg.enc_hidden) == (2, 64), "plan columns override the base; the base fills the rest"
    assert run_options(row, {"epochs": 9}) == {k: v for k, v in row.items() if k != "run_id"}


def test_an_unknown_run_is_one_line_naming_the_runs(plan, tmp_path, cli_env):
    proc = cli("sweep", "config", plan, "--run-id", "beta1-zdim9-k1", "--out", "x.yaml", cwd=tmp_path, env=cli_env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith("no run 'beta1-zdim9-k1' in the plan; its runs are beta2-zdim2-k1, beta2-zdim2-k2")
    assert not (tmp_path / "x.yaml").exists(), "nothing written"


def test_a_bad_value_names_the_plan_and_the_run(tmp_path, cli_env):
    plan = tmp_path / "plan.csv"
    plan.write_text("run_id,beta,zdim,n_classes,epochs,class_init_epochs\nr1,0.5,2,2,2,5\n")
    with pytest.raises(ConfigError, match=r"plan\.csv: run r1: --class-init-epochs 5: must be smaller than --epochs 2"):
        write_run_config(plan, "r1", tmp_path / "r1.yaml")
    proc = cli("sweep", "config", plan, "--run-id", "r1", "--out", "r1.yaml", cwd=tmp_path, env=cli_env)
    assert proc.returncode == 2 and "run r1: --class-init-epochs 5" in proc.stderr and not (tmp_path / "r1.yaml").exists()
