# Two entry points (see README.md): `make quickstart` and `make test`.
# Both create or reuse a local virtual environment in .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: quickstart test lint clean speed-env

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,ui]'
	touch $@

# DeepSparse (the paper's sparse CPU engine) lives in its own environment: it pins numpy<2,
# pydantic<2.8 and onnx<1.15, which the project's own environment cannot hold. The project
# talks to it across a process boundary (sparse_transfer/speed/engine_runner.py).
# 1.9.0 is an end-of-life stub that refuses to install: 1.8.0 is the last release.
SPEED_ENV ?= .speed-env
SPEED_PACKAGES := deepsparse==1.8.0 sparsezoo==1.8.0 onnx==1.14.1 "numpy<2" "pydantic<2.8"

speed-env: $(SPEED_ENV)/bin/.installed

$(SPEED_ENV)/bin/.installed: Makefile
	$(PYTHON) -m venv $(SPEED_ENV)
	NM_DISABLE_ANALYTICS=1 $(SPEED_ENV)/bin/python -m pip install --quiet --upgrade pip
	NM_DISABLE_ANALYTICS=1 $(SPEED_ENV)/bin/python -m pip install --quiet $(SPEED_PACKAGES)
	touch $@

quickstart: $(BIN)/.installed
	$(BIN)/sparse-transfer quickstart

# The suite runs on TEST_WORKERS processes (pytest-xdist), each test file on one of them and
# the slow files first; much of a sweep test's time is waiting (on Ray, servers, killed
# workers), which the other worker fills. Tests marked `serial` measure time or speed, so
# they run afterwards with the machine to themselves. Both passes always run.
TEST_WORKERS ?= 2

test: $(BIN)/.installed
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
		-m "not serial"; parallel=$$?; \
	$(BIN)/python -m pytest -m serial; serial=$$?; \
	test $$parallel = 0 && test $$serial = 0

lint: $(BIN)/.installed
	$(BIN)/ruff check sparse_transfer tests
	$(BIN)/ruff format --check sparse_transfer tests

clean:
	rm -rf sparse-transfer-runs mlflow.db mlruns .pytest_cache
