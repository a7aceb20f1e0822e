"""Every Nextflow file parses, and keeps to the strict syntax (Nextflow >= 25.10).

Parsing: each .nf, .config and .nf.test file is compiled by Groovy 4 to the CONVERSION phase
(groovy/ParseCheck.groovy), all in one JVM. Nextflow's DSL is Groovy syntax (processes and
workflows are method calls with closures, `input:`/`emit:`/`publish:` are statement labels), so
no preprocessing is needed; the negative tests show that real syntax errors still fail.

Strict syntax: Groovy accepts more than Nextflow's strict parser, so a lint adds the rules of
https://nextflow.io/docs/latest/strict-syntax.html that a Groovy parse cannot see.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

import nfscript
from nfscript import REPO

PARSE_CHECK = Path(__file__).resolve().parent / "groovy" / "ParseCheck.groovy"


def nextflow_files() -> list[Path]:
    files = [REPO / "main.nf", REPO / "nextflow.config", REPO / "nf-test.config"]
    files += sorted((REPO / "conf").glob("*.config"))
    files += sorted((REPO / "modules").rglob("*.nf"))
    files += sorted((REPO / "subworkflows").rglob("*.nf"))
    files += sorted((REPO / "modules").rglob("*.nf.test"))
    files += sorted((REPO / "tests" / "nextflow").rglob("*.nf.test"))
    files += sorted((REPO / "tests" / "nextflow").rglob("*.config"))
    return [f for f in files if f.is_file()]


def groovy_parse(classpath: str, files: list[Path]) -> dict[str, dict]:
    proc = subprocess.run(
        ["java", "-cp", classpath, "groovy.ui.GroovyMain", str(PARSE_CHECK), *map(str, files)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return {r["file"]: r for r in results}


BROKEN = {
    "unbalanced.nf": "process X {\n    input:\n    val x\n\n    script:\n    \"\"\"\n    echo ${x}\n    \"\"\"\n",
    "stray_paren.nf": "workflow {\n    ch = channel.of(1, 2).map { v -> v * 2 ))\n}\n",
    "open_string.config": "params {\n    outdir = 'results\n}\n",
}


def test_every_nextflow_file_parses_as_groovy(groovy_classpath, tmp_path):
    files = nextflow_files()
    assert len(files) >= 15, [str(f) for f in files]
    broken = []
    for name, text in BROKEN.items():
        (tmp_path / name).write_text(text)
        broken.append(tmp_path / name)
    results = groovy_parse(groovy_classpath, files + broken)  # one JVM for everything
    failures = {f: r["error"] for f, r in results.items() if not r["ok"] and Path(f).parent != tmp_path}
    assert not failures, "\n".join(f"{f}:\n{e}" for f, e in failures.items())
    assert len(results) == len(files) + len(broken)
    # The negative controls: real syntax errors must fail the same parse.
    for path in broken:
        assert not results[str(path)]["ok"], f"{path.name} should not parse"


def _code(path: Path) -> str:
    """Source without comments and with string contents blanked (quotes kept)."""
    text = nfscript.strip_comments(path.read_text())
    out, i = [], 0
    while i < len(text):
        if text[i] in "\"'":
            j = nfscript._string_end(text, i)
            out.append(text[i] + re.sub(r"[^\n]", " ", text[i + 1 : j - 1]) + text[j - 1])
            i = j
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


STRICT_RULES = [
    (r"\bChannel\s*\.", "use the `channel` namespace, not `Channel`"),
    (r"\bit\b", "declare closure parameters explicitly (no implicit `it`)"),
    (r"\b(for|while|switch)\s*\(", "no for/while/switch: use each/collect and if/else"),
    (r"^\s*import\s", "no import declarations: use fully qualified names"),
    (r"\bpublishDir\b", "publish with workflow outputs (output block), not publishDir"),
    (r"^\s*shell:", "the shell: section is deprecated: use script:"),
    (r"\baddParams\b|\)\s*params\s*\(", "include ... addParams/params is not allowed"),
    (r"\$/", "no dollar-slashy strings"),
    (r"\bnextflow\.preview\.output\b", "workflow outputs are out of preview in 25.10: remove the flag"),
]


@pytest.mark.parametrize("path", [p for p in nextflow_files() if p.suffix in (".nf", ".config")], ids=lambda p: str(p.relative_to(REPO)))
def test_strict_syntax_rules(path):
    code = _code(path)
    problems = []
    for pattern, message in STRICT_RULES:
        for m in re.finditer(pattern, code, flags=re.M):
            line = code.count("\n", 0, m.start()) + 1
            problems.append(f"{path.relative_to(REPO)}:{line}: {message}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", [p for p in nextflow_files() if p.suffix == ".config"], ids=lambda p: str(p.relative_to(REPO)))
def test_configs_hold_only_assignments_blocks_and_includes(path):
    """Strict config syntax: no statements (def, if, functions, try) outside closures.

    Our configs need none at all, so this is checked everywhere: a dynamic value is a closure
    holding one expression, e.g. `memory = { 8.GB * task.attempt }`.
    """
    problems = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for number, line in enumerate(_code(path).splitlines(), 1)
        if re.match(r"^\s*(def|if|else|try|return|println|for|while)\b", line)
    ]
    assert not problems, "\n".join(problems)


def workflow_files() -> list[Path]:
    return [REPO / "main.nf", *sorted((REPO / "modules").rglob("main.nf")), *sorted((REPO / "subworkflows").rglob("main.nf"))]


@pytest.mark.parametrize("path", workflow_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_scripts_do_not_mix_statements_and_declarations(path):
    """Strict parser: only include/params/workflow/process/def/output/enum at the top level."""
    code = _code(path)
    depth, problems = 0, []
    for number, line in enumerate(code.splitlines(), 1):
        stripped = line.strip()
        if depth == 0 and stripped and not stripped.startswith("#!") and not re.match(r"^(include|params|workflow|process|def|output|enum|nextflow\.enable|\})\b|^\}", stripped):
            problems.append(f"{path.relative_to(REPO)}:{number}: top-level statement {stripped!r}")
        depth += line.count("{") - line.count("}")
    assert depth == 0
    assert not problems, "\n".join(problems)


def test_params_stay_in_the_entry_workflow():
    """Best practice of the strict syntax: modules and subworkflows get values as inputs (or
    ext.args from the config) and read no `params` at all, not even for their container."""
    files = [*sorted((REPO / "modules").rglob("*.nf")), *sorted((REPO / "subworkflows").rglob("*.nf"))]
    problems = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(_code(path).splitlines(), 1)
        if re.search(r"\bparams\b", line)
    ]
    assert len(files) >= 8 and not problems, "\n".join(problems)


def test_the_container_is_set_in_the_config_only():
    config = _code(REPO / "nextflow.config")
    assert re.search(r"^process\.container\s*=\s*params\.container\s*$", config, flags=re.M), "process.container = params.container"
    for path in [*sorted((REPO / "modules").rglob("*.nf")), *sorted((REPO / "conf").glob("*.config"))]:
        assert not re.search(r"^\s*container\b", _code(path), flags=re.M), f"{path.relative_to(REPO)} sets a container"


def test_task_shell_matches_the_renderer():
    """The render-and-run tests run scripts with the shell the pipeline's tasks get."""
    base = nfscript.strip_comments((REPO / "conf" / "base.config").read_text())
    m = re.search(r"^\s*shell\s*=\s*\[([^\]]*)\]", base, flags=re.M)
    assert m, "conf/base.config sets process.shell"
    shell = [nfscript.parse_literal(part) for part in nfscript.split_top_level(m.group(1))]
    assert [Path(shell[0]).name, *shell[1:]] == nfscript.TASK_SHELL


