# Every target sets up .venv on first use; `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU build of torch (taken from a local wheel where the machine has one). GPU users:
# see README, "Running on GPUs".
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev,postgres]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/autotask search studies/digits.yaml

test: $(STAMP)
	$(BIN)/pytest -q

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check autotask tests benchmarks && $(BIN)/ruff format --check autotask tests benchmarks && $(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format autotask tests benchmarks && $(BIN)/ruff check --fix autotask tests benchmarks

clean:
	rm -rf $(VENV) studies/*.db studies/*.db-* .pytest_cache .mypy_cache .ruff_cache
