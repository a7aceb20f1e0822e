"""Just enough of Nextflow's files for the pipeline's static tests (no Nextflow engine needed).

* :func:`parse_params` reads the literal defaults of a config's ``params { … }`` block.
* :func:`parse_process` splits a module's ``process`` into directives, inputs, outputs and its
  ``script:`` / ``stub:`` blocks.
* :class:`Renderer` renders a block's GString the way Nextflow does for the subset our modules use:
  ``def name = EXPR`` lines, ``${a.b?.c}`` / ``$a.b`` interpolation, ``?:``, string and number
  literals, Groovy escapes (``\\$``, ``\\\\``, line continuation) and Nextflow's indent stripping.
  Anything else raises :class:`RenderError`, so the modules stay simple enough to be checked here.
* :func:`run_block` stages inputs like Nextflow (links named by the declaration), runs the rendered
  block with the task shell of conf/base.config (``bash -euo pipefail``) in a task directory, lists
  the outputs the process declares and captures its ``env('NAME')`` outputs as Nextflow does.

Everything fails loudly on syntax it does not know rather than guessing.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


REPO = Path(__file__).resolve().parents[2]
"""The repository root (tests/pipeline/../..)."""


def module_files() -> list[Path]:
    """modules/local/<step>/main.nf, sorted by step."""
    return sorted((REPO / "modules" / "local").glob("*/main.nf"))


class ParseError(ValueError):
    """The text uses syntax this reader does not handle."""


class RenderError(ValueError):
    """A script uses an expression the renderer does not support (or a name it was not given)."""


# ------------------------------------------------------------------------------------------------
# Scanning: comments and strings
# ------------------------------------------------------------------------------------------------

_STRING_OPENERS = ('"""', "'''", '"', "'")


def _string_end(text: str, i: int) -> int:
    """Index just past the string literal that starts at ``text[i]``."""
    for opener in _STRING_OPENERS:
        if text.startswith(opener, i):
            break
    else:  # pragma: no cover - callers only call at a quote
        raise ParseError(f"no string at offset {i}")
    j = i + len(opener)
    while j < len(text):
        if text[j] == "\\":
            j += 2
            continue
        if text.startswith(opener, j):
            return j + len(opener)
        if len(opener) == 1 and text[j] == "\n":
            raise ParseError(f"unterminated string at line {text.count(chr(10), 0, i) + 1}")
        j += 1
    raise ParseError(f"unterminated string at line {text.count(chr(10), 0, i) + 1}")


