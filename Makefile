# engram-voice: one entry point for developers and CI (CI runs the same targets).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
STAMP := $(VENV)/.installed
WEB_STAMP := web/node_modules/.installed
PYTEST_ARGS ?=
PORT ?= 8000

.PHONY: help install bytecode web run test test-fast test-python test-web lint format bench constraints clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(UV) pip install --python $(BIN)/python --quiet --compile-bytecode -c constraints.txt -e '.[dev,emulator]'
	$(MAKE) --no-print-directory bytecode
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the pinned Python dependencies

# PYTHONDONTWRITEBYTECODE=1 (set on some machines) would make every start recompile ~530
# modules (3.1 s instead of 1.4 s to the first 200): the dependencies are compiled at
# install (--compile-bytecode) and the editable package here (only changed files).
bytecode: ## Compile the package's bytecode (make install and run do it)
	@$(BIN)/python -m compileall -q src

$(WEB_STAMP): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $(WEB_STAMP)

web: $(WEB_STAMP) ## Build the web client into the package's static folder
	cd web && npm run --silent build

run: install web bytecode ## Start the local stack (Azure emulator, Zep stand-in, service) and print the URL (PORT=8000)
	$(BIN)/engram-voice dev --port $(PORT)

test: install web bytecode ## Run the whole test suite (Python and web client)
	cd web && npm test --silent
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install web bytecode ## The inner loop: every test that starts no process (-m "not process"; PYTEST_ARGS adds more)
	$(BIN)/python -m pytest -m "not process" $(PYTEST_ARGS)

lint: install ## ruff (lint + format check) and mypy --strict
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: install ## Apply ruff's formatter and safe fixes
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: install ## Run the benchmarks (loopback only) and print their reports
	$(BIN)/python bench/bench_mint.py
	$(BIN)/python bench/bench_enrich.py
	$(BIN)/python bench/bench_retention.py
	$(BIN)/python bench/bench_retention_pg.py
	$(BIN)/python bench/bench_workers.py
	$(BIN)/python bench/bench_status.py
	$(BIN)/python bench/bench_calls.py
	$(BIN)/python bench/bench_capture.py
	$(BIN)/python bench/bench_queue_pg.py
	$(BIN)/python bench/bench_delivery.py

constraints: ## Re-pin constraints.txt from pyproject.toml (needs the package registry)
	$(UV) pip compile pyproject.toml --extra dev --extra emulator --no-header --no-annotate --quiet -o constraints.txt

clean: ## Remove the virtualenv, caches and local state
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache web/node_modules web/dist
