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

# The first start is killed part-way (exit status 137, SIGKILL); the second resumes.
demo: $(READY)
	@echo "== first start: a fresh demo.db, killed part-way =="
	@$(BIN)/python examples/daemon.py --db demo.db --fresh --crash-after 1.3 || test $$? -eq 137
	@echo "== second start: resume what was interrupted =="
	@$(BIN)/python examples/daemon.py --db demo.db

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
