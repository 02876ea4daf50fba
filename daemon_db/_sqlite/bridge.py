"""The one place that touches aiosqlite's internals.

aiosqlite runs each connection on a thread of its own and feeds it callables
through a queue of ``(future, function)`` pairs. It has no public way to run
*our* function there with the raw ``sqlite3.Connection``, which is what lets
one call be one unit of work (SQL and row mapping together) and one round
trip. Its private ``Connection._execute`` does it inside a coroutine; we do
the same two steps (queue the pair, hand back the future) so that the future
itself can be awaited, shielded or given a callback without a task per call.
pyproject.toml bounds aiosqlite to the minor version tested here, and
tests/test_bridge.py checks every internal used: ``_thread``, ``_tx``, ``_conn``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import aiosqlite

from .._cancellation import settle, wait_out

__all__ = ["connect", "run_detached", "submit"]

T = TypeVar("T")


async def connect(open_connection: Callable[[], sqlite3.Connection]) -> aiosqlite.Connection:
    """Start a connection thread and open the sqlite3 connection on it.

    Cancelled meanwhile, it waits for the thread to finish opening, closes
    what was opened and stops the thread, then raises CancelledError: aiosqlite
    alone leaves the connection open, and its thread reporting to a loop that
    may have closed.
    """
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
    try:
        await settle(asyncio.ensure_future(_opened(connection)))
    except asyncio.CancelledError:
        await wait_out(asyncio.ensure_future(_shut(connection, opened=not failures)))
        raise
    if failures:
        # When its connector raises, aiosqlite stops the thread without waiting,
        # and the thread may then report to a loop that has closed. Failing here
        # instead lets us wait for the thread to stop.
        await _shut(connection, opened=False)
        raise failures[0]
    return connection


async def _opened(connection: aiosqlite.Connection) -> None:
    await connection


async def _shut(connection: aiosqlite.Connection, *, opened: bool) -> None:
    """Close the connection if it opened, and wait for its thread to stop."""
    if opened:
        await connection.close()
        return
    stopped = connection.stop()
    if stopped is not None:
        await stopped


def submit(
    connection: aiosqlite.Connection, work: Callable[[sqlite3.Connection], T]
) -> asyncio.Future[T]:
    """Queue ``work(sqlite3_connection)`` on the connection's thread; return its future.

    The work runs to its end even if the future is cancelled meanwhile; its
    result is then dropped (aiosqlite sets a result only on a future not done).
    """
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    connection._tx.put_nowait((future, partial(work, connection._conn)))
    return future


def run_detached(
    connection: aiosqlite.Connection, work: Callable[[sqlite3.Connection], object]
) -> None:
    """Queue ``work(sqlite3_connection)`` with no future: it runs even if the loop is gone.

    aiosqlite skips reporting for an item without a future, so this may be
    called from any thread, after the connection's event loop has closed.
    """
    connection._tx.put_nowait((None, partial(work, connection._conn)))
