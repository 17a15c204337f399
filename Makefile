# tokenize_mm: `make train` runs the main job, `make test` runs the test suite.
# Both create (or reuse) the virtual environment in $(VENV) and install what they need.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tokenize_mm-installed
ARGS ?=
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install train test test-unit lint format bench bench-balance

help: ## Show this help.
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## Create or reuse the virtual environment and install tokenize_mm with dev extras.

train: $(STAMP) ## Run the main job on the built-in data (Hydra overrides: make train ARGS='...').
	$(BIN)/python -m tokenize_mm.cli.train $(ARGS)

test: $(STAMP) ## Run the whole test suite (unit + integration).
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-unit: $(STAMP) ## Run the fast unit tier only.
	$(BIN)/python -m pytest -q -m "not integration and not slow" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check and format check.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Apply ruff fixes and formatting.
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP) ## Run the tokenizer benchmark and write docs/results/tokenizer_benchmark.{md,json}.
	$(BIN)/python benchmarks/tokenizers.py

bench-balance: $(STAMP) ## Compare balance strategies over 3 seeds (docs/results/balance/; SIZE=quick: 5 min).
	$(BIN)/python benchmarks/balance.py --size $(or $(SIZE),default) $(ARGS)
