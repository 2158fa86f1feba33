# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs; nothing else is required but python3 >= 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch's CPU wheel is pinned first so that no later step can pull a CUDA build.
TORCH_CPU := torch==2.13.0
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs
# The import contracts of .importlinter (DESIGN §11 layers, no private module used across
# packages); static analysis, nothing is imported. --no-cache: no cache directory in the tree.
LINT_IMPORTS := $(BIN)/lint-imports --no-cache
# mypy over src/ (pyproject's [tool.mypy]); any error fails.
TYPECHECK := $(BIN)/mypy

.PHONY: demo test lint format docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.core-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.all-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH_CPU)
	$(BIN)/python -m pip install -q -e '.[all,dev,docs]'
	touch $@ $(VENV)/.core-installed

$(VENV)/.bench-installed: $(VENV)/.all-installed
	$(BIN)/python -m pip install -q -e '.[all,dev,docs,bench]'
	touch $@

demo: $(VENV)/.core-installed
	$(BIN)/shardlearn demo

test: $(VENV)/.all-installed
	$(BIN)/ruff check src tests benchmarks docs/_hooks conftest.py
	$(BIN)/ruff format --check src tests benchmarks docs/_hooks conftest.py
	$(LINT_IMPORTS)
	$(TYPECHECK)
	$(MKDOCS) build --strict --quiet
	$(BIN)/python -m pytest

lint: $(VENV)/.all-installed
	$(BIN)/ruff check src tests benchmarks docs/_hooks conftest.py
	$(BIN)/ruff format --check src tests benchmarks docs/_hooks conftest.py
	$(LINT_IMPORTS)
	$(TYPECHECK)

format: $(VENV)/.all-installed
	$(BIN)/ruff check --fix src tests benchmarks docs/_hooks conftest.py
	$(BIN)/ruff format src tests benchmarks docs/_hooks conftest.py

# The documentation site (docs/, mkdocs.yml) into site/; --strict turns a broken link, a missing
# page or a docstring mkdocstrings cannot parse into a failure. `make test` builds it too.
docs: $(VENV)/.all-installed
	$(MKDOCS) build --strict

bench: $(VENV)/.bench-installed
	for script in benchmarks/*.py; do $(BIN)/python $$script --quick || exit 1; done

clean:
	rm -rf $(VENV) build dist site .pytest_cache .ruff_cache .mypy_cache
