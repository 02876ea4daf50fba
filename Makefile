# The one entry point: `make demo`, `make test`, `make docs`, `make bench`, `make bench-scale`, `make lint`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
READY := $(VENV)/.ready
CHROMIUM := /usr/bin/chromium
# The server binaries (initdb, pg_ctl) the tests start a throwaway PostgreSQL with.
POSTGRES := $(firstword $(wildcard $(shell pg_config --bindir 2>/dev/null)/initdb /usr/lib/postgresql/*/bin/initdb) postgres-server)

.PHONY: demo test lint typecheck docs docs-check reliability bench bench-scale clean postgres-server

$(READY): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,docs,postgres]'
	touch $@

# A daemon on ./demo.db is killed mid-work, started again, and finishes (see examples/demo.py).
demo: $(READY)
	@$(BIN)/python examples/demo.py --db demo.db

lint: $(READY)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(READY)
	$(BIN)/mypy --strict daemon_db examples tests/typed_usage.py

# The PostgreSQL half of the suite runs on a throwaway server of its own
# (tests/postgres_server.py): initdb into a temporary folder, stopped at the end.
test: lint typecheck docs $(POSTGRES)
	$(BIN)/pytest

# The documentation site (mkdocs.yml, docs/), built into site/; a warning fails it.
docs: $(READY)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# The built site in headless Chromium: pages render, links and anchors resolve,
# nothing is fetched from another host (tests/test_docs_site.py).
docs-check: docs $(CHROMIUM)
	$(BIN)/pytest -q -m browser tests/test_docs_site.py

# Debian's Chromium, installed when missing (as root, non-interactively).
$(CHROMIUM):
	DEBIAN_FRONTEND=noninteractive apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium

# Debian's PostgreSQL server, installed when its binaries are missing (as root, non-interactively).
postgres-server:
	DEBIAN_FRONTEND=noninteractive apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql

# The reliability tests alone, with the figures they measure (they also run in make test).
reliability: $(READY)
	$(BIN)/pytest -q tests/reliability tests/test_db.py tests/test_event_loop.py

# daemon_db beside raw sqlite3, straightforward aiosqlite and SQLAlchemy, in one run (~5 min).
# Then where a call's time goes, layer by layer (~1 min), and the same calls on
# PostgreSQL over loopback beside a SQLite file (~1 min).
bench: $(READY) $(POSTGRES)
	$(BIN)/python -m bench
	$(BIN)/python -m bench.layers
	$(BIN)/python -m bench.postgres

# daemon_db on a file of 1,000,000 runs, 4,000,000 units and 10,000,000 events,
# bulk-loaded into the system's temporary folder (about 3.3 GB, deleted at the
# end), beside issue 10's figures (~15 min). SCALE_ARGS="--runs 100000" for less.
bench-scale: $(READY)
	$(BIN)/python -m bench.scale $(SCALE_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis *.egg-info site demo.db demo.db-wal demo.db-shm
