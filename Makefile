# hetfield: the two commands that set everything up on a fresh machine.
#   make demo   environment + simulated tilt-series data + a 4-run sweep with the local runner + report
#   make test   environment + tools for the pipeline checks + the whole test suite
#
# The environment is .venv (created when missing). A normal `torch` requirement is installed for
# users; CI installs the CPU build first (.ci/run) and pip keeps it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hetfield-installed
GROOVY_LINT_VERSION := 18.0.0
TOOLS  := .tools/node_modules/npm-groovy-lint/package.json
DEMO   ?= demo

.PHONY: env tools test test-fast demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
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

test: env tools
	$(BIN)/python -m pytest -q

test-fast: env
	$(BIN)/python -m pytest -q -m "not slow"

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

clean:
	rm -rf $(DEMO) .pytest_cache