def strip_comments(text: str) -> str:
    """``text`` with ``//`` and ``/* */`` comments blanked (newlines kept), strings untouched."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            j = _string_end(text, i)
            out.append(text[i:j])
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                raise ParseError("unterminated /* comment")
            out.append("\n" * text.count("\n", i, j + 2))
            i = j + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching_brace(text: str, open_index: int) -> int:
    """Index of the ``}`` that closes the ``{`` at ``open_index`` (strings and comments skipped)."""
    if text[open_index] != "{":
        raise ParseError("not at an opening brace")
    depth, i = 0, open_index
    while i < len(text):
        c = text[i]
        if c in "\"'":
            i = _string_end(text, i)
            continue
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = len(text) if j < 0 else j
            continue
        if text.startswith("/*", i):
            i = text.index("*/", i) + 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ParseError("unbalanced braces")


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside brackets and strings."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        c = text[i]
        if c in "\"'":
            i = _string_end(text, i)
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


# ------------------------------------------------------------------------------------------------
# Literals and the params block
# ------------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")


def parse_literal(text: str) -> Any:
    """A Groovy literal: quoted string (no interpolation), integer, decimal, true/false, null."""
    t = text.strip()
    if t in ("true", "false"):
        return t == "true"
    if t == "null":
        return None
    if _NUMBER.match(t):
        return float(t) if any(ch in t for ch in ".eE") else int(t)
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "\"'":
        if _string_end(t, 0) != len(t):
            raise ParseError(f"not a single string literal: {t}")
        body = t[1:-1]
        if t[0] == '"' and "$" in body.replace("\\$", ""):
            raise ParseError(f"interpolated default is not a literal: {t}")
        return _unescape(body)
    raise ParseError(f"not a literal: {t}")


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), body)


def _blocks(text: str, name: str) -> list[tuple[int, int]]:
    """(start, end) of the bodies of every ``name { … }`` block at brace depth 0 of ``text``."""
    found, depth, i = [], 0, 0
    pattern = re.compile(rf"\b{re.escape(name)}\s*\{{")
    while i < len(text):
        c = text[i]
        if c in "\"'":
            i = _string_end(text, i)
            continue
        if depth == 0:
            m = pattern.match(text, i)
            if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_.")):
                open_index = m.end() - 1
                close = matching_brace(text, open_index)
                found.append((open_index + 1, close))
                i = close + 1
                continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        i += 1
    return found


def parse_params(config_text: str) -> dict[str, Any]:
    """Literal defaults of the top-level ``params { name = value }`` block(s) of a config file.

    Also takes top-level ``params.name = value`` lines. Raises :class:`ParseError` on a value that
    is not a literal or on a name given twice, so the schema can be compared with plain values.
    """
    text = strip_comments(config_text)
    params: dict[str, Any] = {}

    def put(name: str, value_text: str, where: str) -> None:
        if name in params:
            raise ParseError(f"params.{name} is set twice ({where})")
        try:
            params[name] = parse_literal(value_text)
        except ParseError as err:
            raise ParseError(f"params.{name}: {err}") from None

    for start, end in _blocks(text, "params"):
        for line in text[start:end].splitlines():
            line = line.strip()
            if not line:
                continue
            m = re.match(r"^([A-Za-z_]\w*)\s*=\s*(.+)$", line)
            if not m:
                raise ParseError(f"cannot read params line: {line!r}")
            put(m.group(1), m.group(2), "params block")
    depth = 0
    for line in text.splitlines():
        if depth == 0:
            m = re.match(r"^\s*params\.([A-Za-z_]\w*)\s*=\s*(.+)$", line)
            if m:
                put(m.group(1), m.group(2), "params.x line")
        depth += line.count("{") - line.count("}")
    return params


def params_assigned(config_text: str) -> set[str]:
    """Every param name a config file assigns anywhere (blocks, dotted lines, inside profiles)."""
    text = strip_comments(config_text)
    names = set(re.findall(r"\bparams\.([A-Za-z_]\w*)\s*=(?!=)", text))
    for scope in ("params",):
        for m in re.finditer(rf"\b{scope}\s*\{{", text):
            close = matching_brace(text, m.end() - 1)
            for line in text[m.end():close].splitlines():
                mm = re.match(r"^\s*([A-Za-z_]\w*)\s*=(?!=)", line)
                if mm:
                    names.add(mm.group(1))
    return names


def params_referenced(text: str) -> set[str]:
    """Every ``params.name`` a script or config reads."""
    return set(re.findall(r"\bparams\.([A-Za-z_]\w*)", strip_comments(text)))


# ------------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------------

SECTIONS = ("input", "output", "when", "script", "shell", "exec", "stub")


@dataclass
class Component:
    """One element of an input/output declaration: ``val(x)``, ``path("a_${meta.id}")``, ``path x``."""

    kind: str  # 'val' | 'path' | 'env' | 'stdout' | 'eval'
    name: str | None = None  # variable name (val x / path x)
    pattern: str | None = None  # string source incl. quotes (path 'x', path("x"))
    options: dict[str, str] = field(default_factory=dict)


@dataclass
class Declaration:
    components: list[Component]
    options: dict[str, str]  # emit:, optional:, topic: …
    source: str

    @property
    def emit(self) -> str | None:
        return self.options.get("emit")


@dataclass
class Block:
    defs: list[tuple[str, str]]  # (name, expression source)
    gstring: str  # raw body between the triple quotes


@dataclass
class Process:
    name: str
    directives: list[tuple[str, str]]
    inputs: list[Declaration]
    outputs: list[Declaration]
    blocks: dict[str, Block]
    sections: dict[str, str]

    def directive(self, name: str) -> list[str]:
        return [args for key, args in self.directives if key == name]

    @property
    def labels(self) -> list[str]:
        return [str(parse_literal(a)) for a in self.directive("label")]


def find_processes(text: str) -> list[str]:
    return re.findall(r"^\s*process\s+([A-Za-z_]\w*)\s*\{", strip_comments(text), flags=re.M)


def parse_process(text: str) -> Process:
    """The single ``process`` of a module file."""
    clean = strip_comments(text)
    names = find_processes(text)
    if len(names) != 1:
        raise ParseError(f"expected one process, found {len(names)}: {names}")
    m = re.search(rf"^\s*process\s+{names[0]}\s*\{{", clean, flags=re.M)
    close = matching_brace(clean, m.end() - 1)
    body = clean[m.end():close]
    # Split the body at section labels that stand alone on a line.
    parts: dict[str, str] = {}
    current, buf = "_directives", []
    for line in body.splitlines(keepends=True):
        label = re.match(rf"^\s*({'|'.join(SECTIONS)}):\s*$", line)
        if label:
            parts[current] = "".join(buf)
            current, buf = label.group(1), []
            if current in parts:
                raise ParseError(f"section {current}: appears twice")
        else:
            buf.append(line)
    parts[current] = "".join(buf)
    directives = []
    for line in parts.pop("_directives").splitlines():
        line = line.strip()
        if line:
            dm = re.match(r"^([A-Za-z_]\w*)\s*(.*)$", line)
            directives.append((dm.group(1), dm.group(2).strip()))
    blocks = {key: _parse_block(parts[key], key) for key in ("script", "stub") if key in parts}
    return Process(
        name=names[0],
        directives=directives,
        inputs=_declarations(parts.get("input", "")),
        outputs=_declarations(parts.get("output", "")),
        blocks=blocks,
        sections=parts,
    )


def _call(text: str) -> tuple[str, list[str]]:
    """``kind(args)`` or ``kind args`` → (kind, [arg sources])."""
    m = re.match(r"^([A-Za-z_]\w*)\s*(.*)$", text.strip(), flags=re.S)
    if not m:
        raise ParseError(f"cannot read declaration element {text!r}")
    kind, rest = m.group(1), m.group(2).strip()
    if rest.startswith("(") and rest.endswith(")"):
        rest = rest[1:-1]
    return kind, [a for a in split_top_level(rest) if a] if rest else []


def _component(kind: str, args: list[str]) -> Component:
    comp = Component(kind=kind)
    for arg in args:
        om = re.match(r"^([A-Za-z_]\w*)\s*:\s*(.+)$", arg, flags=re.S)
        if om and not arg.startswith(("'", '"')):
            comp.options[om.group(1)] = om.group(2).strip()
        elif arg[0] in "\"'":
            comp.pattern = arg
        elif re.match(r"^[A-Za-z_]\w*$", arg):
            comp.name = arg
        else:
            raise ParseError(f"cannot read {kind} argument {arg!r}")
    return comp


def _declarations(section: str) -> list[Declaration]:
    decls = []
    for line in section.splitlines():
        line = line.strip()
        if not line:
            continue
        items = split_top_level(line)
        kind, args = _call(items[0])
        options: dict[str, str] = {}
        components: list[Component] = []
        rest = items[1:]
        if kind == "tuple":
            components.append(_component(*_call(" ".join(args)))) if args else None
            for item in rest:
                om = re.match(r"^([A-Za-z_]\w*)\s*:\s*(.+)$", item)
                if om:
                    options[om.group(1)] = om.group(2).strip()
                else:
                    components.append(_component(*_call(item)))
        else:
            for item in rest:
                om = re.match(r"^([A-Za-z_]\w*)\s*:\s*(.+)$", item)
                if not om:
                    raise ParseError(f"cannot read declaration {line!r}")
                options[om.group(1)] = om.group(2).strip()
            components.append(_component(kind, args))
        for key, value in list(options.items()):
            if re.match(r"^[A-Za-z_]\w*$", value):
                options[key] = value
        decls.append(Declaration(components=components, options=options, source=line))
    return decls


def _parse_block(section: str, key: str) -> Block:
    text = section.strip()
    defs: list[tuple[str, str]] = []
    while not text.startswith('"""'):
        line, _, text = text.partition("\n")
        line = line.strip()
        dm = re.match(r"^def\s+([A-Za-z_]\w*)\s*=\s*(.+)$", line)
        if not dm:
            raise ParseError(f"{key}: only `def name = expr` lines may precede the script string, got {line!r}")
        defs.append((dm.group(1), dm.group(2)))
        text = text.strip()
        if not text:
            raise ParseError(f"{key}: no triple-quoted script string")
    end = _string_end(text, 0)
    if text[end:].strip():
        raise ParseError(f"{key}: unexpected text after the script string: {text[end:].strip()[:40]!r}")
    return Block(defs=defs, gstring=text[3 : end - 3])


# ------------------------------------------------------------------------------------------------
# Rendering
# ------------------------------------------------------------------------------------------------


class PathList(list):
    """A list of staged paths: Nextflow renders it blank-separated in a script."""

    def __str__(self) -> str:
        return " ".join(str(p) for p in self)


def groovy_str(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, PathList):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(groovy_str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "[" + ", ".join(f"{k}:{groovy_str(v)}" for k, v in value.items()) + "]"
    return str(value)


def groovy_truth(value: Any) -> bool:
    return not (value is None or value is False or value == "" or value == 0 or (isinstance(value, (list, dict)) and not value))


_TOKEN = re.compile(r"\s*(\?:|\?\.|\.|[A-Za-z_]\w*|\d+(?:\.\d+)?|'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S)")


class Renderer:
    """Evaluate the GString subset our modules use against a context of plain Python values."""

    def __init__(self, context: dict[str, Any]):
        self.context = dict(context)

    # -- expressions ------------------------------------------------------------------------------
    def eval(self, expr: str) -> Any:
        tokens = [t for t in _TOKEN.findall(expr) if t]
        value, rest = self._elvis(tokens)
        if rest:
            raise RenderError(f"unsupported expression {expr!r} (stopped at {''.join(rest)!r})")
        return value

    def _elvis(self, tokens: list[str]) -> tuple[Any, list[str]]:
        value, rest = self._primary(tokens)
        if rest and rest[0] == "?:":
            other, rest = self._elvis(rest[1:])
            return (value if groovy_truth(value) else other), rest
        return value, rest

    def _primary(self, tokens: list[str]) -> tuple[Any, list[str]]:
        if not tokens:
            raise RenderError("empty expression")
        tok, rest = tokens[0], tokens[1:]
        if tok[0] == "'":
            return _unescape(tok[1:-1]), rest
        if tok[0] == '"':
            return self.render_string(tok[1:-1]), rest
        if re.match(r"^\d", tok):
            return (float(tok) if "." in tok else int(tok)), rest
        if not re.match(r"^[A-Za-z_]\w*$", tok):
            raise RenderError(f"unsupported token {tok!r}")
        if tok not in self.context:
            raise RenderError(f"unknown name {tok!r} (not an input, task property or def)")
        value = self.context[tok]
        path = tok
        while rest and rest[0] in (".", "?."):
            op, name = rest[0], rest[1] if len(rest) > 1 else ""
            if not re.match(r"^[A-Za-z_]\w*$", name):
                raise RenderError(f"unsupported member access after {path!r}")
            if value is None:
                if op == "?.":
                    rest = rest[2:]
                    path += op + name
                    continue
                raise RenderError(f"{path} is null: use {path}?.{name}")
            if isinstance(value, dict):
                value = value.get(name)
            elif isinstance(value, Path) and name in ("name", "baseName", "parent"):
                value = {"name": value.name, "baseName": value.stem, "parent": value.parent}[name]
            else:
                raise RenderError(f"unsupported property {path}.{name}")
            path += op + name
            rest = rest[2:]
        return value, rest

    # -- strings ----------------------------------------------------------------------------------
    def render_string(self, body: str) -> str:
        """A double-quoted / triple-double-quoted GString body: escapes + interpolation."""
        out: list[str] = []
        i, n = 0, len(body)
        while i < n:
            c = body[i]
            if c == "\\":
                if i + 1 >= n:
                    raise RenderError("dangling backslash")
                e = body[i + 1]
                if e == "\n":
                    pass  # line continuation
                elif e in "\\$\"'":
                    out.append(e)
                elif e in "ntrbf":
                    out.append({"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}[e])
                else:
                    raise RenderError(f"invalid escape \\{e} (Groovy rejects it)")
                i += 2
            elif c == "$":
                if body.startswith("${", i):
                    close = body.find("}", i)
                    if close < 0:
                        raise RenderError("unterminated ${")
                    out.append(groovy_str(self.eval(body[i + 2 : close])))
                    i = close + 1
                else:
                    m = re.match(r"\$([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)", body[i:])
                    if not m:
                        raise RenderError(f"bare $ at {body[i:i + 20]!r}: escape it as \\$")
                    out.append(groovy_str(self.eval(m.group(1))))
                    i += m.end()
            else:
                out.append(c)
                i += 1
        return "".join(out)

    def render_block(self, block: Block) -> str:
        for name, expr in block.defs:
            self.context[name] = self.eval(expr)
        return strip_indent(self.render_string(block.gstring))


def strip_indent(text: str) -> str:
    """Nextflow's script normalisation: remove the common indentation, trim blank ends."""
    lines = text.split("\n")
    indents = [len(line) - len(line.lstrip(" \t")) for line in lines if line.strip()]
    cut = min(indents) if indents else 0
    return "\n".join(line[cut:] if line.strip() else "" for line in lines).strip("\n") + "\n"


# ------------------------------------------------------------------------------------------------
# Running a block like a task
# ------------------------------------------------------------------------------------------------


TASK_SHELL = ["bash", "-euo", "pipefail"]
"""The task shell: conf/base.config sets process.shell to the same (a test checks)."""


@dataclass
class TaskResult:
    workdir: Path
    script: str
    returncode: int
    stdout: str
    stderr: str
    outputs: list[tuple[Declaration, list[str]]]  # rendered output paths, per declaration
    context: dict[str, Any]
    env: dict[str, str] = field(default_factory=dict)  # env('NAME') outputs that were set

    def env_names(self) -> list[str]:
        return [str(parse_literal(c.pattern)) for decl, _ in self.outputs for c in decl.components if c.kind == "env"]

    def missing_outputs(self) -> list[str]:
        missing = [f"env {name}" for name in self.env_names() if name not in self.env]
        for _decl, paths in self.outputs:
            for p in paths:
                hits = list(self.workdir.glob(p)) if any(ch in p for ch in "*?[") else [self.workdir / p]
                if not any(h.exists() for h in hits):
                    missing.append(p)
        return missing

    def output(self, emit: str) -> list[Path]:
        for decl, paths in self.outputs:
            if decl.emit == emit:
                return [self.workdir / p for p in paths]
        raise KeyError(emit)

    def output_env(self, emit: str) -> list[str]:
        """The values of an emit's env('NAME') components (a missing one raises KeyError)."""
        for decl, _ in self.outputs:
            if decl.emit == emit:
                return [self.env[str(parse_literal(c.pattern))] for c in decl.components if c.kind == "env"]
        raise KeyError(emit)

    def tail(self, n: int = 40) -> str:
        lines = (self.stdout + "\n" + self.stderr).strip().splitlines()
        return "\n".join(lines[-n:])


def _stage(workdir: Path, comp: Component, value: Any, renderer: Renderer) -> Any:
    """Link ``value`` (a path or list of paths) into ``workdir`` as Nextflow names it; the script value."""
    sources = list(value) if isinstance(value, (list, tuple)) else [value]
    stage_as = comp.options.get("stageAs")
    pattern = renderer.eval(stage_as) if stage_as else (renderer.eval(comp.pattern) if comp.pattern else None)
    staged = PathList()
    for src in sources:
        src = Path(src)
        if pattern is None:
            rel = src.name
        elif "*" in pattern:
            rel = pattern.replace("*", src.name, 1)
        else:
            rel = pattern
        target = workdir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(src.resolve())
        staged.append(rel)
    if isinstance(value, (list, tuple)):
        return staged
    return staged[0]


def run_block(
    process: Process,
    workdir: Path,
    inputs: list[Any],
    task: dict[str, Any],
    block: str = "script",
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> TaskResult:
    """Stage ``inputs`` (one value per input declaration; a list for a tuple) and run ``block``."""
    workdir.mkdir(parents=True, exist_ok=True)
    if len(inputs) != len(process.inputs):
        raise ValueError(f"{process.name}: {len(process.inputs)} input declarations, {len(inputs)} values given")
    task = {"process": process.name, "cpus": 1, "attempt": 1, "ext": {}, "previousTrace": None, **task}
    renderer = Renderer({"task": task})
    for decl, value in zip(process.inputs, inputs):
        values = value if len(decl.components) > 1 else [value]
        if len(values) != len(decl.components):
            raise ValueError(f"{process.name}: {decl.source!r} takes {len(decl.components)} values")
        for comp, v in zip(decl.components, values):
            if comp.kind == "val":
                renderer.context[comp.name] = v
            elif comp.kind == "path":
                staged = _stage(workdir, comp, v, renderer)
                if comp.name:
                    renderer.context[comp.name] = staged
            else:
                raise RenderError(f"input kind {comp.kind} is not supported here")
    script = renderer.render_block(process.blocks[block])
    (workdir / ".command.sh").write_text(script)
    # env('NAME') outputs: like Nextflow, append a capture of each variable to the script's end
    # (set variables only: Nextflow fails the task on a missing one, missing_outputs lists it).
    env_names = [str(parse_literal(c.pattern)) for d in process.outputs for c in d.components if c.kind == "env"]
    capture = "".join(f'[ -z "${{{n}+x}}" ] || printf "%s\\0%s\\0" {n} "${n}" >> .command.env\n' for n in env_names)
    (workdir / ".command.run.sh").write_text(script + ("\n" + capture if capture else ""))
    run_env = dict(os.environ if env is None else env)
    proc = subprocess.run(
        [*TASK_SHELL, ".command.run.sh"], cwd=workdir, env=run_env, capture_output=True, text=True, timeout=timeout
    )
    (workdir / ".command.out").write_text(proc.stdout)
    (workdir / ".command.err").write_text(proc.stderr)
    outputs = []
    for decl in process.outputs:
        paths = [str(renderer.eval(c.pattern) if c.pattern else renderer.context[c.name]) for c in decl.components if c.kind == "path"]
        outputs.append((decl, paths))
    captured: dict[str, str] = {}
    env_file = workdir / ".command.env"
    if env_file.exists():
        items = env_file.read_text().split("\0")
        captured = dict(zip(items[0:-1:2], items[1::2]))
    return TaskResult(workdir, script, proc.returncode, proc.stdout, proc.stderr, outputs, renderer.context, captured)
