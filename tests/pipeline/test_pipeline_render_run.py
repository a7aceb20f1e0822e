"""Render every module's script: block and run it, chained, against the real CLI on tiny data.

Each step runs like a Nextflow task: inputs are linked into a fresh task directory under the
names the module declares (stageAs included), the script is rendered by nfscript.Renderer
(checked against Groovy in test_pipeline_modules) and run with the task shell, with bin/ (the
hetfield shim) and this interpreter's bin/ first on PATH. Afterwards every declared output must
exist. The chain mirrors main.nf: SIMULATE → SETUP → PLAN → TRAIN (first plan row) → CONVERGENCE
→ ANALYZE → SUMMARIZE, plus a TRAIN retry (attempt 2) that resumes a killed attempt with half the
batch size, and `hetfield sweep run` on the same plan, which must train the same settings.
A step whose input step failed is skipped, naming it.

The plan carries settings beyond the grid (PLAN_SETTINGS, as conf/modules.config turns
--epochs/--batch_size/--settings into `--set`): TRAIN must train exactly them.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import nfscript

pytestmark = pytest.mark.slow

SIMULATE_ARGS = "--n-particles 16 --n-classes 2 --box 24 --n-tilts 3 --seed 0"
# Every value differs from hetfield's default, so a setting that is not applied shows.
PLAN_SETTINGS = {"epochs": 2, "batch_size": 8, "field_hidden": 16, "enc_hidden": 32, "lr": 0.002, "lr_encoder": 0.0005, "seed": 3}
PLAN_ARGS = " ".join(f"--set {k}={v}" for k, v in PLAN_SETTINGS.items())
# Tasks compile numba's functions into their own task directory (the modules' cache policy), so
# UMAP would cost each task ~40 s of CPU here; the CLI's UMAP path is tested in tests/analysis.
NO_UMAP = "--no-umap"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return {"root": tmp_path_factory.mktemp("render_run"), "results": {}, "failed": set()}


def run_step(chain, modules, cli_env, step, name, inputs, needs=(), **task):
    for dep in needs:
        if dep in chain["failed"] or dep not in chain["results"]:
            chain["failed"].add(name)
            pytest.skip(f"needs the output of {dep}, which did not run")
    chain["failed"].add(name)  # until it succeeds
    task = {"cpus": 2, **task}
    result = nfscript.run_block(modules[step], chain["root"] / name, inputs, task, env=cli_env)
    command = next((line for line in result.script.splitlines() if line.startswith("hetfield ")), "?")
    assert result.returncode == 0, (
        f"{modules[step].name} failed (exit {result.returncode}); command:\n  {command}\n"
        f"task dir: {result.workdir}\n--- output tail ---\n{result.tail()}"
    )
    assert not result.missing_outputs(), f"{modules[step].name}: declared outputs missing: {result.missing_outputs()}"
    chain["failed"].discard(name)
    chain["results"][name] = result
    return result


def train_settings(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())["train"]


def planned_settings(plan: Path, run_id: str) -> dict:
    """What `hetfield sweep run` trains for this row: the runner's own resolution of the plan."""
    from hetfield.sweep.plan import read_plan
    from hetfield.sweep.run_config import resolve_run

    row = next(r for r in read_plan(plan) if r["run_id"] == run_id)
    return resolve_run(plan, row).to_dict()


def test_simulate(chain, modules, cli_env):
    run_step(chain, modules, cli_env, "simulate", "simulate", [{"id": "sim"}], ext={"args": SIMULATE_ARGS})


def test_setup(chain, modules, cli_env):
    from hetfield.data.cache import METADATA_PATHS

    sim = chain["results"].get("simulate")
    inputs = [[{"id": "sim"}, sim.output("particles")[0], sim.output("particles")[1]]] if sim else []
    result = run_step(chain, modules, cli_env, "setup", "setup", inputs, needs=["simulate"])
    # the metadata ANALYZE gets is the dataset less its image cache, file for file
    dataset, metadata = result.output("dataset")[0], result.output("metadata")[0]
    assert sorted(f.name for f in metadata.iterdir()) == sorted(METADATA_PATHS)
    files = sorted(f.relative_to(dataset) for f in dataset.rglob("*") if f.is_file() and f.name != "images.npy")
    assert sorted(f.relative_to(metadata) for f in metadata.rglob("*") if f.is_file()) == files
    for rel in files:
        assert (metadata / rel).read_bytes() == (dataset / rel).read_bytes(), rel