def test_the_manifest_names_org_and_pipeline():
    """nf-core tools and Seqera Platform load the config only with `name = 'org/name'`."""
    config = nfscript.strip_comments((REPO / "nextflow.config").read_text())
    manifest = config[config.index("manifest {"):]
    name = re.search(r"^\s*name\s*=\s*'([^']+)'", manifest[: manifest.index("}")], flags=re.M).group(1)
    assert re.fullmatch(r"[\w.-]+/[\w.-]+", name), name


def test_reports_are_on_by_default():
    config = nfscript.strip_comments((REPO / "nextflow.config").read_text())
    for scope, name in (("timeline", "execution_timeline.html"), ("report", "execution_report.html"), ("trace", "execution_trace.txt")):
        m = re.search(rf"^{scope}\s*\{{", config, flags=re.M)
        assert m, f"no {scope} scope"
        block = config[m.end(): nfscript.matching_brace(config, m.end() - 1)]
        assert re.search(r"enabled\s*=\s*true", block) and re.search(r"overwrite\s*=\s*true", block), scope
        assert f'"${{params.outdir}}/pipeline_info/{name}"' in block, scope


def test_parameters_are_validated_at_start_with_a_pinned_nf_schema():
    config = nfscript.strip_comments((REPO / "nextflow.config").read_text())
    plugins = re.findall(r"^\s*id\s+'([^']+)'", config, flags=re.M)
    assert len(plugins) == 1 and re.fullmatch(r"nf-schema@\d+\.\d+\.\d+", plugins[0]), f"one exactly pinned plugin: {plugins}"
    main = nfscript.strip_comments((REPO / "main.nf").read_text())
    assert re.search(r"^include \{ validateParameters \} from 'plugin/nf-schema'$", main, flags=re.M)
    body = main[main.index("main:"):]
    assert body.index("validateParameters()") < body.index("channel."), "validation runs before any channel is made"
    docs = (REPO / "docs" / "pipeline.md").read_text()
    assert f"nextflow plugin install {plugins[0]}" in docs, "docs/pipeline.md says how to pre-fetch the pinned plugin for offline use"
