"""Conventions of every module (modules/local/<step>/main.nf) and of the wiring in main.nf.

Each module: one process named after its folder, a tag, labels defined in conf/base.config, no
container of its own (nextflow.config sets process.container), named emits on every output
including versions.yml, a script that runs `hetfield` (and shell plumbing only) with task.ext.args
(TRAIN excepted: it trains its plan row and nothing else), its caches in its own task directory,
outputs that are never inside a staged input, and a stub that creates every declared output: the
stubs are rendered and run here (bash only, no CLI).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import nfscript
from nfscript import REPO, module_files

STEPS = ["simulate", "setup", "plan", "train", "convergence", "analyze", "summarize"]
FORBIDDEN_TOOLS = r"\b(python3?|Rscript|perl|awk|gawk|jq|curl|wget|pip|conda|nextflow)\b"


def base_labels() -> set[str]:
    text = (REPO / "conf" / "base.config").read_text()
    return set(re.findall(r"withLabel:\s*'([^']+)'", text))


def test_every_step_has_a_module():
    assert [p.parent.name for p in module_files()] == sorted(STEPS)


@pytest.mark.parametrize("step", STEPS)
def test_module_conventions(step, modules):
    text = (REPO / "modules" / "local" / step / "main.nf").read_text()
    assert nfscript.find_processes(text) == [step.upper()], "one process per file, named after its folder"
    proc = modules[step]
    assert proc.directive("tag"), "tag"
    assert proc.labels, "at least one label"
    assert set(proc.labels) <= base_labels(), f"labels {proc.labels} not all defined in conf/base.config"
    assert proc.directive("container") == [], "no container directive: nextflow.config sets process.container"
    assert set(proc.blocks) == {"script", "stub"}, "script: and stub: blocks"
    assert "when" not in proc.sections, "conditions belong in the workflow, not a when: section"
    emits = [d.emit for d in proc.outputs]
    assert all(emits), f"every output needs emit: {[d.source for d in proc.outputs if not d.emit]}"
    assert len(set(emits)) == len(emits)
    versions = [d for d in proc.outputs if d.emit == "versions"]
    assert len(versions) == 1 and versions[0].components[0].pattern in ("'versions.yml'", '"versions.yml"')


CACHES = 'export MPLCONFIGDIR="\\$PWD/.cache/matplotlib" NUMBA_CACHE_DIR="\\$PWD/.cache/numba" XDG_CACHE_HOME="\\$PWD/.cache"'


@pytest.mark.parametrize("step", STEPS)
def test_script_calls_the_cli_only(step, modules):
    block = modules[step].blocks["script"]
    body = block.gstring
    if step == "train":
        # Every training setting comes from the plan row: extra arguments would train settings
        # that runs.csv does not list (the defect this rule prevents).
        assert not any("task.ext" in expr for _, expr in block.defs) and "args" not in body
    else:
        assert ("args", "task.ext.args ?: ''") in block.defs, "def args = task.ext.args ?: ''"
        assert "${args}" in body, "the command line appends ${args}"
    commands = re.findall(r"^\s*hetfield\s+([a-z][\w-]*(?:\s+[a-z][\w-]*)?)", body, flags=re.M)
    assert commands, "the script runs a hetfield command"
    assert re.search(r"hetfield --version", body), "versions.yml records `hetfield --version`"
    assert not re.search(FORBIDDEN_TOOLS, body), "logic belongs in the CLI: no other interpreters or tools"


@pytest.mark.parametrize("step", STEPS)
def test_caches_go_to_the_task_directory(step, modules):
    """matplotlib's and numba's caches under the task's own directory: writable by whichever user
    runs the task, never shared with another task or user (Apptainer shares the host's /tmp)."""
    lines = [line.strip() for line in modules[step].blocks["script"].gstring.splitlines()]
    assert CACHES in lines, f"the script exports {CACHES}"
    assert lines.index(CACHES) < next(i for i, line in enumerate(lines) if line.startswith("hetfield ")), "before the first hetfield command"


@pytest.mark.parametrize("step", STEPS)
def test_outputs_never_inside_a_staged_input(step, modules):
    proc = modules[step]
    path_inputs = {c.name for d in proc.inputs for c in d.components if c.kind == "path" and c.name}
    for decl in proc.outputs:
        for comp in decl.components:
            if comp.kind == "path":
                used = set(re.findall(r"\$\{?([A-Za-z_]\w*)", comp.pattern or "")) | ({comp.name} if comp.name else set())
                assert not used & path_inputs, f"{decl.source}: an output inside staged input {used & path_inputs}"


def test_labels_used_anywhere_are_defined_in_base_config():
    defined = base_labels()
    assert {"process_single", "process_low", "process_medium", "process_gpu"} <= defined
    used = set()
    for path in [*module_files(), REPO / "nextflow.config", *sorted((REPO / "conf").glob("*.config"))]:
        text = nfscript.strip_comments(path.read_text())
        used |= set(re.findall(r"^\s*label\s+'([^']+)'", text, flags=re.M))
        used |= set(re.findall(r"withLabel:\s*'([^']+)'", text))
    assert used <= defined, sorted(used - defined)


def test_train_is_the_gpu_step_and_retries_cuda_oom(modules):
    assert modules["train"].labels == ["process_gpu"]
    base = (REPO / "conf" / "base.config").read_text()
    strategy = re.search(r"errorStrategy\s*=\s*\{(.+)\}", base).group(1)
    assert "75" in strategy and "130..145" in strategy and "'retry'" in strategy


# -- main.nf wiring ---------------------------------------------------------------------------------


SUBWORKFLOW = REPO / "subworkflows" / "local" / "sweep_run" / "main.nf"
RUN_STEPS = ["train", "convergence", "analyze"]


def _includes(path: Path) -> dict[str, str]:
    text = nfscript.strip_comments(path.read_text())
    return dict(re.findall(r"include\s*\{\s*(\w+)\s*\}\s*from\s*'(\.[^']+)'", text))


def test_every_module_is_included_once_and_the_run_chain_is_a_subworkflow():
    main, sub = _includes(REPO / "main.nf"), _includes(SUBWORKFLOW)
    assert main == {
        **{step.upper(): f"./modules/local/{step}" for step in STEPS if step not in RUN_STEPS},
        "SWEEP_RUN": "./subworkflows/local/sweep_run",
    }
    assert sub == {step.upper(): f"../../../modules/local/{step}" for step in RUN_STEPS}
    for path in sub.values():
        assert (SUBWORKFLOW.parent / path / "main.nf").resolve().is_file(), path
    code = nfscript.strip_comments(SUBWORKFLOW.read_text())
    assert re.search(r"^workflow SWEEP_RUN \{", code, flags=re.M)
    assert [s for s in ("take:", "main:", "emit:") if s in code] == ["take:", "main:", "emit:"]
    # the chain: CONVERGENCE reads TRAIN's run, ANALYZE reads both
    assert re.search(r"CONVERGENCE\(TRAIN\.out\.run\)", code)
    assert re.search(r"ANALYZE\(TRAIN\.out\.run\.join\(CONVERGENCE\.out\.convergence\)", code)


def test_workflows_use_declared_emits(modules):
    emits = {proc.name: {d.emit for d in proc.outputs} for proc in modules.values()}
    sub = nfscript.strip_comments(SUBWORKFLOW.read_text())
    emits["SWEEP_RUN"] = set(re.findall(r"^\s*(\w+)\s*=", sub[sub.index("emit:"):], flags=re.M))
    assert emits["SWEEP_RUN"] == {"results", "versions"}
    for path in (REPO / "main.nf", SUBWORKFLOW):
        for name, emit in re.findall(r"\b([A-Z_]+)\.out\.(\w+)", nfscript.strip_comments(path.read_text())):
            assert emit in emits[name], f"{path.name}: {name}.out.{emit} is not an emit of {name}"


def test_every_versions_emit_reaches_the_output_block(modules):
    main = nfscript.strip_comments((REPO / "main.nf").read_text())
    sub = nfscript.strip_comments(SUBWORKFLOW.read_text())
    mixed = set(re.findall(r"\b([A-Z_]+)\.out\.versions", main)) | set(re.findall(r"\b([A-Z]+)\.out\.versions", sub))
    assert mixed == {proc.name for proc in modules.values()} | {"SWEEP_RUN"}
    assert re.search(r"^\s*versions = ch_versions\s*$", main[main.index("publish:"):], flags=re.M), "versions.yml is published"
    assert "storeDir" not in main and "publishDir" not in main, "nothing is written around the output block"


def test_collected_inputs_are_sorted():
    """SUMMARIZE's inputs do not depend on task completion order, so a -resume reuses it."""
    main = nfscript.strip_comments((REPO / "main.nf").read_text())
    collects = re.findall(r"\.collect\(([^)]*)\)", main)
    assert collects and all(args.strip() == "sort: true" for args in collects), collects


def test_published_outputs_match_the_output_block():
    main = nfscript.strip_comments((REPO / "main.nf").read_text())
    publish = main[main.index("publish:"):]
    published = re.findall(r"^\s*(\w+)\s*=", publish[: publish.index("\n}")], flags=re.M)
    out_start = re.search(r"^output\s*\{", main, flags=re.M).end() - 1
    block = main[out_start + 1 : nfscript.matching_brace(main, out_start)]
    declared = re.findall(r"^    (\w+)\s*\{", block, flags=re.M)
    assert published and sorted(published) == sorted(declared)
    assert "index" in block and "'runs.csv'" in block


# -- stubs: rendered and run like a task ------------------------------------------------------------


def sample_inputs(step: str, data: Path) -> list:
    """Inputs in declaration order (a list per tuple), using small real paths."""
    d = data / "dir"
    d.mkdir(exist_ok=True)
    f = data / "particles.star"
    f.touch()
    meta = {"id": "b1_z2_k1", "run_id": "b1_z2_k1", "beta": "1", "zdim": "2", "n_classes": "1", "dataset": "toy"}
    return {
        "simulate": [{"id": "sim"}],
        "setup": [[{"id": "toy"}, f, d]],
        "plan": [["0.1,1", "8", "1,2"]],
        "train": [[meta, d, f]],
        "convergence": [[meta, d]],
        "analyze": [[meta, d, data, d]],
        "summarize": [[d], [d], [d]],
    }[step]


@pytest.mark.parametrize("step", STEPS)
def test_stub_creates_every_declared_output(step, modules, tmp_path):
    proc = modules[step]
    result = nfscript.run_block(proc, tmp_path / "task", sample_inputs(step, tmp_path), {"cpus": 2}, block="stub")
    assert result.returncode == 0, result.tail()
    assert not result.missing_outputs(), f"stub did not create {result.missing_outputs()}"
    assert f'"{proc.name}":' in (tmp_path / "task" / "versions.yml").read_text()


@pytest.mark.parametrize("axes, n_runs", [(["0.1,1", "8", "1,2"], 4), (["", "2", "1,2"], 2), (["", "", ""], 1)])
def test_plan_stub_writes_one_row_per_combination(modules, tmp_path, axes, n_runs):
    result = nfscript.run_block(modules["plan"], tmp_path, [axes], {}, block="stub")
    assert result.returncode == 0, result.tail()
    rows = (tmp_path / "plan.csv").read_text().splitlines()
    assert rows[0] == "run_id,beta,zdim,n_classes" and len(rows) == n_runs + 1 and len(set(rows)) == n_runs + 1


def test_train_stub_emits_the_batch_size(modules, tmp_path):
    result = nfscript.run_block(modules["train"], tmp_path, sample_inputs("train", tmp_path), {}, block="stub")
    assert result.returncode == 0, result.tail()
    assert result.output_env("batch_size") == ["4"]


def test_a_missing_env_output_is_reported(tmp_path):
    proc = nfscript.parse_process('process X {\n    tag "x"\n\n    output:\n    env(\'nope\'), emit: nope\n\n    script:\n    """\n    true\n    """\n}\n')
    result = nfscript.run_block(proc, tmp_path, [], {})
    assert result.returncode == 0 and result.missing_outputs() == ["env nope"]


# -- the renderer --------------------------------------------------------------------------------


def test_renderer_follows_groovy_gstrings():
    r = nfscript.Renderer({"meta": {"id": "r1"}, "task": {"ext": {}, "attempt": 2, "previousTrace": None}, "x": nfscript.PathList(["a", "b"])})
    block = nfscript.Block(
        defs=[("args", "task.ext.args ?: ''"), ("prev", "task.previousTrace?.workdir ?: 'none'")],
        gstring='\n    echo ${meta.id} $meta.id ${x} [${args}] ${prev} \\$HOME \\\\\n    cat \\\n    <<-END\n        a: ${task.attempt}\n    END\n    ',
    )
    assert r.render_block(block) == "echo r1 r1 a b [] none $HOME \\\ncat     <<-END\n    a: 2\nEND\n"


@pytest.mark.parametrize("body", ["${meta.id.toUpperCase()}", "${a + b}", "$ 1", "${meta.nope.x}", "${unknown}", "\\d"])
def test_renderer_refuses_what_it_does_not_support(body):
    with pytest.raises(nfscript.RenderError):
        nfscript.Renderer({"meta": {"id": "r1"}}).render_string(body)


def test_declarations_parse_and_bad_ones_fail():
    decls = nfscript._declarations("tuple val(meta), path(run, stageAs: 'staged/*'), path(\"c_${meta.id}\"), emit: x\npath 'v.yml', emit: versions\nval epochs")
    assert [(c.kind, c.name, c.pattern) for c in decls[0].components] == [("val", "meta", None), ("path", "run", None), ("path", None, '"c_${meta.id}"')]
    assert decls[0].components[1].options == {"stageAs": "'staged/*'"} and decls[0].emit == "x"
    assert decls[1].emit == "versions" and decls[2].components[0].name == "epochs"
    with pytest.raises(nfscript.ParseError):
        nfscript._declarations("tuple val(meta) path(x)")  # missing comma: valid Groovy, wrong Nextflow


# -- bin/hetfield ---------------------------------------------------------------------------------


def test_shim_runs_the_cli_module_from_src_via_a_symlink(tmp_path):
    link = tmp_path / "hetfield"
    link.symlink_to(REPO / "bin" / "hetfield")
    fake_python = tmp_path / "python"
    fake_python.write_text('#!/bin/sh\necho "PYTHONPATH=$PYTHONPATH"\necho "ARGS=$*"\n')
    fake_python.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "HETFIELD_PYTHON": str(fake_python), "PYTHONPATH": "/other"}
    out = subprocess.run([str(link), "train", "--help"], env=env, cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert f"PYTHONPATH={REPO / 'src'}:/other" in out
    assert "ARGS=-m hetfield.cli.app train --help" in out


def test_shim_prints_the_version(cli_env):
    proc = subprocess.run(["hetfield", "--version"], env=cli_env, capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.fullmatch(r"hetfield \d+\.\d+\.\d+\S*\n", proc.stdout)


def test_renderer_agrees_with_groovy_on_every_block(modules, groovy_classpath, tmp_path):
    """The Python renderer gives what Groovy gives for every script and stub (one JVM)."""
    import json

    task = {"process": "X", "cpus": 2, "attempt": 2, "ext": {"args": "--a 1"}, "previousTrace": {"workdir": "/w/ab/cd"}}
    values = {
        "meta": {"id": "b1_z2_k1", "run_id": "b1_z2_k1", "beta": "1", "zdim": "2", "n_classes": "1"},
        "particles": "particles.star", "datadir": "dir", "dataset": "dataset_toy", "run": "staged/run_b1_z2_k1",
        "convergence": "convergence_b1_z2_k1", "runs": "run_a run_b", "analysis": "analysis_a analysis_b",
        "beta": "0.1,1", "zdim": "8", "n_classes": "1,2", "plan": "plan.csv",
    }
    cases, expected = [], []
    for proc in modules.values():
        for block in proc.blocks.values():
            context = {"task": task, **values}
            cases.append({"context": context, "defs": block.defs, "gstring": block.gstring})
            renderer = nfscript.Renderer(context)
            for name, expr in block.defs:
                renderer.context[name] = renderer.eval(expr)
            expected.append(renderer.render_string(block.gstring))
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    proc = subprocess.run(
        ["java", "-cp", groovy_classpath, "groovy.ui.GroovyMain", str(Path(__file__).parent / "groovy" / "RenderCheck.groovy"), str(tmp_path / "cases.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout) == expected


# -- conf/modules.config: the settings PLAN writes into the plan -----------------------------------


def _ext_args_closure(step: str) -> str:
    """The source of `ext.args = { … }` in the withName: 'STEP' block of conf/modules.config."""
    text = nfscript.strip_comments((REPO / "conf" / "modules.config").read_text())
    block = re.search(rf"withName:\s*'{step}'\s*\{{", text)
    body = text[block.end() : nfscript.matching_brace(text, block.end() - 1)]
    m = re.search(r"ext\.args\s*=\s*\{", body)
    return body[m.end() - 1 : nfscript.matching_brace(body, m.end() - 1) + 1]


def test_plan_settings_come_from_the_run_parameters(groovy_classpath, tmp_path):
    """--epochs, --batch_size and --settings become `--set` options of `hetfield sweep plan` (Groovy's answer)."""
    import json

    closure = _ext_args_closure("PLAN")
    cases = [
        ({"epochs": "", "batch_size": "", "settings": ""}, ""),
        ({"epochs": "30", "batch_size": "", "settings": ""}, "--set epochs=30"),
        ({"epochs": 30, "batch_size": 8, "settings": "lr=1e-4, field_hidden=128"}, "--set epochs=30 --set batch_size=8 --set lr=1e-4 --set field_hidden=128"),
        ({"epochs": "", "batch_size": "", "settings": "dose_weight=false"}, "--set dose_weight=false"),
    ]
    (tmp_path / "cases.json").write_text(json.dumps([{"binding": {"params": p}, "code": f"def c = {closure}\nc()"} for p, _ in cases]))
    proc = subprocess.run(
        ["java", "-cp", groovy_classpath, "groovy.ui.GroovyMain", str(Path(__file__).parent / "groovy" / "EvalCheck.groovy"), str(tmp_path / "cases.json")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout) == [want for _, want in cases]


def test_retries_follow_the_exit_codes_of_hetfield():
    """The retry rule in conf/base.config agrees with hetfield.errors: out-of-memory and signal exits
    are retried, bad input (2) and bugs (70) are not."""
    import signal

    from hetfield import errors

    text = (nfscript.REPO / "conf" / "base.config").read_text()
    rule = re.search(r"errorStrategy\s*=\s*\{\s*task\.exitStatus in \(\((\d+)\.\.(\d+)\)((?:\s*\+\s*\d+)*)\)", text)
    assert rule, "errorStrategy rule not found in conf/base.config"
    retried = set(range(int(rule[1]), int(rule[2]) + 1)) | {int(x) for x in re.findall(r"\d+", rule[3])}
    for code in (errors.EXIT_CUDA_OOM, errors.EXIT_OUT_OF_MEMORY,
                 errors.EXIT_SIGNAL_BASE + signal.SIGINT, errors.EXIT_SIGNAL_BASE + signal.SIGTERM):
        assert code in retried, code
    for code in (errors.EXIT_USAGE, errors.EXIT_INTERNAL, errors.EXIT_OS_ERROR):
        assert code not in retried, code