def test_plan(chain, modules, cli_env):
    """Empty beta: hetfield's 2·std_noise² (2 at std_noise 1); the settings become columns of every row."""
    result = run_step(chain, modules, cli_env, "plan", "plan", [["", "2", "1,2"]], ext={"args": PLAN_ARGS})
    rows = list(csv.DictReader(result.output("plan")[0].open()))
    assert len(rows) == 2 and len({row["run_id"] for row in rows}) == 2
    assert sorted(row["n_classes"] for row in rows) == ["1", "2"]
    assert {row["beta"] for row in rows} == {"2.0"}, "beta 2·std_noise², hetfield's default, not one of the pipeline's"
    for row in rows:
        assert {k: row[k] for k in PLAN_SETTINGS} == {k: str(v) for k, v in PLAN_SETTINGS.items()}


def _meta(chain):
    """The first plan row as main.nf makes it; a stand-in row if PLAN failed, so TRAIN is still tried."""
    if "plan" in chain["results"]:
        row = next(csv.DictReader(chain["results"]["plan"].output("plan")[0].open()))
    else:
        row = {"run_id": "beta0p5-zdim2-k1", "beta": "0.5", "zdim": "2", "n_classes": "1"}
    return {"id": row["run_id"], **row, "dataset": "sim"}


def test_train_trains_every_setting_of_the_plan_row(chain, modules, cli_env):
    if not {"setup", "plan"} <= set(chain["results"]):
        run_step(chain, modules, cli_env, "train", "train", [], needs=["setup", "plan"])
    meta = _meta(chain)
    dataset = chain["results"]["setup"].output("dataset")[0]
    plan = chain["results"]["plan"].output("plan")[0]
    result = run_step(chain, modules, cli_env, "train", "train", [[meta, dataset, plan]])
    run = result.output("run")[0]
    for name in ("config.yaml", "metrics.jsonl", "weights.2.pt", "latent.2.npz"):
        assert (run / name).exists(), f"run directory lacks {name}"
    assert not (run / "weights.3.pt").exists() and not (run / "weights.20.pt").exists()
    applied = train_settings(run)
    assert {k: applied[k] for k in PLAN_SETTINGS} == PLAN_SETTINGS
    assert applied == planned_settings(plan, meta["run_id"]), "every other setting is hetfield's default, as sweep run resolves it"
    assert yaml.safe_load((run / "config.yaml").read_text())["run_id"] == meta["id"], "the run is named by meta.id"
    assert result.output_env("batch_size") == ["8"]


def test_train_retry_resumes_with_half_the_batch(chain, modules, cli_env):
    """Attempt 2 after attempt 1 was killed after epoch 1: copies its run, --load latest, batch 8 >> 1 = 4."""
    if "train" not in chain["results"]:
        run_step(chain, modules, cli_env, "train", "train_retry", [], needs=["train"])
    meta = _meta(chain)
    # the killed attempt: the finished run without its last epoch
    killed = chain["root"] / "train_killed"
    shutil.copytree(chain["results"]["train"].output("run")[0], killed / meta["id"], symlinks=True)
    for name in ("weights.2.pt", "latent.2.npz"):
        (killed / meta["id"] / name).unlink()
    metrics = killed / meta["id"] / "metrics.jsonl"
    metrics.write_text(metrics.read_text().splitlines(keepends=True)[0])
    dataset = chain["results"]["setup"].output("dataset")[0]
    plan = chain["results"]["plan"].output("plan")[0]
    result = run_step(
        chain, modules, cli_env, "train", "train_retry", [[meta, dataset, plan]],
        attempt=2, previousTrace={"workdir": str(killed)},
    )
    run = result.output("run")[0]
    assert (run / "weights.2.pt").exists(), "the retry finished the run"
    assert (run / "weights.1.pt").read_bytes() == (killed / meta["id"] / "weights.1.pt").read_bytes(), "epoch 1 kept from the killed attempt, not retrained"
    assert not (killed / meta["id"] / "weights.2.pt").exists(), "the failed attempt's directory is untouched"
    applied = train_settings(run)
    assert applied["batch_size"] == 4 and result.output_env("batch_size") == ["4"]
    assert {k: v for k, v in applied.items() if k != "batch_size"} == {k: v for k, v in planned_settings(plan, meta["run_id"]).items() if k != "batch_size"}


