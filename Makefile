# Two commands that work on a fresh machine with Python 3.11+: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test soak lint typecheck bench mutation clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/keel tour

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests bench mutation
	$(BIN)/ruff format --check src tests bench mutation

typecheck: $(VENV)/.installed
	$(BIN)/mypy --strict src/keel
	$(BIN)/mypy --strict mutation/run.py mutation/table_mutator.py

test: lint typecheck
	scripts/services.sh
	$(BIN)/python -m pytest -q

# The reliability suites at full length (tests/reliability; `make test` runs their short versions). See docs/reliability.md.
soak: $(VENV)/.installed
	scripts/services.sh
	KEEL_SOAK=1 $(BIN)/python -m pytest -q tests/reliability

# Every benchmark, one at a time, then one table of the targets: `make bench BENCH_ARGS="--quick"` for a smoke run,
# `BENCH_ARGS="--strict"` to fail on a missed target.
bench: $(VENV)/.installed
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

# Mutation testing of the decision modules (mutmut and mutation/table_mutator.py): a score per module and the
# survivors; not part of `make test` (about half an hour on 2 cores; MUTATION_ARGS="--module NAME" for one
# module). See docs/quality.md.
$(VENV)/.mutation: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[test,mutation]'
	touch $@

mutation: $(VENV)/.mutation
	$(BIN)/python mutation/run.py $(MUTATION_ARGS)

clean:
	rm -rf $(VENV) .keel .pytest_cache .mypy_cache .ruff_cache mutants
