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
