"""The event log: plain functions over a sqlite3 connection, run on its thread.

Sequences are gap-free because an append reads the run's last sequence and
inserts the next one inside a write transaction (``BEGIN IMMEDIATE``), which
SQLite grants to one connection at a time, in this process or any other; the
``UNIQUE (run_id, sequence)`` constraint backs that up.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from .. import _timestamps as timestamps
from .._errors import RunNotFoundError
from .._records import EventRecord, RunStatus, loader
from . import rows
from .work import snapshot

__all__ = ["append", "follow_page", "list_page", "next_sequence"]

_COLUMNS = "id, run_id, sequence, event_type, unit_id, payload_json, created_at"
_load = loader(EventRecord)


def _from_row(row: tuple[Any, ...]) -> EventRecord:
    try:
        if type(row[2]) is not int:  # 2.5 or '3' would pass as a sequence
            raise TypeError
        return _load(row[0], row[1], row[2], row[3], row[4], row[5], timestamps.from_text(row[6]))
    except (ValueError, TypeError):
        raise rows.damaged("events", _NAMES, row, _CHECKS) from None


_NAMES = tuple(name.strip() for name in _COLUMNS.split(","))
_CHECKS: dict[int, rows.Check] = {2: rows.positive_int, 6: rows.timestamp}


def append(
    conn: sqlite3.Connection,
    *,
    run_id: str,
    event_type: str,
    unit_id: str | None,
    payload: str | None,
) -> EventRecord:
    """Append an event (``payload`` is JSON text) with the run's next sequence."""
    sequence = next_sequence(conn, run_id=run_id)
    created_at = timestamps.now()
    cursor = conn.execute(
        "INSERT INTO events (run_id, sequence, event_type, unit_id, payload_json, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (run_id, sequence, event_type, unit_id, payload, timestamps.to_text(created_at)),
    )
    return _load(cursor.lastrowid, run_id, sequence, event_type, unit_id, payload, created_at)


def next_sequence(conn: sqlite3.Connection, *, run_id: str) -> int:
    """The sequence the run's next event will get; RunNotFoundError if there is no run."""
    found, not_utf8 = rows.readable(
        conn,
        "events",
        "SELECT (SELECT MAX(sequence) FROM events WHERE run_id = runs.id) FROM runs WHERE id = ?",
        (run_id,),
    )
    if not found and not not_utf8:
        raise RunNotFoundError(run_id)
    last = found[0][0] if found else not_utf8[0][1].value
    if last is None:
        return 1
    if type(last) is int and 0 < last < _LARGEST:
        return last + 1
    # Another tool's value: SQLite's + 1 made the largest integer a float, and text
    # sorts after every number (its + 1 is 1, taken already).
    (event_id,) = conn.execute(
        "SELECT id FROM events WHERE run_id = ? ORDER BY sequence DESC LIMIT 1", (run_id,)
    ).fetchone()
    reason = "leaves no next sequence" if last == _LARGEST else "is not an integer >= 1"
    if not found:
        reason = "is not UTF-8 text"
    raise rows.DamagedRow("events", event_id, "sequence", last, reason)


_LARGEST = 2**63 - 1


def list_page(
    conn: sqlite3.Connection, *, run_id: str, after: int, limit: int
) -> list[EventRecord]:
    """Up to ``limit`` events of a run with sequence > ``after``, in order."""
    found = rows.fetchall(
        conn,
        "events",
        f"SELECT {_COLUMNS} FROM events WHERE run_id = ? AND sequence > ?"
        " ORDER BY sequence LIMIT ?",
        (run_id, after, limit),
    )
    return [_from_row(row) for row in found]


def follow_page(
    conn: sqlite3.Connection, *, run_id: str, after: int, limit: int
) -> tuple[RunStatus | None, list[EventRecord]]:
    """The run's status (None if it is gone) and its next events, from one snapshot."""
    with snapshot(conn):
        row = rows.fetchone(conn, "runs", "SELECT id, status FROM runs WHERE id = ?", (run_id,))
        if row is None:
            return None, []
        status = _RUN_STATUSES.get(row[1]) if type(row[1]) is str else None
        if status is None:  # another tool's value: named, as a read of the run names it
            raise rows.DamagedRow("runs", run_id, "status", row[1], "is not a run status")
        return status, list_page(conn, run_id=run_id, after=after, limit=limit)


_RUN_STATUSES = {status.value: status for status in RunStatus}
