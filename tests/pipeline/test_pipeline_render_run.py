"""Render every module's script: block and run it, chained, against the real CLI on tiny data.

Each step runs like a Nextflow task: inputs are linked into a fresh task directory under the
names the module declares (stageAs included), the script is rendered by nfscript.Renderer
(checked against Groovy in test_pipeline_modules) and run with `bash -ue`, with bin/ (the
hetfield shim) and this interpreter's bin/ first on PATH. Afterwards every declared output must
exist. The chain mirrors main.nf: SIMULATE → SETUP → PLAN → TRAIN (first plan row) → CONVERGENCE
→ ANALYZE → SUMMARIZE, plus a TRAIN retry (attempt 2) that resumes from the first attempt's run.
A step whose input step failed is skipped, naming it.
"""

from __future__ import annotations

import csv

import pytest

import nfscript

pytestmark = pytest.mark.slow

SIMULATE_ARGS = "--n-particles 16 --n-classes 2 --box 24 --n-tilts 3 --seed 0"
EPOCHS = 2
BATCH_SIZE = 8


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


def test_simulate(chain, modules, cli_env):
    run_step(chain, modules, cli_env, "simulate", "simulate", [{"id": "sim"}], ext={"args": SIMULATE_ARGS})


def test_setup(chain, modules, cli_env):
    sim = chain["results"].get("simulate")
    inputs = [[{"id": "sim"}, sim.output("particles")[0], sim.output("particles")[1]]] if sim else []
    run_step(chain, modules, cli_env, "setup", "setup", inputs, needs=["simulate"])


def test_plan(chain, modules, cli_env):
    result = run_step(chain, modules, cli_env, "plan", "plan", [["1.0", "2", "1,2"]])
    rows = list(csv.DictReader(result.output("plan")[0].open()))
    assert len(rows) == 2
    assert {"run_id", "beta", "zdim", "n_classes"} <= set(rows[0])
    assert len({row["run_id"] for row in rows}) == 2, "run ids are unique"
    assert sorted(row["n_classes"] for row in rows) == ["1", "2"]


def _meta(chain):
    """The first plan row as main.nf makes it; a stand-in row if PLAN failed, so TRAIN is still tried."""
    if "plan" in chain["results"]:
        row = next(csv.DictReader(chain["results"]["plan"].output("plan")[0].open()))
    else:
        row = {"run_id": "beta1.0_zdim2_k1", "beta": "1.0", "zdim": "2", "n_classes": "1"}
    return {"id": row["run_id"], **row, "dataset": "sim"}


def test_train(chain, modules, cli_env):
    if "setup" not in chain["results"]:
        run_step(chain, modules, cli_env, "train", "train", [], needs=["setup"])
    meta = _meta(chain)
    dataset = chain["results"]["setup"].output("dataset")[0]
    result = run_step(chain, modules, cli_env, "train", "train", [[meta, dataset], EPOCHS, BATCH_SIZE])
    run = result.output("run")[0]
    for name in ("config.yaml", "metrics.jsonl", f"weights.{EPOCHS}.pt", f"latent.{EPOCHS}.npz"):
        assert (run / name).exists(), f"run directory lacks {name}"


def test_train_retry_resumes_with_half_the_batch(chain, modules, cli_env):
    """Attempt 2 (after exit 75): copies attempt 1's run, --load latest, batch size 8 >> 1 = 4."""
    if "train" not in chain["results"]:
        run_step(chain, modules, cli_env, "train", "train_retry", [], needs=["train"])
    first = chain["results"]["train"]
    meta = _meta(chain)
    dataset = chain["results"]["setup"].output("dataset")[0]
    result = run_step(
        chain, modules, cli_env, "train", "train_retry", [[meta, dataset], EPOCHS + 1, BATCH_SIZE],
        attempt=2, previousTrace={"workdir": str(first.workdir)},
    )
    run = result.output("run")[0]
    assert (run / f"weights.{EPOCHS + 1}.pt").exists(), "the retry continued to the new epoch count"
    assert (run / "weights.1.pt").exists(), "the retry kept the first attempt's checkpoints"
    assert not (first.output("run")[0] / f"weights.{EPOCHS + 1}.pt").exists(), "the first attempt's directory is untouched"
    assert "--load latest" in result.script and "bs=$(( 8 >> (2 - 1) ))" in result.script


def test_convergence(chain, modules, cli_env):
    train = chain["results"].get("train")
    inputs = [[_meta(chain), train.output("run")[0]]] if train else []
    run_step(chain, modules, cli_env, "convergence", "convergence", inputs, needs=["train"])


def test_analyze(chain, modules, cli_env):
    train, conv, setup = (chain["results"].get(k) for k in ("train", "convergence", "setup"))
    inputs = [[_meta(chain), train.output("run")[0], conv.output("convergence")[0], setup.output("dataset")[0]]] if train and conv and setup else []
    result = run_step(chain, modules, cli_env, "analyze", "analyze", inputs, needs=["train", "convergence", "setup"])
    staged = train.output("run")[0]
    assert not (staged / "convergence").exists() and not list(staged.glob("analysis*")), "nothing written into the staged run"
    out = result.output("analysis")[0]
    assert list(out.rglob("*.star")), "STAR exports of classes/clusters written from the staged dataset"


def test_summarize(chain, modules, cli_env):
    got = [chain["results"].get(k) for k in ("train", "convergence", "analyze")]
    inputs = [[got[0].output("run")[0]], [got[1].output("convergence")[0]], [got[2].output("analysis")[0]]] if all(got) else []
    run_step(chain, modules, cli_env, "summarize", "summarize", inputs, needs=["train", "convergence", "analyze"])
