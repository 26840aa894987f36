# Two entry points (see README.md): `make quickstart` and `make test`.
# Both create or reuse a local virtual environment in .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: quickstart test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,ui]'
	touch $@

quickstart: $(BIN)/.installed
	$(BIN)/sparse-transfer quickstart

test: $(BIN)/.installed
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check sparse_transfer tests
	$(BIN)/ruff format --check sparse_transfer tests

clean:
	rm -rf sparse-transfer-runs mlflow.db mlruns .pytest_cache