def test_sweep_run_trains_the_same_settings_from_the_same_plan(chain, cli_env):
    """`hetfield sweep run` on PLAN's plan, cut to the row TRAIN ran (the header and that row, as
    written: the K = 2 row would only add minutes of training to the suite)."""
    if not {"train", "setup", "plan"} <= set(chain["results"]):
        pytest.skip("needs TRAIN, SETUP and PLAN, which did not run")
    lines = chain["results"]["plan"].output("plan")[0].read_text().splitlines(keepends=True)
    plan = chain["root"] / "sweep_plan.csv"
    plan.write_text("".join(lines[:2]))
    dataset = chain["results"]["setup"].output("dataset")[0]
    out = chain["root"] / "sweep"
    proc = subprocess.run(
        ["hetfield", "sweep", "run", str(plan), "--data", str(dataset), "--out", str(out), "--no-umap", "--k", "3"],
        env=cli_env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = _meta(chain)["run_id"]
    swept = train_settings(out / "runs" / run_id)
    assert swept == train_settings(chain["results"]["train"].output("run")[0]), "sweep run and TRAIN train one thing"
    assert {k: swept[k] for k in PLAN_SETTINGS} == PLAN_SETTINGS


def test_convergence(chain, modules, cli_env):
    train = chain["results"].get("train")
    inputs = [[_meta(chain), train.output("run")[0]]] if train else []
    run_step(chain, modules, cli_env, "convergence", "convergence", inputs, needs=["train"], ext={"args": NO_UMAP})


def test_analyze(chain, modules, cli_env):
    train, conv, setup = (chain["results"].get(k) for k in ("train", "convergence", "setup"))
    inputs = [[_meta(chain), train.output("run")[0], conv.output("convergence")[0], setup.output("metadata")[0]]] if train and conv and setup else []
    result = run_step(chain, modules, cli_env, "analyze", "analyze", inputs, needs=["train", "convergence", "setup"], ext={"args": NO_UMAP})
    staged = train.output("run")[0]
    assert not (staged / "convergence").exists() and not list(staged.glob("analysis*")), "nothing written into the staged run"
    out = result.output("analysis")[0]
    assert list(out.rglob("*.star")), "STAR exports of classes/clusters written from the staged dataset metadata"
    assert not (setup.output("metadata")[0] / "images.npy").exists(), "ANALYZE was staged without the image cache"
    summary = json.loads((out / "summary.json").read_text())
    assert not any("dataset not available" in note for note in summary.get("notes", [])), summary.get("notes")
    assert json.loads((out / "summary.json").read_text())["run_id"] == _meta(chain)["id"]


def test_summarize(chain, modules, cli_env):
    got = [chain["results"].get(k) for k in ("train", "convergence", "analyze")]
    inputs = [[got[0].output("run")[0]], [got[1].output("convergence")[0]], [got[2].output("analysis")[0]]] if all(got) else []
    result = run_step(chain, modules, cli_env, "summarize", "summarize", inputs, needs=["train", "convergence", "analyze"])
    table = list(csv.DictReader((result.output("summary")[0] / "summary.csv").open()))
    assert [row["run_id"] for row in table] == [_meta(chain)["id"]], "the summary names the run by its run id"
