# tokenize_mm: `make train` runs the main job, `make test` runs the test suite.
# Both create (or reuse) the virtual environment in $(VENV) and install what they need.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tokenize_mm-installed
LOCK := requirements.lock
# The installers themselves are pinned too, so that the lock resolves and installs the same way.
PIP_VERSION := 25.2
PIP_TOOLS_VERSION := 7.5.2
ARGS ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install lock check-install train test test-unit test-slow test-integration lint format \
	bench bench-balance docs-check results

help: ## Show this help.
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

# Every version comes from $(LOCK) (pip-compile's output); the project itself is installed on top
# without resolving anything, and the install ends with a check of every compiled extension.
$(STAMP): pyproject.toml $(LOCK) tools/check_install.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check pip==$(PIP_VERSION)
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python tools/check_install.py $(LOCK)
	@touch $(STAMP)

install: $(STAMP) ## Create or reuse the virtual environment, install the locked versions, check them.

check-install: ## Check the environment against the lock and load every compiled extension.
	$(BIN)/python tools/check_install.py $(LOCK)

lock: ## Regenerate requirements.lock from pyproject.toml (pip-compile; see README "Upgrading").
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==$(PIP_VERSION) pip-tools==$(PIP_TOOLS_VERSION)
	CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet $(LOCK_ARGS) --extra dev --all-build-deps --strip-extras --allow-unsafe \
		--no-emit-index-url --no-emit-find-links --output-file $(LOCK) pyproject.toml

train: $(STAMP) ## Run the main job on the built-in data (Hydra overrides: make train ARGS='...').
	$(BIN)/python -m tokenize_mm.cli.train $(ARGS)

# Test tiers (markers in pyproject.toml): the fast tier is in-process and has neither marker;
# `slow` spawns processes or trains longer; `integration` runs the command lines end to end.
# Each target selects at least one test, so pytest never exits 5 ("no tests collected").
test: $(STAMP) ## Run the whole test suite: every tier (fast, slow, integration).
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-unit: $(STAMP) ## Run the fast tier only: in-process, no slow or integration tests.
	$(BIN)/python -m pytest -q -m "not integration and not slow" $(PYTEST_ARGS)

test-slow: $(STAMP) ## Run the slow tier only: multi-process and heavy in-process checks.
	$(BIN)/python -m pytest -q -m "slow and not integration" $(PYTEST_ARGS)

test-integration: $(STAMP) ## Run the integration tier only: command lines end to end.
	$(BIN)/python -m pytest -q -m integration $(PYTEST_ARGS)

docs-check: $(STAMP) ## Check every command line of README.md and docs/ against the code (also in make test).
	$(BIN)/python -m pytest -q tests/integration/test_docs_commands.py tests/integration/test_readme.py $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check and format check.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Apply ruff fixes and formatting.
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Benchmarks write into a scratch folder ($TMPDIR/tokenize_mm) unless RESULTS names where: RESULTS=docs/results
# (bench) or RESULTS=docs/results/balance (bench-balance) updates the recorded results.
bench: $(STAMP) ## Run the tokenizer benchmark (into /tmp/tokenize_mm; RESULTS=docs/results updates the record).
	$(BIN)/python benchmarks/tokenizers.py $(if $(RESULTS),--out $(RESULTS)/tokenizer_benchmark.json --md $(RESULTS)/tokenizer_benchmark.md)

bench-balance: $(STAMP) ## Compare balance strategies over 3 seeds (SIZE=quick: 5 min; RESULTS=docs/results/balance).
	$(BIN)/python benchmarks/balance.py --size $(or $(SIZE),default) $(if $(RESULTS),--out-dir $(RESULTS)) $(ARGS)

results: $(STAMP) ## Rerun the recorded results into scratch and compare within tolerance (ALL=1: hours; UPDATE=1 rewrites docs/results).
	$(BIN)/python benchmarks/reproduce.py $(if $(ALL),--all) $(if $(UPDATE),--update) $(ARGS)
