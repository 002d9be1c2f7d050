# Two commands on a fresh machine with python3 and make: `make run`, `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint schema bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]" --config-settings editable_mode=compat
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## migrate, seed demo data on first start, serve http://127.0.0.1:8000/graphql
	$(BIN)/ordergraph migrate
	$(BIN)/ordergraph seed --if-empty
	$(BIN)/ordergraph serve

test: $(STAMP)  ## the whole suite (PostgreSQL/Redis parts run when ORDERGRAPH_TEST_* are set)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy app schema resolvers db domain

schema: $(STAMP)  ## regenerate schema.graphql
	$(BIN)/ordergraph export-schema --output schema.graphql

bench: $(STAMP)  ## benchmark real servers (SQLite; PostgreSQL+Redis when reachable): bench/results.json
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) ordergraph.db ordergraph.db-wal ordergraph.db-shm .pytest_cache .hypothesis
