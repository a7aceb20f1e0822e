"""Sweep plans: grid expansion, run ids, and bad grids refused before any training."""

from __future__ import annotations

import csv

import pytest

from hetfield.errors import ConfigError
from hetfield.sweep.plan import format_value, make_plan, read_plan, run_id_for

from helpers import assert_usage_error, run_cli


def test_expansion_order_and_ids():
    plan = make_plan(beta="0.1,1", zdim="4,8", n_classes="1,3", base={"epochs": 12})
    ids = [r["run_id"] for r in plan.runs]
    assert ids == [
        "beta0p1-zdim4-k1", "beta0p1-zdim4-k3", "beta0p1-zdim8-k1", "beta0p1-zdim8-k3",
        "beta1-zdim4-k1", "beta1-zdim4-k3", "beta1-zdim8-k1", "beta1-zdim8-k3",
    ]
    assert all(r["epochs"] == 12 for r in plan.runs)
    assert make_plan(beta="0.1,1", zdim="4,8", n_classes="1,3", base={"epochs": 12}).to_csv() == plan.to_csv()


def test_ids_are_filesystem_safe_and_distinct():
    values = [0.1, 1.0, 1e-5, 0.001, 2.5, 10.0, 100.0, 0.0]
    ids = {run_id_for(b, 8, 2) for b in values}
    assert len(ids) == len(values)
    assert all(set(i) <= set("abcdefghijklmnopqrstuvwxyz0123456789-") for i in ids)
    assert format_value(1e-5) == "1em05" and format_value(2.0) == "2" and format_value(0.25) == "0p25"


def test_default_beta_is_the_elbo_weight_and_zdim0_runs_once():
    plan = make_plan(zdim="0,4", n_classes="2")
    assert [(r["zdim"], r["beta"]) for r in plan.runs] == [(0, 0.0), (4, 2.0)]
    assert make_plan(zdim="4", base={"std_noise": 0.5}).runs[0]["beta"] == 0.5, "2·std_noise², as training's default"
    plan = make_plan(beta="0.1,1", zdim="0", n_classes="1")
    assert len(plan.runs) == 1 and plan.notes


def test_csv_round_trip(tmp_path):
    path = tmp_path / "plan.csv"
    path.write_text(make_plan(beta="0.5", zdim="2,3", n_classes="1", base={"epochs": 4, "dose_mask": False}).to_csv())
    rows = read_plan(path)
    assert rows[0] == {"run_id": "beta0p5-zdim2-k1", "beta": 0.5, "zdim": 2, "n_classes": 1, "epochs": 4, "dose_mask": False}
    header = next(csv.reader(path.read_text().splitlines()))
    assert header[:4] == ["run_id", "beta", "zdim", "n_classes"]  # what the Nextflow PLAN step reads


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"zdim": ""}, "empty value"),
        ({"beta": "-1"}, "zero or positive"),
        ({"zdim": "4,2.5"}, "whole numbers"),
        ({"zdim": "4,4"}, "given twice"),
        ({"n_classes": "0"}, "at least one class"),
        ({"beta": "0.1,abc"}, "not valid"),
        ({"zdim": "-2"}, "0 or more"),
        ({"base": {"zdim": 3}}, "grid axes"),
        ({"base": {"nonsense": 1}}, "unknown training option"),
    ],
)
def test_bad_grids(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        make_plan(**kwargs)


def test_bad_grid_on_the_command_line_writes_nothing(tmp_path):
    out = tmp_path / "plan.csv"
    proc = run_cli("sweep", "plan", "--beta", "0.1,0.1", "--zdim", "4", "--out", out)
    assert_usage_error(proc, "--beta", "given twice")
    assert not out.exists()
    proc = run_cli("sweep", "plan", "--zdim", "8", "--set", "epochs", "--out", out)
    assert_usage_error(proc, "--set", "option=value")


def test_grid_file(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text("grid:\n  zdim: [2, 4]\n  n_classes: [1]\nbase:\n  epochs: 3\n")
    out = tmp_path / "plan.csv"
    proc = run_cli("sweep", "plan", "--grid", grid, "--n-classes", "1,2", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert [r["run_id"] for r in read_plan(out)] == ["beta2-zdim2-k1", "beta2-zdim2-k2", "beta2-zdim4-k1", "beta2-zdim4-k2"]
    grid.write_text("grid:\n  lr: [1, 2]\n")
    assert_usage_error(run_cli("sweep", "plan", "--grid", grid, "--out", out), "unknown grid axis lr")


def test_plan_file_errors(tmp_path):
    bad = tmp_path / "plan.csv"
    bad.write_text("run_id,beta,zdim,n_classes\nok,0,4,1\nok,0,8,1\n")
    with pytest.raises(ConfigError, match="appears twice"):
        read_plan(bad)
    bad.write_text("run_id,beta,zdim,n_classes\n../escape,0,4,1\n")
    with pytest.raises(ConfigError, match="safe directory name"):
        read_plan(bad)
    bad.write_text("run_id,beta,zdim,n_classes\nok,0,four,1\n")
    with pytest.raises(ConfigError, match="line 2.*zdim takes a whole number"):
        read_plan(bad)


def test_a_tri_state_option_takes_auto():
    """amp is auto (bf16 on GPU, fp32 on CPU), true or false: a plan can say any of the three."""
    from hetfield.errors import ConfigError
    from hetfield.sweep.options import coerce_option

    assert [coerce_option("amp", v, "--set") for v in ("auto", "AUTO", "true", "0")] == ["auto", "auto", True, False]
    assert coerce_option("amp", True, "grid.yaml") is True
    with pytest.raises(ConfigError, match="amp takes true, false or auto"):
        coerce_option("amp", "fast", "--set amp=fast")
    with pytest.raises(ConfigError, match="dose_mask takes true or false"):
        coerce_option("dose_mask", "auto", "--set dose_mask=auto")
