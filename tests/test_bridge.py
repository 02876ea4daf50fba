"""The one module that touches aiosqlite's internals, checked against the version installed."""

from __future__ import annotations

import sqlite3
import threading

import pytest

from daemon_db._sqlite import bridge


def _open() -> sqlite3.Connection:
    return sqlite3.connect(":memory:", isolation_level=None)


async def test_run_sends_a_function_to_the_connection_thread() -> None:
    connection = await bridge.connect(_open)
    try:
        assert connection._thread.daemon  # never closing cannot hang interpreter exit

        def work(conn: sqlite3.Connection) -> tuple[int, bool]:
            on_its_thread = threading.current_thread() is connection._thread
            return conn.execute("SELECT 41 + 1").fetchone()[0], on_its_thread

        assert await bridge.submit(connection, work) == (42, True)
    finally:
        await connection.close()


async def test_run_raises_what_the_function_raised() -> None:
    connection = await bridge.connect(_open)
    try:

        def fail(conn: sqlite3.Connection) -> None:
            raise KeyError("from the thread")

        with pytest.raises(KeyError, match="from the thread"):
            await bridge.submit(connection, fail)
    finally:
        await connection.close()


async def test_a_failing_connect_raises_and_stops_its_thread() -> None:
    before = set(threading.enumerate())

    def refuse() -> sqlite3.Connection:
        raise OSError("no")

    with pytest.raises(OSError, match="no"):
        await bridge.connect(refuse)
    started = set(threading.enumerate()) - before
    for thread in started:
        thread.join(timeout=5)
        assert not thread.is_alive()
