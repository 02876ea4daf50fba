"""The one place that touches aiosqlite's internals.

aiosqlite runs each connection on a thread of its own and feeds it callables
through a queue. It has no public way to run *our* function there with the raw
``sqlite3.Connection``, which is what lets one call be one unit of work (SQL and
row mapping together) and one round trip. ``Connection._execute`` is that way;
it has kept its shape for years, and pyproject.toml bounds aiosqlite to the
minor version tested here (tests/test_bridge.py checks both functions below).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

import aiosqlite

__all__ = ["connect", "run"]

T = TypeVar("T")


async def connect(open_connection: Callable[[], sqlite3.Connection]) -> aiosqlite.Connection:
    """Start a connection thread and open the sqlite3 connection on it."""
    failures: list[BaseException] = []

    def attempt() -> sqlite3.Connection | None:
        try:
            return open_connection()
        except BaseException as exc:
            failures.append(exc)
            return None

    connection = aiosqlite.Connection(attempt, iter_chunk_size=64)  # type: ignore[arg-type]
    # aiosqlite's worker is not a daemon thread, so a DB that is never closed
    # would hang interpreter exit; SQLite's journal makes dying mid-write safe.
    connection._thread.daemon = True
    await connection
    if failures:
        # When its connector raises, aiosqlite stops the thread without waiting,
        # and the thread may then report to a loop that has closed. Failing here
        # instead lets us wait for the thread to stop.
        stopped = connection.stop()
        if stopped is not None:
            await stopped
        raise failures[0]
    return connection


def run(connection: aiosqlite.Connection, work: Callable[[sqlite3.Connection], T]) -> Awaitable[T]:
    """Run ``work(sqlite3_connection)`` on the connection's thread; await its result.

    The work is queued when the result is first awaited. If the awaiting task is
    cancelled after that, the work still runs to its end and its result is dropped.
    """
    return cast(Awaitable[T], connection._execute(work, connection._conn))  # type: ignore[no-untyped-call]
