"""The container recipes: hadolint passes, Docker and Apptainer build the same pinned image through
one install script, the image ships the torch CI tests, and nothing depends on SHELL.

The image itself is built and run by containers/smoke-test.sh (`make container-test`, not part of
`make test`: a build takes ~15 minutes); here only its recipe and the script's shape are checked.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tomllib

import pytest
from packaging.requirements import Requirement

import nfscript
from nfscript import REPO

DOCKERFILE = REPO / "containers" / "Dockerfile"
DEFFILE = REPO / "containers" / "hetfield.def"
INSTALL = REPO / "containers" / "install.sh"
SMOKE = REPO / "containers" / "smoke-test.sh"
LOCK = REPO / "containers" / "requirements.lock"
CACHE_VARS = ("MPLCONFIGDIR", "NUMBA_CACHE_DIR", "XDG_CACHE_HOME")


def test_hadolint_passes(hadolint):
    proc = subprocess.run([hadolint, "containers/Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_ignores_are_justified():
    lines = (REPO / ".hadolint.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^\s*-\s*(DL|SC)\d+", line):
            assert number and lines[number - 1].strip().startswith("#"), f"ignored rule without a reason: {line.strip()}"


def _arg(text: str, name: str) -> str:
    values = re.findall(rf"^ARG {name}=(\S+)$", text, flags=re.M)
    assert len(values) == 1, f"one ARG {name}=default, got {values}"
    return values[0]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^\s*([A-Za-z]+)\s+(.*)$", joined, flags=re.M)]


def test_the_base_image_is_a_build_argument():
    text = DOCKERFILE.read_text()
    base = _arg(text, "BASE_IMAGE")
    assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+-cuda[\d.]+-cudnn\d+-runtime", base), f"a pinned CUDA PyTorch base, got {base}"
    froms = [args for op, args in _instructions(text) if op == "FROM"]
    assert froms == ["${BASE_IMAGE}"]
    assert text.index("ARG BASE_IMAGE=") < text.index("FROM ${BASE_IMAGE}")
    assert 'org.opencontainers.image.base.name="${BASE_IMAGE}"' in text, "the label names the base actually used"
    assert re.search(r"^From:\s*\{\{ BASE_IMAGE \}\}\s*$", DEFFILE.read_text(), flags=re.M), "Apptainer takes it as a build argument too"
    assert re.search(rf"^\s+BASE_IMAGE={re.escape(base)}\s*$", DEFFILE.read_text(), flags=re.M), "with the same default"


def test_the_image_ships_the_torch_ci_tests():
    """One torch everywhere: the base image's, the one CI installs, the Makefile's default."""
    text = DOCKERFILE.read_text()
    torch = _arg(text, "TORCH_VERSION")
    base = _arg(text, "BASE_IMAGE")
    assert base.split(":")[1].startswith(f"{torch}-"), f"the base {base} is not PyTorch {torch}"
    assert re.search(rf"^\s+TORCH_VERSION={re.escape(torch)}\s*$", DEFFILE.read_text(), flags=re.M)
    ci = re.findall(r"torch==([\w.+]+)", (REPO / ".ci" / "run").read_text())
    assert ci == [torch], f".ci/run installs torch {ci}, the image ships {torch}"
    make = (REPO / "Makefile").read_text()
    assert re.search(rf"^TORCH_VERSION \?= {re.escape(torch)}$", make, flags=re.M)
    cuda = re.search(r"-cuda(\d+)\.(\d+)-", base)
    assert re.search(rf"^TORCH_CUDA +\?= cu{cuda.group(1)}{cuda.group(2)}$", make, flags=re.M), "a GPU machine gets the image's CUDA build"
    # the build refuses a base with another torch, naming both versions
    install = INSTALL.read_text()
    assert "TORCH_VERSION" in install and "torch.__version__" in install and "the tests run torch" in install


@pytest.mark.skipif(os.environ.get("CI") != "true", reason="CI only: a developer may test with another torch")
def test_ci_runs_the_torch_the_image_ships():
    import torch

    assert torch.__version__.split("+")[0] == _arg(DOCKERFILE.read_text(), "TORCH_VERSION")


def test_nothing_depends_on_shell():
    """OCI-format builds (podman, buildah) ignore SHELL: every RUN names bash and pipefail itself."""
    ops = _instructions(DOCKERFILE.read_text())
    assert "SHELL" not in [op for op, _ in ops]
    runs = [args for op, args in ops if op == "RUN"]
    assert len(runs) == 2
    for args in runs:
        command = json.loads(args)  # exec form: no /bin/sh -c in between
        assert command[:3] == ["/bin/bash", "-euo", "pipefail"] and command[3] == "/opt/hetfield-build/install.sh", command
    assert [json.loads(a)[4] for a in runs] == ["dependencies", "hetfield"], "dependencies first: their layer survives source edits"
    post = DEFFILE.read_text().split("%post", 1)[1].split("%environment", 1)[0]
    assert re.findall(r"bash -euo pipefail /opt/hetfield-build/install.sh (\w+)", post) == ["dependencies", "hetfield"]
    assert INSTALL.read_text().splitlines()[0] == "#!/usr/bin/env bash" and "set -euo pipefail" in INSTALL.read_text()
    subprocess.run(["bash", "-n", str(INSTALL)], check=True)


def test_dockerfile_shape():
    text = DOCKERFILE.read_text()
    ops = [op for op, _ in _instructions(text)]
    assert "ENTRYPOINT" not in ops, "no ENTRYPOINT: Nextflow runs its own command"
    assert "USER" not in ops, "runs as whichever user the engine picks"
    for label in ("title", "description", "version", "licenses", "source", "base.name"):
        assert f"org.opencontainers.image.{label}=" in text
    copied = [args for op, args in _instructions(text) if op == "COPY"]
    assert copied[0] == "containers/install.sh containers/requirements.lock /opt/hetfield-build/"


def test_runs_as_any_user_without_root_owned_caches():
    docker, deffile, install = DOCKERFILE.read_text(), DEFFILE.read_text(), INSTALL.read_text()
    for var in ("PYTHONNOUSERSITE=1", "MPLCONFIGDIR=/tmp/matplotlib", "NUMBA_CACHE_DIR=/tmp/numba", "XDG_CACHE_HOME=/tmp/.cache"):
        assert var in docker, var
    assert "export PYTHONNOUSERSITE=1" in deffile
    # Apptainer shares the host's /tmp: per-user folders, resolved at run time
    for var in CACHE_VARS:
        assert re.search(rf'^\s+export {var}="\$\{{hetfield_cache\}}', deffile, flags=re.M), var
    assert 'hetfield_cache="${TMPDIR:-/tmp}/hetfield-cache-$(id -u)"' in deffile
    # the build-time import test writes its caches to a throwaway folder and checks nothing is left
    checks = install[install.index("hetfield)"):]
    assert checks.count('MPLCONFIGDIR="$scratch/matplotlib" NUMBA_CACHE_DIR="$scratch/numba" XDG_CACHE_HOME="$scratch/cache"') == 2
    assert 'rm -rf "$scratch"' in checks
    assert '"${MPLCONFIGDIR:-/tmp/matplotlib}" "${NUMBA_CACHE_DIR:-/tmp/numba}" "${XDG_CACHE_HOME:-/tmp/.cache}"' in checks
    assert "procps" in install, "procps: Nextflow needs ps"
    assert "-r \"$here/requirements.lock\"" in install and "--no-deps \"$here/src\"" in install
    assert re.search(r"hetfield --version", install), "the build checks that the CLI starts"


def test_install_leaves_no_cache_behind(tmp_path):
    """The hetfield step's leftover check fails on a cache folder left where the image keeps them."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("python", "hetfield"):
        (fake / tool).write_text("#!/bin/sh\nexit 0\n")
        (fake / tool).chmod(0o755)
    build = tmp_path / "build"
    build.mkdir()
    (build / "install.sh").write_text(INSTALL.read_text())
    (build / "src").mkdir()
    leftover = tmp_path / "mpl"
    env = {"PATH": f"{fake}:/usr/bin:/bin", "TORCH_VERSION": "2.13.0", "TMPDIR": str(tmp_path),
           "MPLCONFIGDIR": str(leftover), "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    ok = subprocess.run(["bash", "-euo", "pipefail", str(build / "install.sh"), "hetfield"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert not build.exists(), "the build folder is removed"
    build.mkdir()
    (build / "install.sh").write_text(INSTALL.read_text())
    leftover.mkdir()
    bad = subprocess.run(["bash", "-euo", "pipefail", str(build / "install.sh"), "hetfield"], env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and f"the build left {leftover} behind" in bad.stderr


def test_smoke_test_runs_the_chain_as_nextflow_would():
    text = SMOKE.read_text()
    assert os.access(SMOKE, os.X_OK) and text.startswith("#!/usr/bin/env bash\n") and "set -euo pipefail" in text
    subprocess.run(["bash", "-n", str(SMOKE)], check=True)
    for needed in ('--build-arg "BASE_IMAGE=$base"', "--format oci", '--user "$task_user"', '-v "$tasks:$tasks" -w "$tasks"', "--network=none",
                   "--storage-driver vfs --runtime runc", "--ulimit nofile=4096:4096 --ulimit nproc=4096:4096"):
        assert needed in text, needed
    for step in ("hetfield simulate", "hetfield setup", "hetfield sweep config", "hetfield train", "hetfield analyze"):
        assert step in text, step
    assert "--set epochs=1" in text
    make = (REPO / "Makefile").read_text()
    assert re.search(r"^container-test:\n\tbash containers/smoke-test.sh$", make, flags=re.M)
    test_target = re.search(r"^test:(.*)$", make, flags=re.M).group(1)
    assert "container" not in test_target, "make test does not build images"


def test_lock_pins_every_runtime_dependency_exactly():
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            m = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", line)
            assert m, f"not an exact pin: {line}"
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"]:
        req = Requirement(dep)
        name = req.name.lower().replace("_", "-")
        if name == "torch":
            assert name not in pins, "torch comes from the CUDA base image"
            continue
        assert name in pins, f"{name} is not pinned in containers/requirements.lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} violates {req.specifier}"


def test_versions_agree():
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    params = nfscript.parse_params((REPO / "nextflow.config").read_text())
    assert params["container"].endswith(f":{version}")
    assert re.search(rf"version\s*=\s*'{re.escape(version)}'", (REPO / "nextflow.config").read_text())
    assert _arg(DOCKERFILE.read_text(), "HETFIELD_VERSION") == version
    assert f"org.opencontainers.image.version {version}" in DEFFILE.read_text()


def test_dockerignore_keeps_the_build_inputs():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {".git", ".venv"} <= ignored
    copied = [args for op, args in _instructions(DOCKERFILE.read_text()) if op == "COPY"]
    for sources in copied:
        for src in sources.split()[:-1]:
            assert src.split("/")[0] not in ignored, f"{src} is copied but excluded by .dockerignore"
