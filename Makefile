# make test            system packages (if missing), virtualenv, then the whole suite
# make test PYTEST_ARGS='-x -k webhook'
# make check           lint, then the suite without the drills, slow tests and the long replay
# make lint            ruff check + format check + mypy + import-linter's layer contracts
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
# Test processes (pytest-xdist); each starts its own PostgreSQL. 0 runs in this process.
PYTEST_WORKERS ?= 2

.PHONY: venv system-deps test check chaos lint run clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when pyproject.toml or setup.py changed since the last successful install.
$(STAMP): pyproject.toml setup.py | $(BIN)/python
	@echo "pip install -e '.[dev]' (log: $(VENV)/pip.log)"
	@$(BIN)/python -m pip install --disable-pip-version-check -e '.[dev]' >$(VENV)/pip.log 2>&1 \
		|| { cat $(VENV)/pip.log >&2; exit 1; }
	@touch $@

venv: $(STAMP)

system-deps:
	./scripts/install-system-deps

test: system-deps venv
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The fast loop while working: everything but drills, slow tests and the 2,000-customer replay.
check: system-deps venv lint
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal -m "not chaos_full and not drill and not slow" $(PYTEST_ARGS)

# Just the 2,000-customer chaos replay on SQLite and PostgreSQL (`make test` runs it too);
# figures go to artifacts/chaos_replay_<engine>.txt.
chaos: system-deps venv
	$(BIN)/python -m pytest -m chaos_full -s tests/test_chaos_replay.py

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check recovery tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

run: venv
	$(BIN)/recovery demo

clean:
	rm -rf artifacts build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
