"""Unit queries: coroutine functions of an asyncpg connection, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace
from typing import Any

import asyncpg

from .. import _timestamps as timestamps
from .._errors import RunNotFoundError, StatusConflictError, UnitExistsError, UnitNotFoundError
from .._records import FINISHED_UNIT_STATUSES, UnitRecord, UnitStatus, loader
from . import damage
from .damage import aware
from .errors import too_long_for_an_index

__all__ = ["COLUMNS", "create", "from_row", "get", "list_page", "update_branch", "update_status"]

COLUMNS = "id, run_id, unit_id, status, branch, worktree_path, started_at, completed_at, error"
_load = loader(UnitRecord)
_STATUSES = {status.value: status for status in UnitStatus}
_NAMES = COLUMNS.replace(" ", "").split(",")
_CHECKS = {
    3: damage.member(_STATUSES, "a unit status"),
    6: damage.timestamp,
    7: damage.timestamp,
}
_NAMED_AT_MOST = 3  # record ids an error names when a unit_id was passed for one


def from_row(row: Any) -> UnitRecord:
    try:
        return _load(
            row[0],
            row[1],
            row[2],
            _STATUSES[row[3]],
            row[4],
            row[5],
            aware(row[6]),
            aware(row[7]),
            row[8],
        )
    except (KeyError, AttributeError) as exc:
        raise damage.damaged("units", _NAMES, row, _CHECKS) from exc


async def create(conn: asyncpg.Connection, *, unit: UnitRecord) -> UnitRecord:
    """Insert ``unit``; return it as stored, with the timestamps its status implies."""
    started_at, completed_at = timestamps.on_create(
        unit.started_at,
        unit.completed_at,
        running=unit.status is UnitStatus.RUNNING,
        finished=unit.status in FINISHED_UNIT_STATUSES,
    )
    if (started_at, completed_at) != (unit.started_at, unit.completed_at):
        unit = replace(unit, started_at=started_at, completed_at=completed_at)
    try:
        async with conn.transaction():  # a savepoint: the conflict can be looked up after it
            await conn.execute(
                f"INSERT INTO units ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                unit.id,
                unit.run_id,
                unit.unit_id,
                unit.status.value,
                unit.branch,
                unit.worktree_path,
                unit.started_at,
                unit.completed_at,
                unit.error,
            )
    except asyncpg.ForeignKeyViolationError:
        raise RunNotFoundError(unit.run_id) from None
    except asyncpg.ProgramLimitExceededError as exc:
        names = {"UnitRecord.id": unit.id, "UnitRecord.unit_id": unit.unit_id}
        raise too_long_for_an_index(exc, names) from None
    except asyncpg.UniqueViolationError:
        existing = await conn.fetchrow(
            "SELECT id, run_id, unit_id FROM units WHERE id = $1 OR (run_id = $2 AND unit_id = $3)",
            unit.id,
            unit.run_id,
            unit.unit_id,
        )
        if existing is None:
            raise
        raise UnitExistsError(existing[0], existing[1], existing[2]) from None
    return unit


async def get(
    conn: asyncpg.Connection, *, unit_record_id: str, lock: bool = False
) -> UnitRecord | None:
    """The unit with this id, or None; with ``lock``, its row is locked for the transaction."""
    row = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM units WHERE id = $1" + (" FOR UPDATE" if lock else ""),
        unit_record_id,
    )
    return None if row is None else from_row(row)


async def update_status(
    conn: asyncpg.Connection,
    *,
    unit_record_id: str,
    status: UnitStatus,
    error: str | None,
    expected: Collection[UnitStatus] | None = None,
) -> UnitRecord:
    """Set the status and error of a unit, with the timestamps the change implies."""
    unit = await _existing(conn, unit_record_id)
    if expected is not None and unit.status not in expected:
        raise StatusConflictError(unit_record_id, unit.status, expected)
    started_at, completed_at = unit.started_at, unit.completed_at
    if status is not unit.status:
        started_at, completed_at = timestamps.on_change(
            started_at,
            running=status is UnitStatus.RUNNING,
            finished=status in FINISHED_UNIT_STATUSES,
        )
    await conn.execute(
        "UPDATE units SET status = $1, error = $2, started_at = $3, completed_at = $4"
        " WHERE id = $5",
        status.value,
        error,
        started_at,
        completed_at,
        unit_record_id,
    )
    return replace(
        unit, status=status, error=error, started_at=started_at, completed_at=completed_at
    )


async def update_branch(
    conn: asyncpg.Connection, *, unit_record_id: str, branch: str, worktree_path: str
) -> UnitRecord:
    """Record the git branch and worktree a unit works in."""
    unit = await _existing(conn, unit_record_id)
    await conn.execute(
        "UPDATE units SET branch = $1, worktree_path = $2 WHERE id = $3",
        branch,
        worktree_path,
        unit_record_id,
    )
    return replace(unit, branch=branch, worktree_path=worktree_path)


async def list_page(
    conn: asyncpg.Connection,
    *,
    run_id: str,
    status: UnitStatus | None,
    after: str | None,
    limit: int,
) -> list[UnitRecord]:
    """Up to ``limit`` units of a run, by unit_id, after the unit_id ``after``."""
    sql = f"SELECT {COLUMNS} FROM units WHERE run_id = $1"
    params: list[object] = [run_id]
    if status is not None:
        params.append(status.value)
        sql += f" AND status = ${len(params)}"
    if after is not None:
        params.append(after)
        sql += f' AND unit_id COLLATE "C" > ${len(params)}'
    params.append(limit)
    found = await conn.fetch(f'{sql} ORDER BY unit_id COLLATE "C" LIMIT ${len(params)}', *params)
    return [from_row(row) for row in found]


async def _existing(conn: asyncpg.Connection, unit_record_id: str) -> UnitRecord:
    unit = await get(conn, unit_record_id=unit_record_id, lock=True)
    if unit is None:
        found = await conn.fetch(
            "SELECT id, COUNT(*) OVER () FROM units WHERE unit_id = $1"
            ' ORDER BY id COLLATE "C" LIMIT $2',
            unit_record_id,
            _NAMED_AT_MOST,
        )
        named = [row[0] for row in found]
        raise UnitNotFoundError(unit_record_id, named, int(found[0][1]) if found else 0)
    return unit
