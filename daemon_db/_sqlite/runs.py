"""Run queries: plain functions over a sqlite3 connection, run on its thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Any

from .. import _timestamps as timestamps
from .._errors import RunExistsError, RunNotFoundError, StatusConflictError
from .._records import (
    ACTIVE_RUN_STATUSES,
    FINISHED_RUN_STATUSES,
    Run,
    RunStatus,
    loader,
    unchecked_replace,
)
from . import events, rows

__all__ = [
    "COLUMNS",
    "NAMES",
    "QUALIFIED_COLUMNS",
    "complete",
    "create",
    "delete",
    "find_ids",
    "from_row",
    "get",
    "get_by_branch",
    "list_page",
    "not_found",
    "page_query",
    "update_status",
]

_COLUMNS = (
    "id, feature_branch, repo_path, target_branch, tasks_dir, parallelism, status,"
    " daemon_version, started_at, completed_at, error, config_json"
)
QUALIFIED_COLUMNS = ", ".join(f"runs.{name.strip()}" for name in _COLUMNS.split(","))
"""The columns of a Run, for a query that joins another table."""
_ACTIVE = "status IN ('pending', 'running')"
_FINISHED = "('cancelled', 'completed', 'failed')"
_load = loader(Run)
_STATUSES = {status.value: status for status in RunStatus}


def from_row(row: Sequence[Any]) -> Run:
    try:
        started_at, completed_at, parallelism = row[8], row[9], row[5]
        if parallelism is not None and (type(parallelism) is not int or parallelism < 1):
            raise TypeError
        return _load(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            _STATUSES[row[6]],
            row[7],
            None if started_at is None else timestamps.from_text(started_at),
            None if completed_at is None else timestamps.from_text(completed_at),
            row[10],
            row[11],
        )
    except (KeyError, ValueError, TypeError):
        raise rows.damaged("runs", _NAMES, row, _CHECKS) from None


_NAMES = tuple(name.strip() for name in _COLUMNS.split(","))

# For the other modules of the engine that read whole runs (maintenance.py).
COLUMNS = _COLUMNS
NAMES = _NAMES
_CHECKS: dict[int, rows.Check] = {
    5: rows.optional_positive_int,
    6: rows.member(_STATUSES, "a run status"),
    8: rows.optional_timestamp,
    9: rows.optional_timestamp,
}


def _text(moment: datetime | None) -> str | None:
    return None if moment is None else timestamps.to_text(moment)


def create(conn: sqlite3.Connection, *, run: Run, owner_id: str | None) -> Run:
    """Insert ``run``, held by ``owner_id``; return it as stored (with its timestamps)."""
    started_at, completed_at = timestamps.on_create(
        run.started_at,
        run.completed_at,
        running=run.status is RunStatus.RUNNING,
        finished=run.status in FINISHED_RUN_STATUSES,
    )
    if (started_at, completed_at) != (run.started_at, run.completed_at):
        run = unchecked_replace(run, started_at=started_at, completed_at=completed_at)
    try:
        conn.execute(
            f"INSERT INTO runs ({_COLUMNS}, owner_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                run.id,
                run.feature_branch,
                run.repo_path,
                run.target_branch,
                run.tasks_dir,
                run.parallelism,
                run.status.value,
                run.daemon_version,
                _text(run.started_at),
                _text(run.completed_at),
                run.error,
                run.config_json,
                owner_id,
            ),
        )
    except sqlite3.IntegrityError:
        conflict = _holder(conn, run, inserting=True)
        if conflict is None:
            raise
        raise conflict from None
    return run


def get(conn: sqlite3.Connection, *, run_id: str) -> Run | None:
    """The run with this id, or None."""
    row = rows.fetchone(conn, "runs", f"SELECT {_COLUMNS} FROM runs WHERE id = ?", (run_id,))
    return None if row is None else from_row(row)


def get_by_branch(conn: sqlite3.Connection, *, feature_branch: str, repo_path: str) -> Run | None:
    """The active run of this branch and repo, else the newest one, else None."""
    row = rows.fetchone(
        conn,
        "runs",
        f"SELECT {_COLUMNS} FROM runs WHERE feature_branch = ? AND repo_path = ?"
        f" ORDER BY {_ACTIVE} DESC, id DESC LIMIT 1",
        (feature_branch, repo_path),
    )
    return None if row is None else from_row(row)


def update_status(
    conn: sqlite3.Connection,
    *,
    run_id: str,
    status: RunStatus,
    error: str | None,
    expected: Collection[RunStatus] | None = None,
    holder: Callable[[sqlite3.Connection], str] | None = None,
) -> Run:
    """Set the status and error of a run, with the timestamps the change implies.

    With ``expected``, only if the run's status is one of them: else
    StatusConflictError, and nothing changes. A finished run is held by nobody;
    one made active again is held by ``holder`` (which registers the caller's
    owner and gives its id), as a run created active is.
    """
    run = get(conn, run_id=run_id)
    if run is None:
        raise not_found(run_id)
    if expected is not None and run.status not in expected:
        raise StatusConflictError(run_id, run.status, expected)
    started_at, completed_at = run.started_at, run.completed_at
    if status is not run.status:
        started_at, completed_at = timestamps.on_change(
            started_at,
            running=status is RunStatus.RUNNING,
            finished=status in FINISHED_RUN_STATUSES,
        )
    updated = unchecked_replace(
        run, status=status, error=error, started_at=started_at, completed_at=completed_at
    )
    finished = status in FINISHED_RUN_STATUSES
    reopened = run.status in FINISHED_RUN_STATUSES and not finished
    try:
        conn.execute(
            "UPDATE runs SET status = ?, error = ?, started_at = ?, completed_at = ?"
            + (", owner_id = ?, attempts = 0" if reopened and holder else "")
            + (", owner_id = NULL" if finished else "")
            + " WHERE id = ?",
            (
                status.value,
                error,
                _text(started_at),
                _text(completed_at),
                *((holder(conn),) if reopened and holder else ()),
                run_id,
            ),
        )
    except sqlite3.IntegrityError:
        conflict = _holder(conn, updated, inserting=False)
        if conflict is None:
            raise
        raise conflict from None
    return updated


def not_found(run_id: str) -> RunNotFoundError:
    return RunNotFoundError(run_id)


def complete(
    conn: sqlite3.Connection,
    *,
    run_id: str,
    status: RunStatus,
    error: str | None,
    payload: str | None,
) -> Run:
    """Finish an active run and log its ``run_completed`` event (``payload``), together.

    A run already finished with ``status`` is returned as it is, and nothing is
    logged; one finished with another status raises StatusConflictError.
    """
    run = get(conn, run_id=run_id)
    if run is None:
        raise not_found(run_id)
    if run.status in FINISHED_RUN_STATUSES:
        if run.status is status:
            return run
        raise StatusConflictError(run_id, run.status, ACTIVE_RUN_STATUSES)
    run = update_status(conn, run_id=run_id, status=status, error=error)
    events.append(conn, run_id=run_id, event_type="run_completed", unit_id=None, payload=payload)
    return run


def delete(conn: sqlite3.Connection, *, run_id: str) -> bool:
    """Delete a run; its units and events go with it (ON DELETE CASCADE)."""
    return conn.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount > 0


def list_page(
    conn: sqlite3.Connection,
    *,
    statuses: Collection[RunStatus] | None,
    feature_branch: str | None,
    repo_path: str | None,
    after: str | None,
    newest_first: bool,
    limit: int,
) -> list[Run]:
    """Up to ``limit`` runs matching the filters, after the run id ``after``, by id."""
    sql, params = page_query(
        f"{QUALIFIED_COLUMNS} FROM runs",
        statuses=statuses,
        feature_branch=feature_branch,
        repo_path=repo_path,
        after=after,
        newest_first=newest_first,
        limit=limit,
    )
    return [from_row(row) for row in rows.fetchall(conn, "runs", sql, params)]


def page_query(
    selected: str,
    *,
    statuses: Collection[RunStatus] | None,
    feature_branch: str | None,
    repo_path: str | None,
    after: str | None,
    newest_first: bool,
    limit: int,
) -> tuple[str, list[object]]:
    """A page of runs' SQL and parameters: ``SELECT {selected}`` (which names ``runs``) filtered."""
    conditions: list[str] = []
    params: list[object] = []
    if statuses is not None:
        conditions.append(f"runs.status IN ({', '.join('?' * len(statuses))})")
        params.extend(status.value for status in statuses)
    if feature_branch is not None:
        conditions.append("runs.feature_branch = ?")
        params.append(feature_branch)
    if repo_path is not None:
        conditions.append("runs.repo_path = ?")
        params.append(repo_path)
    if after is not None:
        conditions.append("runs.id < ?" if newest_first else "runs.id > ?")
        params.append(after)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    order = "DESC" if newest_first else "ASC"
    return f"SELECT {selected} {where} ORDER BY runs.id {order} LIMIT ?", [*params, limit]


