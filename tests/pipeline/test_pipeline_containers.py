"""The container recipes: hadolint passes, and Docker and Apptainer build the same pinned image."""

from __future__ import annotations

import re
import subprocess
import tomllib

from packaging.requirements import Requirement

import nfscript
from nfscript import REPO

DOCKERFILE = REPO / "containers" / "Dockerfile"
DEFFILE = REPO / "containers" / "hetfield.def"
LOCK = REPO / "containers" / "requirements.lock"


def test_hadolint_passes(hadolint):
    proc = subprocess.run([hadolint, "containers/Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_ignores_are_justified():
    lines = (REPO / ".hadolint.yaml").read_text().splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^\s*-\s*(DL|SC)\d+", line):
            assert number and lines[number - 1].strip().startswith("#"), f"ignored rule without a reason: {line.strip()}"


def _from(text: str) -> str:
    return re.search(r"^FROM\s+(\S+)", text, flags=re.M).group(1)


def test_dockerfile_shape():
    text = DOCKERFILE.read_text()
    base = _from(text)
    assert re.fullmatch(r"[\w./-]+:\d+\.\d+\.\d+-cuda[\d.]+-cudnn\d+-runtime", base), f"pinned CUDA PyTorch base, got {base}"
    assert not re.search(r"^\s*ENTRYPOINT", text, flags=re.M), "no ENTRYPOINT: Nextflow runs its own command"
    assert not re.search(r"^\s*USER\s", text, flags=re.M), "runs as whichever user the engine picks"
    assert re.search(r"apt-get install[^\n]*\bprocps\b", text), "procps: Nextflow needs ps"
    for var in ("MPLCONFIGDIR=/tmp/matplotlib", "NUMBA_CACHE_DIR=/tmp/numba", "XDG_CACHE_HOME=/tmp/.cache"):
        assert var in text
    for label in ("title", "description", "version", "licenses", "source", "base.name"):
        assert f"org.opencontainers.image.{label}=" in text
    assert "-r /tmp/hetfield/requirements.lock" in text and "--no-deps" in text
    assert re.search(r"hetfield --version", text), "the build checks that the CLI starts"


def test_apptainer_definition_matches_the_dockerfile():
    text = DEFFILE.read_text()
    assert re.search(r"^Bootstrap:\s*docker\s*$", text, flags=re.M)
    assert re.search(r"^From:\s*(\S+)", text, flags=re.M).group(1) == _from(DOCKERFILE.read_text())
    for section in ("%files", "%post", "%environment", "%labels", "%test"):
        assert re.search(rf"^{section}\s*$", text, flags=re.M), section
    assert "containers/requirements.lock" in text and "pip install --no-cache-dir -r" in text and "--no-deps" in text
    for var in ("MPLCONFIGDIR=/tmp/matplotlib", "NUMBA_CACHE_DIR=/tmp/numba", "XDG_CACHE_HOME=/tmp/.cache"):
        assert var in text
    assert "procps" in text


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
    assert f"ARG HETFIELD_VERSION={version}" in DOCKERFILE.read_text()
    assert f"org.opencontainers.image.version {version}" in DEFFILE.read_text()


def test_dockerignore_keeps_the_build_inputs():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {".git", ".venv"} <= ignored
    copied = re.findall(r"^COPY\s+(.+)\s+\S+$", DOCKERFILE.read_text(), flags=re.M)
    for sources in copied:
        for src in sources.split():
            assert src.split("/")[0] not in ignored, f"{src} is copied but excluded by .dockerignore"
