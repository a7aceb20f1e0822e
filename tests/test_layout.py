"""The layout of the package: no import cycle (function-level imports included), no module over 350
lines, and a public API whose every name imports.

The import graph is read from the source with ``ast`` (every ``import`` statement, wherever it sits),
not from ``sys.modules``: a function-level import that closes a cycle works today only because of
the order things happen to be called in, and is the cycle a reader has to untangle.

Not edges: the implicit import of a module's parent packages (every module would otherwise "import"
``hetfield``), and ``importlib.import_module`` lookups by name (the lazy public API in
``hetfield/__init__.py``, the reader registry, the CLI command table), which run only when a caller
asks for a name. The facade is kept a true top by the rule that nothing inside the package imports a
name from it except ``__version__`` (tested below).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "hetfield"
MAX_LINES = 350


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(module: str, node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    if not node.level:
        return module
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([module] if module else []))


def _imports(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int, str]]:
    """``(imported hetfield module, line, 'module'|'function')`` for every import statement of ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    top_level = {id(n) for n in tree.body}
    out = []

    def where(node) -> str:
        return "module" if id(node) in top_level else "function"

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target.startswith("hetfield"):
                    out.append((target, node.lineno, where(node)))
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node.module or "", node, name, is_package)
            if not base.startswith("hetfield"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = sub if sub in modules else base
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target:
                    out.append((target, node.lineno, where(node)))
    return out


def _graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    where: dict[tuple[str, str], str] = {}
    for name, path in modules.items():
        for target, line, kind in _imports(name, path, modules):
            if target == name:
                continue
            graph[name].add(target)
            where.setdefault((name, target), f"{path.relative_to(SRC)}:{line} ({kind}-level)")
    return graph, where


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each as one cycle through it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, set(c)) for c in components]


def _one_cycle(graph: dict[str, set[str]], comp: set[str]) -> list[str]:
    """A shortest cycle through the first module of a component (breadth-first back to it)."""
    start = min(comp)
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & comp):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return list(reversed(path)) + [start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return sorted(comp)


def test_the_import_walker_sees_function_level_imports_and_cycles():
    """The walker itself: a function-level import is an edge, and a two-module cycle is found."""
    tree_graph = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _cycles(tree_graph) == [["a", "b", "a"]]
    modules = _modules()
    edges = _imports("hetfield.cli.sweep", modules["hetfield.cli.sweep"], modules)
    assert ("hetfield.sweep.plan", "function") in {(t, k) for t, _, k in edges}


def test_no_import_cycle():
    graph, where = _graph()
    cycles = _cycles(graph)
    lines = []
    for cyc in cycles:
        lines.append(" -> ".join(cyc))
        lines += [f"    {a} -> {b}: {where[(a, b)]}" for a, b in zip(cyc, cyc[1:])]
    assert not cycles, f"{len(cycles)} import cycle(s):\n" + "\n".join(lines)


def test_no_module_over_350_lines():
    sizes = {str(p.relative_to(SRC)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    over = sorted(((n, f) for f, n in sizes.items() if n > MAX_LINES), reverse=True)
    assert not over, f"{len(over)} module(s) over {MAX_LINES} lines:\n" + "\n".join(f"    {n:5d}  {f}" for n, f in over)


def test_package_code_imports_only_the_version_from_the_facade():
    """``hetfield/__init__.py`` is the top: code inside the package never goes through it (else the
    lazy public API would hide a cycle)."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == PACKAGE / "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "hetfield" and not node.level:
                bad = [a.name for a in node.names if a.name != "__version__"]
                if bad:
                    offenders.append(f"{path.relative_to(SRC)}:{node.lineno} imports {', '.join(bad)} from hetfield")
            if isinstance(node, ast.Import) and any(a.name == "hetfield" for a in node.names):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} imports the hetfield facade")
    assert not offenders, "\n".join(offenders)


def _public_names() -> list[str]:
    import hetfield

    return list(hetfield.__all__)


@pytest.mark.parametrize("name", _public_names())
def test_every_public_name_imports(name):
    import hetfield

    obj = getattr(hetfield, name)
    assert obj is not None
    assert name in dir(hetfield)


def test_public_api_is_the_one_place():
    """Each public name is the object of the module it lives in (no copies), and errors are the tree's."""
    import hetfield
    from hetfield import errors

    for name, target in hetfield._LAZY.items():
        module_name, _, attr = target.partition(":")
        module = importlib.import_module(module_name)
        obj = module
        for part in attr.split(".") if attr else ():
            obj = getattr(obj, part)
        assert getattr(hetfield, name) == obj, name  # == : a bound classmethod is a new object per look-up
    error_classes = {n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, errors.HetfieldError)}
    assert error_classes <= set(hetfield.__all__), error_classes - set(hetfield.__all__)
    with pytest.raises(AttributeError, match="no_such_name"):
        hetfield.no_such_name  # noqa: B018


def test_no_public_name_is_a_subpackage_name():
    """``import hetfield.X`` rebinds ``hetfield.X`` to the submodule, so a public function of that
    name would work or not depending on what had been imported before (why training is ``train_run``)."""
    import hetfield

    submodules = {p.stem if p.suffix else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    assert not set(hetfield.__all__) & submodules, set(hetfield.__all__) & submodules


def test_import_hetfield_stays_light():
    """``import hetfield`` loads none of the heavy dependencies (the CLI's start-up time depends on it)."""
    import subprocess
    import sys

    code = ("import sys, hetfield; heavy = [m for m in ('torch', 'pandas', 'numpy', 'sklearn', 'matplotlib', 'umap') "
            "if m in sys.modules]; print(','.join(heavy))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "", f"import hetfield loaded {proc.stdout.strip()}"
