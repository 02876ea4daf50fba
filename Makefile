# The one entry point: `make demo`, `make test`, `make bench`, `make lint`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready

.PHONY: demo test lint typecheck reliability bench clean

$(READY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

# A daemon on ./demo.db is killed mid-work, started again, and finishes (see examples/demo.py).
demo: $(READY)
	@$(BIN)/python examples/demo.py --db demo.db

lint: $(READY)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(READY)
	$(BIN)/mypy --strict daemon_db

test: lint typecheck
	$(BIN)/pytest

# The reliability tests alone, with the figures they measure (they also run in make test).
reliability: $(READY)
	$(BIN)/pytest -q tests/reliability tests/test_db.py tests/test_event_loop.py

# daemon_db beside raw sqlite3, plain aiosqlite and SQLAlchemy, in one run (~2 min).
bench: $(READY)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis *.egg-info demo.db demo.db-wal demo.db-shm