def find_ids(conn: sqlite3.Connection, *, typed: str, limit: int) -> tuple[list[str], int]:
    """Run ids as people type them: the id, or a case-insensitive prefix or suffix of it.

    Returns up to ``limit`` matching ids, the closest first, and how many match
    in all. An id equal to ``typed`` (else equal but for case, if only one is)
    is the only match: an id may be a prefix of a longer one.
    """
    pattern = typed.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    # LIKE ignores ASCII case, and run ids are ASCII (ULIDs, uppercase).
    sql = (
        "SELECT id, (id = :typed) + (id LIKE :same ESCAPE '\\') AS closeness, COUNT(*) OVER ()"
        " FROM runs WHERE id LIKE :prefix ESCAPE '\\' OR id LIKE :suffix ESCAPE '\\'"
        " ORDER BY closeness DESC, id LIMIT :limit"
    )
    params = {
        "typed": typed,
        "same": pattern,
        "prefix": f"{pattern}%",
        "suffix": f"%{pattern}",
        "limit": max(limit, 2),
    }
    found, unreadable = rows.readable(conn, "runs", sql, params)
    total = found[0][2] if found else 0
    if unreadable:
        # An id another tool wrote that is not UTF-8 cannot be typed: left out of
        # the matches, all of them read (a few), so that it hides no other.
        found, _ = rows.readable(conn, "runs", sql, {**params, "limit": -1})
        total = len(found)
    if not found:
        return [], 0
    best, closeness, _ = found[0]
    if closeness == 2 or (closeness == 1 and (len(found) == 1 or found[1][1] == 0)):
        return [best], 1
    return [row[0] for row in found[:limit]], total


def _holder(conn: sqlite3.Connection, run: Run, *, inserting: bool) -> RunExistsError | None:
    """The error for a uniqueness rule ``run`` broke: its id is taken, or its branch is busy."""
    if inserting:
        row = rows.fetchone(
            conn, "runs", "SELECT id, feature_branch, repo_path FROM runs WHERE id = ?", (run.id,)
        )
        if row is not None:
            return RunExistsError(row[1], row[2], run.id, same_id=True)
    if run.feature_branch is None:  # the one-active-run rule is for runs on a branch
        return None
    row = rows.fetchone(
        conn,
        "runs",
        f"SELECT id FROM runs WHERE feature_branch = ? AND repo_path = ? AND {_ACTIVE}"
        " AND id <> ? ORDER BY id LIMIT 1",
        (run.feature_branch, run.repo_path, run.id),
    )
    return None if row is None else RunExistsError(run.feature_branch, run.repo_path, row[0])
