"""Helpers shared by the tests: valid records to store, and a dump of a database file."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import sqlite3
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from daemon_db import Run, UnitRecord

T = TypeVar("T")

_branches = itertools.count(1)


def outside_blocks(call: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """A task that is in no transaction block, like one started before the block.

    Tasks started inside a block are in it (they copy its context); a fresh
    context makes this one an outsider, whose writes wait for the block.
    """
    return asyncio.create_task(call, context=contextvars.Context())


def new_run(**fields: Any) -> Run:
    """A valid run on a branch of its own, with any field overridden."""
    defaults: dict[str, Any] = {
        "feature_branch": f"feature/{next(_branches)}",
        "repo_path": "/srv/repo",
        "target_branch": "main",
        "tasks_dir": "tasks",
        "parallelism": 2,
    }
    return Run(**(defaults | fields))


def new_unit(run: Run, unit_id: str, **fields: Any) -> UnitRecord:
    return UnitRecord(run_id=run.id, unit_id=unit_id, **fields)


def dump(path: Path) -> list[str]:
    """Every row and schema object of a database file, as SQL text."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return list(conn.iterdump())


FIGURES: list[str] = []
"""Lines reported by tests, printed together at the end of the run (see conftest.py)."""


def report(line: str) -> None:
    """Report a figure measured by a test: it is printed in the run's summary."""
    FIGURES.append(line)


# Version 1 exactly as that release wrote it: kept here, not imported, so that an
# edit to the first migration is caught instead of silently applied to both sides.
VERSION_1 = """
CREATE TABLE runs (
    id              TEXT PRIMARY KEY NOT NULL,
    feature_branch  TEXT NOT NULL,
    repo_path       TEXT NOT NULL,
    target_branch   TEXT NOT NULL,
    tasks_dir       TEXT NOT NULL,
    parallelism     INTEGER NOT NULL CHECK (parallelism >= 1),
    status          TEXT NOT NULL CHECK (
                        status IN ('pending', 'running', 'completed', 'failed', 'cancelled')
                    ),
    daemon_version  TEXT NOT NULL DEFAULT '',
    started_at      TEXT,
    completed_at    TEXT,
    error           TEXT,
    config_json     TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE units (
    id              TEXT PRIMARY KEY NOT NULL,
    run_id          TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    unit_id         TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (
                        status IN ('pending', 'running', 'completed', 'failed')
                    ),
    branch          TEXT,
    worktree_path   TEXT,
    started_at      TEXT,
    completed_at    TEXT,
    error           TEXT,
    UNIQUE (run_id, unit_id)
);
CREATE TABLE events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id          TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    sequence        INTEGER NOT NULL CHECK (sequence >= 1),
    event_type      TEXT NOT NULL,
    unit_id         TEXT,
    payload_json    TEXT,
    created_at      TEXT NOT NULL,
    UNIQUE (run_id, sequence)
);
"""

V1_ROWS = """
INSERT INTO runs VALUES ('01J0000000000000000000000A', 'feature/a', '/srv/app', 'main', 'tasks',
    2, 'running', '0.9.0', '2026-01-02T03:04:05.123456Z', NULL, NULL, '{"k":1}');
INSERT INTO runs VALUES ('01J0000000000000000000000B', 'feature/a', '/srv/app', 'main', 'tasks',
    1, 'completed', '0.9.0', '2026-01-01T00:00:00.000000Z', '2026-01-01T01:00:00.000001Z',
    NULL, '{}');
INSERT INTO units VALUES ('01J0000000000000000000000A_u1', '01J0000000000000000000000A', 'u1',
    'running', 'daemon/u1', '/wt/u1', '2026-01-02T03:04:06.000000Z', NULL, NULL);
INSERT INTO events (run_id, sequence, event_type, unit_id, payload_json, created_at) VALUES
    ('01J0000000000000000000000A', 1, 'run_started', NULL, NULL, '2026-01-02T03:04:05.200000Z'),
    ('01J0000000000000000000000A', 2, 'unit_started', 'u1', '{"n":1}',
     '2026-01-02T03:04:06.100000Z');
"""


def make_version_1(path: Path, rows: str = V1_ROWS, *, fresh: bool = False) -> None:
    """A database file exactly as version 1 wrote it, with ``rows`` in it.

    With ``fresh``, whatever database was at ``path`` (and its -wal, -shm) goes first.
    """
    if fresh:
        for old in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            old.unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(
            f"PRAGMA journal_mode = WAL; BEGIN; {VERSION_1} {rows}"
            f" PRAGMA application_id = {0x646D6462}; PRAGMA user_version = 1; COMMIT;"
        )
