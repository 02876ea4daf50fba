"""Unit queries: plain functions over a sqlite3 connection, run on its thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from .. import _timestamps as timestamps
from .._errors import RunNotFoundError, StatusConflictError, UnitExistsError, UnitNotFoundError
from .._records import FINISHED_UNIT_STATUSES, UnitRecord, UnitStatus, loader, unchecked_replace
from . import rows

__all__ = ["COLUMNS", "create", "from_row", "get", "list_page", "update_branch", "update_status"]

COLUMNS = "id, run_id, unit_id, status, branch, worktree_path, started_at, completed_at, error"
_load = loader(UnitRecord)
_STATUSES = {status.value: status for status in UnitStatus}
_NAMED_AT_MOST = 3  # record ids an error names when a unit_id was passed for one


def from_row(row: Sequence[Any]) -> UnitRecord:
    try:
        started_at, completed_at = row[6], row[7]
        return _load(
            row[0],
            row[1],
            row[2],
            _STATUSES[row[3]],
            row[4],
            row[5],
            None if started_at is None else timestamps.from_text(started_at),
            None if completed_at is None else timestamps.from_text(completed_at),
            row[8],
        )
    except (KeyError, ValueError, TypeError):
        raise rows.damaged("units", _NAMES, row, _CHECKS) from None


_NAMES = tuple(name.strip() for name in COLUMNS.split(","))
_CHECKS: dict[int, rows.Check] = {
    3: rows.member(_STATUSES, "a unit status"),
    6: rows.optional_timestamp,
    7: rows.optional_timestamp,
}


def _text(moment: datetime | None) -> str | None:
    return None if moment is None else timestamps.to_text(moment)


def create(conn: sqlite3.Connection, *, unit: UnitRecord) -> UnitRecord:
    """Insert ``unit``; return it as stored, with the timestamps its status implies."""
    started_at, completed_at = timestamps.on_create(
        unit.started_at,
        unit.completed_at,
        running=unit.status is UnitStatus.RUNNING,
        finished=unit.status in FINISHED_UNIT_STATUSES,
    )
    if (started_at, completed_at) != (unit.started_at, unit.completed_at):
        unit = unchecked_replace(unit, started_at=started_at, completed_at=completed_at)
    try:
        conn.execute(
            f"INSERT INTO units ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                unit.id,
                unit.run_id,
                unit.unit_id,
                unit.status.value,
                unit.branch,
                unit.worktree_path,
                _text(unit.started_at),
                _text(unit.completed_at),
                unit.error,
            ),
        )
    except sqlite3.IntegrityError as exc:
        if exc.sqlite_errorname == "SQLITE_CONSTRAINT_FOREIGNKEY":
            raise RunNotFoundError(unit.run_id) from None
        existing = rows.fetchone(
            conn,
            "units",
            "SELECT id, run_id, unit_id FROM units WHERE id = ? OR (run_id = ? AND unit_id = ?)",
            (unit.id, unit.run_id, unit.unit_id),
        )
        if existing is None:
            raise
        raise UnitExistsError(*existing) from None
    return unit


def get(conn: sqlite3.Connection, *, unit_record_id: str) -> UnitRecord | None:
    """The unit with this id, or None."""
    sql = f"SELECT {COLUMNS} FROM units WHERE id = ?"
    row = rows.fetchone(conn, "units", sql, (unit_record_id,))
    return None if row is None else from_row(row)


def update_status(
    conn: sqlite3.Connection,
    *,
    unit_record_id: str,
    status: UnitStatus,
    error: str | None,
    expected: Collection[UnitStatus] | None = None,
) -> UnitRecord:
    """Set the status and error of a unit, with the timestamps the change implies.

    With ``expected``, only if the unit's status is one of them: else
    StatusConflictError, and nothing changes.
    """
    unit = _existing(conn, unit_record_id)
    if expected is not None and unit.status not in expected:
        raise StatusConflictError(unit_record_id, unit.status, expected)
    started_at, completed_at = unit.started_at, unit.completed_at
    if status is not unit.status:
        started_at, completed_at = timestamps.on_change(
            started_at,
            running=status is UnitStatus.RUNNING,
            finished=status in FINISHED_UNIT_STATUSES,
        )
    conn.execute(
        "UPDATE units SET status = ?, error = ?, started_at = ?, completed_at = ? WHERE id = ?",
        (status.value, error, _text(started_at), _text(completed_at), unit_record_id),
    )
    return unchecked_replace(
        unit, status=status, error=error, started_at=started_at, completed_at=completed_at
    )


def update_branch(
    conn: sqlite3.Connection, *, unit_record_id: str, branch: str, worktree_path: str
) -> UnitRecord:
    """Record the git branch and worktree a unit works in."""
    unit = _existing(conn, unit_record_id)
    conn.execute(
        "UPDATE units SET branch = ?, worktree_path = ? WHERE id = ?",
        (branch, worktree_path, unit_record_id),
    )
    return unchecked_replace(unit, branch=branch, worktree_path=worktree_path)


def list_page(
    conn: sqlite3.Connection,
    *,
    run_id: str,
    status: UnitStatus | None,
    after: str | None,
    limit: int,
) -> list[UnitRecord]:
    """Up to ``limit`` (-1: all) units of a run, by unit_id, after the unit_id ``after``."""
    sql = f"SELECT {COLUMNS} FROM units WHERE run_id = ?"
    params: list[object] = [run_id]
    if status is not None:
        sql += " AND status = ?"
        params.append(status.value)
    if after is not None:
        sql += " AND unit_id > ?"
        params.append(after)
    found = rows.fetchall(conn, "units", f"{sql} ORDER BY unit_id LIMIT ?", (*params, limit))
    return [from_row(row) for row in found]


def _existing(conn: sqlite3.Connection, unit_record_id: str) -> UnitRecord:
    unit = get(conn, unit_record_id=unit_record_id)
    if unit is None:
        raise UnitNotFoundError(unit_record_id, *_named_by_unit_id(conn, unit_record_id))
    return unit


def _named_by_unit_id(conn: sqlite3.Connection, unit_id: str) -> tuple[list[str], int]:
    """The record ids (a few) and number of units whose own unit_id is ``unit_id``.

    Only on the failure path: the two ids are easy to mix up, and the error
    then says which record id was meant. No index leads with unit_id, so this
    scans the units table; a mistake can afford that.
    """
    found = rows.fetchall(
        conn,
        "units",
        "SELECT id, COUNT(*) OVER () FROM units WHERE unit_id = ? ORDER BY id LIMIT ?",
        (unit_id, _NAMED_AT_MOST),
    )
    return [row[0] for row in found], (found[0][1] if found else 0)
