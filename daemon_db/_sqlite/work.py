"""Units of work as they run on a connection's thread.

A public call becomes one function of a ``sqlite3.Connection``; these wrappers
give it its transaction (or savepoint) and translate sqlite3 errors, so that
whatever crosses back to the event loop is a result or a daemon_db error.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from .._errors import DatabaseError, translate
from .._transaction import Block
from .rows import DamagedRow

__all__ = [
    "Block",
    "Failure",
    "Work",
    "begin",
    "begin_reading",
    "end",
    "in_block",
    "in_savepoint",
    "nothing_committed",
    "read",
    "snapshot",
    "write_batch",
    "write_one",
]

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], T]


class Failure:
    """The error one write of a batch ended with (the others are unaffected)."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def read(conn: sqlite3.Connection, work: Work[T], path: str) -> T:
    """Run a read."""
    try:
        return work(conn)
    except sqlite3.Error as exc:
        raise translate(exc, path) from None
    except DamagedRow as exc:
        raise exc.error(path) from None


def write_batch(
    conn: sqlite3.Connection, works: Sequence[Work[Any]], path: str
) -> list[Any | Failure]:
    """Run writes in one transaction; return their outcomes, results or Failures.

    The writes run back to back and commit together. If one raises, the
    transaction is rolled back and the batch runs again with each write in a
    savepoint of its own, so that only the failing writes are undone: a write
    depends on nothing but the database, so running it again does the same.
    Only a failure of the transaction itself (BEGIN or COMMIT failed, or
    SQLite rolled the transaction back) fails every write, since then none of
    them is stored.
    """
    try:
        return _attempt(conn, works, path)
    except sqlite3.Error as exc:  # BEGIN, COMMIT or ROLLBACK failed: nothing is stored
        return [Failure(translate(exc, path))] * len(works)
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def write_one(conn: sqlite3.Connection, work: Work[T], path: str) -> T:
    """Run one write in a transaction of its own; raise its error, with nothing stored."""
    (outcome,) = write_batch(conn, [work], path)
    if isinstance(outcome, Failure):
        raise outcome.error
    result: T = outcome
    return result


def _attempt(
    conn: sqlite3.Connection, works: Sequence[Work[Any]], path: str
) -> list[Any | Failure]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        outcomes: list[Any | Failure] = [work(conn) for work in works]
    except Exception as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if len(works) == 1:
            return [Failure(_translated(exc, path))]
        conn.execute("BEGIN IMMEDIATE")
        outcomes = _each_in_savepoint(conn, works, path)
    if conn.in_transaction:
        conn.execute("COMMIT")
    return outcomes


def _each_in_savepoint(
    conn: sqlite3.Connection, works: Sequence[Work[Any]], path: str
) -> list[Any | Failure]:
    outcomes: list[Any | Failure] = []
    for work in works:
        try:
            outcomes.append(in_savepoint(conn, work, path))
        except Exception as exc:
            if not conn.in_transaction:  # SQLite gave the whole transaction up
                return [Failure(exc)] * len(works)
            outcomes.append(Failure(exc))
    return outcomes


def _translated(exc: Exception, path: str) -> Exception:
    if isinstance(exc, sqlite3.Error):
        return translate(exc, path)
    if isinstance(exc, DamagedRow):
        return exc.error(path)
    return exc


def in_savepoint(conn: sqlite3.Connection, work: Work[T], path: str) -> T:
    """Run one write inside the open transaction; on error undo just this write."""
    if not conn.in_transaction:
        raise DatabaseError(path, "the transaction was rolled back by SQLite after an error")
    try:
        conn.execute("SAVEPOINT work")
        try:
            result = work(conn)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK TO work")
                conn.execute("RELEASE work")
            raise
        conn.execute("RELEASE work")
    except sqlite3.Error as exc:
        raise translate(exc, path) from None
    except DamagedRow as exc:
        raise exc.error(path) from None
    return result


def in_block(conn: sqlite3.Connection, work: Work[T], path: str, *, block: Block, write: bool) -> T:
    """Run one call of a transaction block: a write in a savepoint of its own, or a read."""
    if block.lost is not None or not conn.in_transaction:
        block.lost = block.lost or "SQLite ended the transaction"
        raise DatabaseError(path, nothing_committed(block.lost))
    try:
        result = in_savepoint(conn, work, path) if write else read(conn, work, path)
    except Exception as exc:
        if conn.in_transaction:
            raise
        block.lost = exc.reason if isinstance(exc, DatabaseError) else str(exc)
        raise DatabaseError(path, nothing_committed(block.lost)) from exc
    if not conn.in_transaction:  # no call of ours ends it, but a result must not hide that
        block.lost = "the transaction ended during a call"
        raise DatabaseError(path, nothing_committed(block.lost))
    return result


def nothing_committed(cause: str) -> str:
    """The reason given for every call, and the exit, of a block SQLite rolled back."""
    return (
        f"{cause}; SQLite rolled the whole transaction back:"
        " nothing done in this transaction block is committed"
    )


def begin(conn: sqlite3.Connection, path: str) -> None:
    """Open a write transaction, taking the write lock now rather than on first write."""
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise translate(exc, path) from None


def begin_reading(conn: sqlite3.Connection, path: str) -> None:
    """Open a read transaction on the database as it is now (SQLite's own starts at a read)."""
    try:
        conn.execute("BEGIN")
        conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
    except sqlite3.Error as exc:
        raise translate(exc, path) from None


def end(conn: sqlite3.Connection, path: str, *, commit: bool) -> None:
    """Commit or roll back the open transaction (rolled back too if COMMIT fails).

    Raises DatabaseError when asked to commit a transaction that SQLite has
    already rolled back: the block's work is gone, and must not look committed.
    """
    try:
        if commit and not conn.in_transaction:
            raise DatabaseError(path, nothing_committed("SQLite ended the transaction"))
        if commit:
            conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise translate(exc, path) from None
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """Read several statements from one consistent state of the database."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")
