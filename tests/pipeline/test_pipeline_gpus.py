"""params.gpus_per_run: TRAIN asks for that many GPUs and starts torchrun with one process per GPU.

The TRAIN script is run for real (nfscript.run_block) with stand-ins for `hetfield` and `torchrun`
that record their command lines; the resource requests are read from the configs.
"""

from __future__ import annotations

import json
import os
import re
import stat

import pytest

import nfscript
from nfscript import REPO

FAKE = """#!/bin/sh
echo "$(basename "$0") $*" >> "$CALLS"
if [ "$1" = sweep ]; then
    while [ $# -gt 0 ]; do [ "$1" = --out ] && printf 'batch_size: 8\\npose_estimation: %s\\n' "$POSES" > "$2"; shift; done
fi
[ "$1" = --version ] && echo 'hetfield 0.0'
exit 0
"""


def _train_calls(modules, tmp_path, gpus, poses="fixed"):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("hetfield", "torchrun"):
        (bin_dir / name).write_text(FAKE)
        (bin_dir / name).chmod(0o755 | stat.S_IXUSR)
    (tmp_path / "dataset").mkdir(exist_ok=True)
    (tmp_path / "plan.csv").write_text("run_id\nr0\n")
    calls = tmp_path / f"calls{gpus}.txt"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CALLS=str(calls), POSES=poses)
    meta = {"id": "run0", "run_id": "r0"}
    # -profile gpu: conf/base.config's accelerator (params.gpus_per_run); none without it.
    task = {"cpus": 2, "accelerator": None if gpus is None else {"request": gpus}}
    result = nfscript.run_block(modules["train"], tmp_path / f"task{gpus}", [[meta, tmp_path / "dataset", tmp_path / "plan.csv"]], task, env=env)
    assert result.returncode == 0, result.tail()
    return [line for line in calls.read_text().splitlines() if " train " in f" {line} "]


@pytest.mark.parametrize("gpus", [None, 1])
def test_one_gpu_trains_with_plain_hetfield(modules, tmp_path, gpus):
    (call,) = _train_calls(modules, tmp_path, gpus)
    assert call.startswith("hetfield train run0 --data ") and "--batch-size 8" in call


def test_several_gpus_train_under_torchrun_one_process_each(modules, tmp_path):
    (call,) = _train_calls(modules, tmp_path, 4)
    assert call.startswith("torchrun --standalone --nproc_per_node 4 -m hetfield.cli.app train run0 --data "), call
    assert "--batch-size 8" in call


def test_an_abinit_run_trains_under_torchrun_on_several_gpus(modules, tmp_path):
    """Ab initio plans take every GPU as the others do (the ranks share their searched poses:
    tests/train/test_torchrun.py)."""
    (call,) = _train_calls(modules, tmp_path, 4, poses="abinit")
    assert call.startswith("torchrun --standalone --nproc_per_node 4 -m hetfield.cli.app train run0 --data "), call


def _text(name: str) -> str:
    return nfscript.strip_comments((REPO / name).read_text())


def test_the_parameter_and_its_schema():
    assert nfscript.parse_params((REPO / "nextflow.config").read_text())["gpus_per_run"] == 1
    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    props = {k: v for group in schema["$defs"].values() for k, v in group["properties"].items()}
    assert props["gpus_per_run"]["type"] == "integer" and props["gpus_per_run"]["minimum"] == 1


def test_trains_ask_the_executors_for_that_many_gpus():
    base = _text("conf/base.config")
    gpu_block = base[base.index("withLabel: 'process_gpu'"):]
    assert re.search(r"accelerator\s*=\s*\{[^}]*\?\s*params\.gpus_per_run\s*:\s*null", gpu_block)
    cfg = _text("nextflow.config")
    assert '"--gres=gpu:${params.gpus_per_run}"' in cfg  # slurm, unless --slurm_gpu_options says otherwise
    assert "[request: params.gpus_per_run, type: params.google_gpu_type]" in cfg  # google batch
