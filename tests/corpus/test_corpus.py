"""The corpus: malformed inputs to every command, each answered by one line, exit code 2, nothing left.

One case is one line of :data:`CASES`: ``C(id, mutation, command, expected fragments)``. The case's
workspace is a fresh copy of the pristine inputs (``conftest.py``: ``sim/``, ``spa/``, ``ds/``,
``run/``, ``plan.csv``, …) with ``mutation`` applied (``mutations.py``); the command runs in it as a
user would (a new ``hetfield`` process, relative paths). Every case must end with

* exit code 2 and no traceback;
* one line on stderr, ``hetfield: error: …``, holding every expected fragment (the file, row, column
  or option) and saying what to do (:func:`says_what_to_do`);
* the workspace exactly as before: no output directory, no hidden temporary, inputs unchanged (names,
  sizes, contents and modes of every file); the pristine inputs unchanged too.

``{ro}`` in a command is a directory nobody may create (``/sys`` is not writable, even by root).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import stat
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from helpers import run_cli
from mutations import (
    chain, checkpoint_change, chmod, delete, edit, grow_first_tensor, npy_objects, npz_change, nothing, star_drop_column,
    star_rename_column, star_set_value, truncate, write, yaml_del, yaml_set,
)

RO = "/sys/hetfield-corpus"
NOT_ROOT = pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")


class C(NamedTuple):
    id: str
    mutate: object
    cmd: str
    expect: list[str]
    mark: object = None


STAR, STACK0, STACK1 = "sim/particles.star", "sim/stacks/particles_000.mrcs", "sim/stacks/particles_001.mrcs"
LAT, W = "run/latent.2.npz", "run/weights.2.pt"
SIMOPT = "--n-particles 4 --n-tilts 2 --box 16"
Q = "-q --no-umap"


def _z_cols(n):
    return lambda z: np.zeros((z.shape[0], n), np.float32)


CASES = [
    # -- simulate ---------------------------------------------------------------------------------------
    C("simulate/out-is-a-file", nothing, f"simulate notes.txt --force {SIMOPT}", ["notes.txt", "is a file"]),
    C("simulate/out-under-a-file", nothing, f"simulate notes.txt/sim {SIMOPT}", ["notes.txt", "is a file, not a directory"]),
    C("simulate/out-not-writable", nothing, f"simulate {RO}/sim {SIMOPT}", [RO, "no permission"]),
    C("simulate/force-over-a-dataset", nothing, f"simulate ds --force {SIMOPT}", ["ds", "not an earlier output", "new directory"]),
    C("simulate/exists-without-force", nothing, f"simulate sim {SIMOPT}", ["sim", "already exists", "--force"]),
    C("simulate/odd-box", nothing, "simulate new --box 15", ["--box"]),
    C("simulate/fractions-not-summing-to-1", nothing, "simulate new --n-classes 2 --class-fractions 0.5,0.7", ["--class-fractions"]),
    C("simulate/zero-snr", nothing, "simulate new --snr 0", ["--snr"]),
    C("simulate/unknown-mode", nothing, "simulate new --mode video", ["--mode", "tilt", "spa"]),
    C("simulate/no-particles", nothing, "simulate new --n-particles 0", ["--n-particles"]),
    # -- setup (readers and the prepared dataset: issue9/i9a) ---------------------------------------------
    C("setup/angle-tilt-misspelt", star_rename_column(STAR, "_rlnAngleTilt", "_rlnAngleTlit"), f"setup new --particles {STAR}", ["_rlnAngleTilt"]),
    C("setup/group-name-misspelt", star_rename_column(STAR, "_rlnGroupName", "_rlnGroupNme"), f"setup new --particles {STAR}", ["_rlnGroupName"]),
    C("setup/no-ctf-bfactor", star_drop_column(STAR, "_rlnCtfBfactor"), f"setup new --particles {STAR}", ["_rlnCtfBfactor"]),
    C("setup/defocus-not-a-number", star_set_value(STAR, "_rlnDefocusU", "abc", row=3), f"setup new --particles {STAR}", ["particles.star", "row 3"]),
    C("setup/empty-star", write(STAR, ""), f"setup new --particles {STAR}", ["particles.star"]),
    C("setup/binary-star", write(STAR, bytes(range(256)) * 4), f"setup new --particles {STAR}", ["particles.star"]),
    C("setup/stack-missing", delete(STACK1), f"setup new --particles {STAR}", ["particles_001.mrcs", "--datadir"]),
    C("setup/stack-truncated", truncate(STACK0), f"setup new --particles {STAR}", ["particles_000.mrcs"]),
    C("setup/stack-not-mrc", write(STACK0, b"\x00" * 2000), f"setup new --particles {STAR}", ["particles_000.mrcs"]),
    C("setup/cs-not-a-cs", write("x.cs", b"not numpy"), "setup new --particles x.cs", ["x.cs"]),
    C("setup/odd-downsample", nothing, f"setup new --particles {STAR} --downsample 15", ["--downsample 15", "even"]),
    C("setup/zero-angpix", nothing, f"setup new --particles {STAR} --angpix 0", ["--angpix", "positive"]),
    C("setup/unknown-source", nothing, f"setup new --particles {STAR} --source warp9", ["--source", "image-series"]),
    C("setup/other-input-into-existing-dataset", nothing, "setup ds --particles spa/particles.star", ["ds", "--force"]),
    C("setup/out-under-a-file", nothing, f"setup notes.txt/ds --particles {STAR}", ["notes.txt", "is a file"]),
    C("setup/out-not-writable", nothing, f"setup {RO}/ds --particles {STAR}", [RO]),
    # -- inspect --------------------------------------------------------------------------------------------
    C("inspect/no-such-path", nothing, "inspect nope.star", ["nope.star", "no such file"]),
    C("inspect/angle-tilt-misspelt", star_rename_column(STAR, "_rlnAngleTilt", "_rlnAngleTlit"), f"inspect {STAR}", ["_rlnAngleTilt"]),
    C("inspect/dataset-yaml-unreadable", write("ds/dataset.yaml", "box: [unclosed\n"), "inspect ds", ["dataset.yaml", "YAML"]),
    C("inspect/dataset-yaml-box-missing", yaml_del("ds/dataset.yaml", "box"), "inspect ds", ["dataset.yaml", "box"]),
    C("inspect/dataset-yaml-box-text", yaml_set("ds/dataset.yaml", "box", "sixteen"), "inspect ds", ["dataset.yaml", "box"]),
    C("inspect/arrays-truncated", truncate("ds/arrays.npz"), "inspect ds", ["arrays.npz"]),
    # -- train (issue9/i9b) -----------------------------------------------------------------------------------
    C("train/no-dataset", nothing, "train new --data nope", ["nope", "hetfield setup"]),
    C("train/zero-epochs", nothing, "train new --data ds --epochs 0", ["--epochs 0", "at least 1"]),
    C("train/negative-lr", nothing, "train new --data ds --lr -1", ["--lr", "positive"]),
    C("train/val-fraction-too-large", nothing, "train new --data ds --val-fraction 0.7", ["--val-fraction"]),
    C("train/class-decode-threshold-above-one", nothing, "train new --data ds --n-classes 3 --class-decode-threshold 1.5", ["--class-decode-threshold 1.5", "[0, 1]"]),
    C("train/class-full-pass-every-zero", write("base.yaml", "n_classes: 3\nclass_full_pass_every: 0\n"), "train new --data ds --config base.yaml", ["--config base.yaml: class_full_pass_every 0", "at least 1", "fix class_full_pass_every in that file"]),
    C("train/config-unknown-option", write("base.yaml", "epochs: 2\nlearning_rate: 1\n"), "train new --data ds --config base.yaml", ["base.yaml", "learning_rate"]),
    C("train/config-bad-yaml", write("base.yaml", "epochs: [2\n"), "train new --data ds --config base.yaml", ["base.yaml", "YAML"]),
    C("train/config-with-load", write("base.yaml", "zdim: 3\n"), "train run --data ds --config base.yaml --load latest", ["--load", "zdim", "from --config base.yaml"]),
    C("train/existing-run", nothing, "train run --data ds --epochs 1", ["run", "--load latest", "--force"]),
    C("train/load-unsaved-epoch", nothing, "train run --data ds --load 7", ["--load 7", "saved epochs"]),
    C("train/cuda-absent", nothing, "train new --data ds --device cuda", ["--device cuda", "cpu"]),
    C("train/out-under-a-file", nothing, "train notes.txt/run --data ds", ["notes.txt", "is a file"]),
    C("train/out-not-writable", nothing, f"train {RO}/run --data ds", [RO, "no write permission"]),
    C("train/dataset-images-truncated", truncate("ds/images.npy"), "train new --data ds", ["images.npy"]),
    C("train/dataset-yaml-box-missing", yaml_del("ds/dataset.yaml", "box"), "train new --data ds", ["dataset.yaml", "box"]),
    # -- convergence ---------------------------------------------------------------------------------------------
    C("convergence/no-run", nothing, f"convergence nope {Q}", ["nope", "no such run directory", "hetfield train"]),
    C("convergence/run-is-a-file", nothing, f"convergence notes.txt {Q}", ["notes.txt", "not a run directory"]),
    C("convergence/not-a-run", nothing, f"convergence sim {Q}", ["sim", "not a hetfield run"]),
    C("convergence/no-saved-epoch", delete("run/weights.*.pt"), f"convergence run {Q}", ["run", "no saved epochs"]),
    C("convergence/latent-truncated", truncate("run/latent.1.npz"), f"convergence run {Q}", ["latent.1.npz", "unreadable", "remove it"]),
    C("convergence/latent-object-array", npz_change(LAT, z_mu=lambda z: np.array([z, "x"], dtype=object)), f"convergence run {Q}", [LAT, "pickled"]),
    C("convergence/latent-z-wrong-width", npz_change(LAT, z_mu=_z_cols(3)), f"convergence run {Q}", [LAT, "z_mu", "shape"]),
    C("convergence/latent-no-class-idx", npz_change(LAT, class_idx=None), f"convergence run {Q}", [LAT, "class_idx"]),
    C("convergence/config-not-yaml", write("run/config.yaml", "run_id: [x\n"), f"convergence run {Q}", ["config.yaml", "YAML"]),
    C("convergence/config-no-box", yaml_del("run/config.yaml", "model.box", "dataset.box"), f"convergence run {Q}", ["config.yaml", "model.box", "missing"]),
    C("convergence/config-zdim-text", chain(yaml_set("run/config.yaml", "model.zdim", "two")), f"convergence run {Q}", ["config.yaml", "model.zdim", "'two'"]),
    C("convergence/every-zero", nothing, f"convergence run --every 0 {Q}", ["--every 0"]),
    C("convergence/out-under-a-file", nothing, f"convergence run --out notes.txt/conv {Q}", ["notes.txt", "is a file, not a directory"]),
    C("convergence/out-not-writable", nothing, f"convergence run --out {RO}/conv {Q}", [RO, "no permission"]),
    C("convergence/out-is-the-run", nothing, f"convergence run --out run {Q}", ["--out run", "would replace the input"]),
    C("convergence/out-is-another-directory", nothing, f"convergence run --out sim {Q}", ["--out sim", "not an earlier output"]),
    C("convergence/truth-missing", nothing, f"convergence run --truth nope {Q}", ["--truth nope"]),
    C("convergence/out-read-only-dir", chain(write("locked/x", ""), chmod("locked", 0o555)), f"convergence run --out locked/conv {Q}", ["locked", "no permission"], NOT_ROOT),
    # -- analyze -----------------------------------------------------------------------------------------------
    C("analyze/latent-truncated", truncate(LAT, 0.3), f"analyze run {Q}", [LAT, "unreadable"]),
    C("analyze/latent-class-out-of-range", npz_change(LAT, class_idx=lambda c: c + 1), f"analyze run {Q}", [LAT, "class_idx", "0..0"]),
    C("analyze/latent-nan", npz_change(LAT, z_mu=lambda z: z * np.nan), f"analyze run {Q}", [LAT, "NaN"]),
    C("analyze/latent-too-few-particles", npz_change(LAT, class_idx=lambda c: c[:5]), f"analyze run {Q}", [LAT, "12 particles"]),
    C("analyze/latent-text-array", npz_change(LAT, class_probs=lambda p: np.array(["a"] * len(p))), f"analyze run {Q}", [LAT, "class_probs"]),
    C("analyze/epoch-not-saved", nothing, f"analyze run --epoch 9 {Q}", ["epoch 9", "saved epochs: 1, 2"]),
    C("analyze/epoch-word", nothing, f"analyze run --epoch soon {Q}", ["--epoch 'soon'", "'auto'"]),
    C("analyze/class-out-of-range", nothing, f"analyze run --class-idx 3 {Q}", ["--class-idx 3", "0..0"]),
    C("analyze/zero-k", nothing, f"analyze run --k 0 {Q}", ["--k 0", "whole number >= 1, or auto"]),
    C("analyze/auto-with-garbage-convergence", write("conv.json", "{not json"), f"analyze run --epoch auto --convergence conv.json {Q}", ["conv.json", "hetfield convergence"]),
    C("analyze/auto-recommends-unsaved-epoch", write("conv.json", '{"recommended_epoch": 7}'), f"analyze run --epoch auto --convergence conv.json {Q}", ["conv.json", "epoch 7"]),
    C("analyze/data-missing", nothing, f"analyze run --data nope {Q}", ["nope"]),
    C("analyze/data-of-another-run", nothing, f"analyze run --data spa {Q}", ["spa"]),
    C("analyze/out-under-a-file", nothing, f"analyze run --out notes.txt/an {Q}", ["notes.txt", "is a file, not a directory"]),
    C("analyze/out-not-writable", nothing, f"analyze run --out {RO}/an {Q}", [RO, "no permission"]),
    C("analyze/out-contains-the-run", nothing, f"analyze run --out . {Q}", ["--out .", "would replace the input"]),
    C("analyze/config-zdim-differs-from-weights", yaml_set("run/config.yaml", "model.zdim", 3), f"analyze run {Q}", [LAT, "z_mu", "zdim 3"]),
    C("analyze/weights-of-another-shape", checkpoint_change(W, grow_first_tensor), f"analyze run {Q}", ["weights.2.pt", "does not fit the model", "remove it"]),
    C("analyze/config-without-model-and-dataset", yaml_del("run/config.yaml", "model", "dataset"), f"analyze run {Q}", ["config.yaml", "model.", "missing"]),
    C("analyze/config-pixel-size-negative", yaml_set("run/config.yaml", "dataset.pixel_size_A", -8), f"analyze run {Q}", ["config.yaml", "pixel_size_A"]),
    # -- volumes -----------------------------------------------------------------------------------------------
    C("volumes/out-under-a-file", nothing, "volumes run --out notes.txt/v --class-idx 0 -q", ["notes.txt", "is a file, not a directory"]),
    C("volumes/out-not-writable", nothing, f"volumes run --out {RO}/v --class-idx 0 -q", [RO, "no permission"]),
    C("volumes/out-is-the-run", nothing, "volumes run --out run --class-idx 0 -q", ["--out run", "would replace the input"]),
    C("volumes/out-is-another-directory", nothing, "volumes run --out spa --class-idx 0 -q", ["--out spa", "not an earlier output"]),
    C("volumes/z-wrong-width", write("z.txt", "0.1 0.2 0.3\n"), "volumes run --out v --z z.txt -q", ["--z z.txt", "3 numbers", "zdim"]),
    C("volumes/z-not-numbers", write("z.txt", "0.1 0.2\nabc def\n"), "volumes run --out v --z z.txt -q", ["--z z.txt", "cannot read"]),
    C("volumes/z-pickled-npy", npy_objects("z.npy"), "volumes run --out v --z z.npy -q", ["--z z.npy"]),
    C("volumes/index-out-of-range", write("i.txt", "0\n12\n"), "volumes run --out v --particle-index i.txt -q", ["i.txt", "12", "0..11"]),
    C("volumes/latent-truncated", truncate(LAT), "volumes run --out v --class-idx 0 -q", [LAT, "unreadable"]),
    C("volumes/latent-object-array", npz_change(LAT, class_idx=lambda c: np.array([c, None], dtype=object)), "volumes run --out v --class-idx 0 -q", [LAT, "pickled"]),
    C("volumes/config-no-particle-count", yaml_del("run/config.yaml", "model.n_particles", "dataset.n_particles"), "volumes run --out v --class-idx 0 -q", ["config.yaml", "n_particles", "missing"]),
    C("volumes/weights-truncated", truncate(W), "volumes run --out v --class-idx 0 -q", ["weights.2.pt"]),
    C("volumes/nothing-to-decode", nothing, "volumes run --out v -q", ["nothing to decode", "--class-idx"]),
    C("volumes/odd-box", nothing, "volumes run --out v --class-idx 0 --box 15 -q", ["--box 15", "even"]),
    C("volumes/lowpass-below-nyquist", nothing, "volumes run --out v --class-idx 0 --lowpass-A 1 -q", ["--lowpass-A 1", "Nyquist"]),
    C("volumes/pc-beyond-zdim", nothing, "volumes run --out v --pc 3 -q", ["--pc 3"]),
    C("volumes/run-is-a-dataset", nothing, "volumes ds --out v --class-idx 0 -q", ["ds", "not a hetfield run"]),
    # -- backproject ---------------------------------------------------------------------------------------------
    C("backproject/no-dataset", nothing, "backproject nope --out bp -q", ["nope"]),
    C("backproject/out-under-a-file", nothing, "backproject ds --out notes.txt/bp -q", ["notes.txt", "is a file, not a directory"]),
    C("backproject/out-is-the-dataset", nothing, "backproject ds --out ds -q", ["--out ds", "would replace the input"]),
    C("backproject/ref-wrong-box", nothing, "backproject ds --out bp --ref ref20.mrc -q", ["--ref ref20.mrc", "16"]),
    C("backproject/ref-not-mrc", nothing, "backproject ds --out bp --ref notes.txt -q", ["notes.txt"]),
    C("backproject/particles-out-of-range", write("i.txt", "0\n99\n"), "backproject ds --out bp --particles i.txt -q", ["i.txt", "99"]),
    C("backproject/zero-max-images", nothing, "backproject ds --out bp --max-images 0 -q", ["--max-images 0"]),
    # -- sweep plan ------------------------------------------------------------------------------------------------
    C("sweep-plan/set-wrong-type", nothing, "sweep plan --zdim 2 --set epochs=abc --out p.csv", ["--set epochs=abc", "whole number", "epochs=20"]),
    C("sweep-plan/set-float-for-int", nothing, "sweep plan --zdim 2 --set batch_size=2.5 --out p.csv", ["--set batch_size=2.5", "whole number"]),
    C("sweep-plan/set-bool-wrong", nothing, "sweep plan --zdim 2 --set dose_mask=maybe --out p.csv", ["--set dose_mask=maybe", "true or false"]),
    C("sweep-plan/set-tri-state-wrong", nothing, "sweep plan --zdim 2 --set amp=maybe --out p.csv", ["--set amp=maybe", "true, false or auto"]),
    C("sweep-plan/set-unknown-option", nothing, "sweep plan --zdim 2 --set learning_rate=1 --out p.csv", ["learning_rate", "not a training option"]),
    C("sweep-plan/set-out-of-range", nothing, "sweep plan --zdim 2 --set epochs=0 --out p.csv", ["--epochs 0", "at least 1"]),
    C("sweep-plan/set-bad-choice", nothing, "sweep plan --zdim 2 --set conf_estimation=magic --out p.csv", ["conf-estimation", "encoder"]),
    C("sweep-plan/grid-bad-yaml", write("g.yaml", "grid: [\n"), "sweep plan --grid g.yaml --out p.csv", ["--grid g.yaml", "YAML"]),
    C("sweep-plan/grid-base-wrong-type", write("g.yaml", "grid:\n  zdim: [2]\nbase:\n  epochs: ten\n"), "sweep plan --grid g.yaml --out p.csv", ["epochs", "whole number"]),
    C("sweep-plan/out-under-a-file", nothing, "sweep plan --zdim 2 --out notes.txt/p.csv", ["notes.txt", "is a file, not a directory"]),
    C("sweep-plan/out-is-a-directory", nothing, "sweep plan --zdim 2 --out run", ["--out run", "is a directory"]),
    C("sweep-plan/out-not-writable", nothing, f"sweep plan --zdim 2 --out {RO}/p.csv", [RO, "no permission"]),
    C("sweep-plan/negative-zdim", nothing, "sweep plan --zdim -2 --out p.csv", ["--zdim", "0 or more"]),
    # -- sweep run ---------------------------------------------------------------------------------------------------
    C("sweep-run/plan-without-n-classes", write("p.csv", "run_id,beta,zdim,epochs\na,0.5,2,2\n"), "sweep run p.csv --data ds --out sw", ["p.csv", "n_classes"]),
    C("sweep-run/plan-empty-cell", write("p.csv", "run_id,beta,zdim,n_classes,epochs\na,0.5,2,1,\n"), "sweep run p.csv --data ds --out sw", ["p.csv", "line 2", "epochs", "empty"]),
    C("sweep-run/plan-short-row", write("p.csv", "run_id,beta,zdim,n_classes,epochs\na,0.5,2\n"), "sweep run p.csv --data ds --out sw", ["p.csv", "line 2", "missing n_classes, epochs"]),
    C("sweep-run/plan-long-row", write("p.csv", "run_id,beta,zdim,n_classes\na,0.5,2,1,7\n"), "sweep run p.csv --data ds --out sw", ["p.csv", "line 2", "more than the header"]),
    C("sweep-run/plan-wrong-type", write("p.csv", "run_id,beta,zdim,n_classes\na,0.5,two,1\n"), "sweep run p.csv --data ds --out sw", ["p.csv", "line 2", "zdim", "whole number"]),
    C("sweep-run/plan-unsafe-run-id", write("p.csv", "run_id,beta,zdim,n_classes\n../x,0.5,2,1\n"), "sweep run p.csv --data ds --out sw", ["p.csv", "line 2", "run_id"]),
    C("sweep-run/plan-duplicate-column", write("p.csv", "run_id,beta,zdim,n_classes,zdim\na,0.5,2,1,3\n"), "sweep run p.csv --data ds --out sw", ["p.csv", "zdim", "twice"]),
    C("sweep-run/plan-is-a-directory", nothing, "sweep run run --data ds --out sw", ["run", "is a directory"]),
    C("sweep-run/plan-out-of-range", write("p.csv", "run_id,beta,zdim,n_classes,epochs\na,0.5,2,1,0\n"), "sweep run p.csv --data ds --out sw", ["p.csv", "run a", "--epochs 0"]),
    C("sweep-run/no-dataset", nothing, "sweep run plan.csv --data nope --out sw", ["nope"]),
    C("sweep-run/out-under-a-file", nothing, "sweep run plan.csv --data ds --out notes.txt/sw", ["notes.txt", "is a file, not a directory"]),
    # -- sweep summarize ---------------------------------------------------------------------------------------------
    C("sweep-summarize/only-run-damaged", truncate(LAT), "sweep summarize run --out su", [LAT, "no run can be ranked"]),
    C("sweep-summarize/no-runs", nothing, "sweep summarize sim --out su", ["sim", "no hetfield runs"]),
    C("sweep-summarize/no-such-dir", nothing, "sweep summarize nope --out su", ["nope", "no such directory"]),
    C("sweep-summarize/out-under-a-file", nothing, "sweep summarize run --out notes.txt/su", ["notes.txt", "is a file, not a directory"]),
    C("sweep-summarize/out-is-the-run", nothing, "sweep summarize run --out run", ["--out run", "would replace the input"]),
]

# "what to do": an imperative (or an example) after the location that starts the message.
_ADVICE = re.compile(
    r"\b(give|pass|use|choose|remove|delete|rerun|re-run|check|fix|restore|rename|write|resume|make|add|try|free|move|wait|"
    r"prepare|omit|keep|select|edit|retry|start|provide|replace|convert|change|train (it|the|again|longer|one)|run (it|the|`|again)|"
    r"list|set|install|lower|raise|increase|reduce|resample|simulate|see|copy|point|export)\b|\be\.g\.",
    re.IGNORECASE,
)


def says_what_to_do(message: str) -> bool:
    body = message.removeprefix("hetfield: error: ").split(": ", 1)[-1]
    return bool(_ADVICE.search(body))


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (hidden ones too): kind, mode, size and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                digest = hashlib.sha1(p.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else os.readlink(p)
                out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_size, digest)
    return out


def _workspace(pristine: Path, ws: Path) -> Path:
    import yaml

    shutil.copytree(pristine, ws, symlinks=True)
    cfg_path = ws / "run" / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["dataset"]["path"] = str(ws / "ds")  # the copied run reads the copied dataset
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return ws


def _diff(before: dict, after: dict) -> list[str]:
    changes = [f"new: {k}" for k in sorted(set(after) - set(before))]
    changes += [f"gone: {k}" for k in sorted(set(before) - set(after))]
    changes += [f"changed: {k}" for k in sorted(set(before) & set(after)) if before[k] != after[k]]
    return changes


class Outcome(NamedTuple):
    proc: object = None
    changes: list = []
    error: BaseException | None = None


def _run_case(case: C, ws: Path) -> Outcome:
    try:
        case.mutate(ws)
        before = _snapshot(ws)
        try:
            proc = run_cli(*shlex.split(case.cmd), cwd=ws, timeout=300)
            after = _snapshot(ws)
        finally:
            for dirpath, _, _ in os.walk(ws):  # undo chmod so that pytest can clean up
                os.chmod(dirpath, 0o755)
        return Outcome(proc, _diff(before, after))
    except BaseException as err:  # reported by the case's own test
        return Outcome(error=err)


def _skipped(case: C) -> bool:
    return case.mark is not None and case.mark.name == "skipif" and bool(case.mark.args and case.mark.args[0])


@pytest.fixture(scope="session")
def outcomes(request, pristine, tmp_path_factory) -> dict[str, Outcome]:
    """Every selected case run once, two at a time: each is a process that mostly imports Python
    modules, so two share the suite's two cores and halve the corpus's wall time."""
    from concurrent.futures import ThreadPoolExecutor

    selected = {item.callspec.params["case"].id for item in request.session.items
                if hasattr(item, "callspec") and isinstance(item.callspec.params.get("case"), C)}
    # a case its mark skips is not run: as root the read-only case ran a whole convergence (9 s) for nothing
    cases = [c for c in CASES if c.id in selected and not _skipped(c) and not (RO in c.cmd and not Path("/sys").is_dir())]
    root = tmp_path_factory.mktemp("corpus_ws")
    before = _snapshot(pristine)
    workspaces = {c.id: _workspace(pristine, root / re.sub(r"[^A-Za-z0-9]+", "_", c.id)) for c in cases}
    with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
        results = dict(zip([c.id for c in cases], pool.map(lambda c: _run_case(c, workspaces[c.id]), cases)))
    results["_pristine_changes"] = _diff(before, _snapshot(pristine))
    return results


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[c.mark] if c.mark else []) for c in CASES])
def test_bad_input_is_refused_in_one_line(case, outcomes):
    if RO in case.cmd and not Path("/sys").is_dir():
        pytest.skip("no /sys: no directory that nobody may write to")
    outcome = outcomes[case.id]
    if outcome.error is not None:
        raise outcome.error
    proc = outcome.proc
    err = proc.stderr.strip()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, err[-3000:])
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("hetfield: error: "), err
    for fragment in case.expect:
        assert fragment in lines[0], (fragment, lines[0])
    assert says_what_to_do(lines[0]), f"says what is wrong but not what to do: {lines[0]}"
    assert not outcome.changes, outcome.changes
    assert not Path(RO).exists()
    assert not outcomes["_pristine_changes"], "the pristine inputs changed"


def test_the_corpus_is_large_and_covers_every_command():
    commands = {c.cmd.split()[0] if not c.cmd.startswith("sweep") else " ".join(c.cmd.split()[:2]) for c in CASES}
    assert len(CASES) >= 50
    assert commands >= {"simulate", "setup", "inspect", "train", "convergence", "analyze", "volumes", "backproject",
                        "sweep plan", "sweep run", "sweep summarize"}
    assert len({c.id for c in CASES}) == len(CASES)


def test_the_advice_check_can_fail():
    assert not says_what_to_do("hetfield: error: run/latent.2.npz: unreadable latent file")
    assert says_what_to_do("hetfield: error: nope: no such run directory; pass the directory given to `hetfield train`")
