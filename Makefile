# make test            system packages (if missing), virtualenv, then pytest
# make test PYTEST_ARGS='-x -k webhook'
# make lint            ruff check + mypy (mypy's targets come from pyproject.toml)
# make run             the local demo
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test
.NOTPARALLEL:

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv system-deps test chaos lint run clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml changed since the last successful install.
$(STAMP): pyproject.toml | $(BIN)/python
	@echo "pip install -e '.[dev]' (log: $(VENV)/pip.log)"
	@$(BIN)/python -m pip install --disable-pip-version-check -e '.[dev]' >$(VENV)/pip.log 2>&1 \
		|| { cat $(VENV)/pip.log >&2; exit 1; }
	@touch $@

venv: $(STAMP)

system-deps:
	./scripts/install-system-deps

test: system-deps venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Just the 2,000-customer chaos replay on SQLite and PostgreSQL (`make test` runs it too);
# figures go to artifacts/chaos_replay_<engine>.txt.
chaos: system-deps venv
	$(BIN)/python -m pytest -m chaos_full -s tests/test_chaos_replay.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

run: venv
	$(BIN)/recovery demo

clean:
	rm -rf artifacts build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
