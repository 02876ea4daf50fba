"""The event log: coroutine functions of an asyncpg connection, inside the caller's transaction.

Sequences are gap-free across hosts because an append takes its number by
``UPDATE runs SET next_sequence = next_sequence + 1 ... RETURNING``: the update
locks the run's row until the append's transaction ends, so a concurrent
append to the same run, from any host, waits and then reads the number after
it; a rollback undoes the increment with the event. ``UNIQUE (run_id,
sequence)`` backs that up. Each append also sends a NOTIFY, which PostgreSQL
delivers only if and when the transaction commits: ``follow_events`` wakes on it.
"""

from __future__ import annotations

from typing import Any, Final

import asyncpg

from .. import _timestamps as timestamps
from .._errors import RunNotFoundError
from .._records import EventRecord, RunStatus, loader
from . import damage
from .damage import aware

__all__ = ["CHANNEL", "announce", "append", "follow_page", "list_page", "next_sequence"]

CHANNEL: Final = "daemon_db_events"
"""The NOTIFY channel appends announce themselves on; the payload is the run id."""

_COLUMNS = "id, run_id, sequence, event_type, unit_id, payload_json, created_at"
_load = loader(EventRecord)


def _from_row(row: Any) -> EventRecord:
    try:
        # aware(): another tool's 'infinity' reads back naive, as datetime.max.
        return _load(row[0], row[1], row[2], row[3], row[4], row[5], aware(row[6]))
    except AttributeError as exc:
        names = _COLUMNS.replace(" ", "").split(",")
        raise damage.damaged("events", names, row, {6: damage.timestamp}) from exc


async def append(
    conn: asyncpg.Connection,
    *,
    run_id: str,
    event_type: str,
    unit_id: str | None,
    payload: str | None,
) -> EventRecord:
    """Append an event (``payload`` is JSON text) with the run's next sequence."""
    sequence = await conn.fetchval(
        "UPDATE runs SET next_sequence = next_sequence + 1 WHERE id = $1"
        " RETURNING next_sequence - 1",
        run_id,
    )
    if sequence is None:
        raise RunNotFoundError(run_id)
    created_at = timestamps.now()
    event_id = await conn.fetchval(
        "INSERT INTO events (run_id, sequence, event_type, unit_id, payload_json, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
        run_id,
        sequence,
        event_type,
        unit_id,
        payload,
        created_at,
    )
    await announce(conn, run_id)
    return _load(event_id, run_id, sequence, event_type, unit_id, payload, created_at)


async def announce(conn: asyncpg.Connection, run_id: str) -> None:
    """Wake the run's followers, on every host, when this transaction commits."""
    await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, run_id)


async def next_sequence(conn: asyncpg.Connection, *, run_id: str) -> int:
    """The sequence the run's next event will get; RunNotFoundError if there is no run."""
    sequence = await conn.fetchval("SELECT next_sequence FROM runs WHERE id = $1", run_id)
    if sequence is None:
        raise RunNotFoundError(run_id)
    return int(sequence)


async def list_page(
    conn: asyncpg.Connection, *, run_id: str, after: int, limit: int
) -> list[EventRecord]:
    """Up to ``limit`` events of a run with sequence > ``after``, in order."""
    found = await conn.fetch(
        f"SELECT {_COLUMNS} FROM events WHERE run_id = $1 AND sequence > $2"
        " ORDER BY sequence LIMIT $3",
        run_id,
        after,
        limit,
    )
    return [_from_row(row) for row in found]


async def follow_page(
    conn: asyncpg.Connection, *, run_id: str, after: int, limit: int
) -> tuple[RunStatus | None, list[EventRecord]]:
    """The run's status (None if it is gone) and its next events, from one snapshot."""
    status = await conn.fetchval("SELECT status FROM runs WHERE id = $1", run_id)
    if status is None:
        return None, []
    try:
        known = RunStatus(status)
    except ValueError:
        raise damage.DamagedRow("runs", run_id, "status", status, "is not a run status") from None
    return known, await list_page(conn, run_id=run_id, after=after, limit=limit)
