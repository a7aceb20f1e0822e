# hetfield: the two commands that set everything up on a fresh machine.
#   make demo   environment + simulated tilt-series data + a 4-run sweep with the local runner + report
#   make test   environment + tools for the pipeline checks + the whole test suite
#
#   make container-test   build the image from a local base and run a tiny analysis in it (slow,
#                         needs podman: containers/smoke-test.sh); not part of `make test`
#
# The environment is .venv (created when missing). PyTorch is installed first, as the build this
# machine can use: without an NVIDIA GPU (no nvidia-smi) the CPU build (~1 GB less than a CUDA
# build with its NVIDIA libraries), with one the CUDA build the container image ships. Choose
# another with TORCH_BUILD (cpu, cu128, …), TORCH_SPEC (a pip requirement; empty: leave torch to
# `pip install -e .`) or TORCH_INDEX (where the build is found). The spec is tried first from pip's
# own configuration (a local wheel house or mirror), then from TORCH_INDEX. A torch of the right
# version already in .venv is kept: CI installs its pinned CPU build first (.ci/run).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check
STAMP  := $(VENV)/.hetfield-installed
GROOVY_LINT_VERSION := 18.0.0
TOOLS  := .tools/node_modules/npm-groovy-lint/package.json
DEMO   ?= demo

# The torch the tests run and the image ships (containers/Dockerfile: TORCH_VERSION, and the CUDA
# of its BASE_IMAGE); tests/pipeline checks that these agree.
TORCH_VERSION ?= 2.13.0
TORCH_CUDA    ?= cu128
ifeq ($(shell command -v nvidia-smi 2>/dev/null),)
GPU_SEEN      := no NVIDIA GPU (no nvidia-smi)
TORCH_BUILD   ?= cpu
else
GPU_SEEN      := an NVIDIA GPU (nvidia-smi)
TORCH_BUILD   ?= $(TORCH_CUDA)
endif
TORCH_SPEC    ?= torch==$(TORCH_VERSION)+$(TORCH_BUILD)
TORCH_INDEX   ?= https://download.pytorch.org/whl/$(TORCH_BUILD)

.PHONY: env torch tools test test-fast demo bench container-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

torch: | $(BIN)/python
	@if [ -z '$(TORCH_SPEC)' ]; then \
		echo "TORCH_SPEC is empty: torch comes with hetfield's requirements"; \
	elif $(BIN)/python -c 'import sys, torch; sys.exit(torch.__version__.split("+")[0] != "$(TORCH_VERSION)")' 2>/dev/null; then \
		echo "torch $$($(BIN)/python -c 'import torch; print(torch.__version__)' 2>/dev/null) is installed; keeping it"; \
	else \
		echo "installing $(TORCH_SPEC): this machine has $(GPU_SEEN); TORCH_BUILD, TORCH_SPEC or TORCH_INDEX choose another"; \
		$(PIP) install --quiet '$(TORCH_SPEC)' 2>/dev/null \
			|| $(PIP) install --quiet '$(TORCH_SPEC)' --index-url '$(TORCH_INDEX)'; \
	fi

$(STAMP): pyproject.toml | $(BIN)/python
	@$(MAKE) --no-print-directory torch
	$(PIP) install --quiet -e '.[test]'
	touch $@

env: $(STAMP)

# Groovy 4 jars (for parsing main.nf and the configs) ship inside npm-groovy-lint. Without npm or
# Java the pipeline syntax tests skip and say why; everything else still runs.
$(TOOLS):
	@if command -v npm >/dev/null 2>&1; then \
		npm install --silent --no-audit --no-fund --prefix .tools npm-groovy-lint@$(GROOVY_LINT_VERSION); \
	else echo "npm not found: the Nextflow syntax checks will be skipped"; fi

tools:
	@$(MAKE) --no-print-directory $(TOOLS) || echo "could not install npm-groovy-lint: the Nextflow syntax checks will be skipped"

# The suite runs on TEST_WORKERS processes (pytest-xdist), whole files per worker so module fixtures
# are built once; 2 matches CI's two cores. TEST_WORKERS=0 runs it in this process. Files are handed
# out in collection order (tests/conftest.py puts the longest first): xdist's own order, files with
# the most tests first, left the longest files to the end.
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: env tools
	$(BIN)/python -m pytest -q $(XDIST)

test-fast: env
	$(BIN)/python -m pytest -q $(XDIST) -m "not slow"

# A small two-class tilt-series dataset, a 2 x 2 sweep (zdim 2, 8 x n_classes 1, 2) trained,
# checked for convergence and analysed with the built-in runner, and the sweep report.
demo: env
	rm -rf $(DEMO)
	$(BIN)/hetfield simulate $(DEMO)/simulated --n-particles 300 --n-classes 2 --box 32 --snr 0.5 --seed 1
	$(BIN)/hetfield setup $(DEMO)/dataset --particles $(DEMO)/simulated/particles.star
	$(BIN)/hetfield sweep plan --zdim 2,8 --n-classes 1,2 --set epochs=8 --set field_hidden=128 --set enc_hidden=128 --out $(DEMO)/plan.csv
	$(BIN)/hetfield sweep run $(DEMO)/plan.csv --data $(DEMO)/dataset --out $(DEMO)/sweep --truth $(DEMO)/simulated/truth
	@echo "Open $(DEMO)/sweep/summary/summary.html"

bench: env
	$(BIN)/python benchmarks/train_throughput.py

container-test:
	bash containers/smoke-test.sh

clean:
	rm -rf $(DEMO) .pytest_cache
