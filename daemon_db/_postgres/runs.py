"""Run queries: coroutine functions of an asyncpg connection, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import replace
from typing import Any

import asyncpg

from .. import _timestamps as timestamps
from .._errors import RunExistsError, RunNotFoundError, StatusConflictError
from .._records import ACTIVE_RUN_STATUSES, FINISHED_RUN_STATUSES, Run, RunStatus, loader
from . import damage, events
from .damage import aware
from .errors import too_long_for_an_index

__all__ = [
    "COLUMNS",
    "QUALIFIED_COLUMNS",
    "complete",
    "create",
    "delete",
    "find_ids",
    "from_row",
    "get",
    "get_by_branch",
    "list_page",
    "page_query",
    "update_status",
]

COLUMNS = (
    "id, feature_branch, repo_path, target_branch, tasks_dir, parallelism, status,"
    " daemon_version, started_at, completed_at, error, config_json"
)
QUALIFIED_COLUMNS = ", ".join(f"runs.{name.strip()}" for name in COLUMNS.split(","))
"""The columns of a Run, for a query that joins another table."""
_ACTIVE = "status IN ('pending', 'running')"
_load = loader(Run)
_STATUSES = {status.value: status for status in RunStatus}
_NAMES = COLUMNS.replace(" ", "").split(",")
_CHECKS = {
    5: damage.optional_positive_int,
    6: damage.member(_STATUSES, "a run status"),
    8: damage.timestamp,
    9: damage.timestamp,
}


def from_row(row: Any) -> Run:
    """A Run from the first twelve columns of ``row`` (laid out as COLUMNS).

    The schema's types and checks keep out most damage; what gets through
    (see damage.py) raises DamagedRow.
    """
    try:
        if row[5] is not None and row[5] < 1:  # a tool dropped the check: no Run holds it
            raise KeyError
        return _load(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            _STATUSES[row[6]],
            row[7],
            aware(row[8]),
            aware(row[9]),
            row[10],
            row[11],
        )
    except (KeyError, AttributeError) as exc:
        raise damage.damaged("runs", _NAMES, row, _CHECKS) from exc


async def create(
    conn: asyncpg.Connection,
    *,
    run: Run,
    owner_id: str | None,
    before: str = "",
    before_args: Sequence[Any] = (),
) -> Run:
    """Insert ``run``, held by ``owner_id``; return it as stored (with its timestamps).

    ``before`` is a ``WITH`` clause run in the same statement, its parameters
    (``before_args``) numbered from ``$14``: the owner's lease, without a round
    trip of its own.
    """
    started_at, completed_at = timestamps.on_create(
        run.started_at,
        run.completed_at,
        running=run.status is RunStatus.RUNNING,
        finished=run.status in FINISHED_RUN_STATUSES,
    )
    if (started_at, completed_at) != (run.started_at, run.completed_at):
        run = replace(run, started_at=started_at, completed_at=completed_at)
    values = (
        run.id,
        run.feature_branch,
        run.repo_path,
        run.target_branch,
        run.tasks_dir,
        run.parallelism,
        run.status.value,
        run.daemon_version,
        run.started_at,
        run.completed_at,
        run.error,
        run.config_json,
        owner_id,
    )
    insert = (
        f"INSERT INTO runs ({COLUMNS}, owner_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    )
    # DO NOTHING rather than a savepoint to catch the violation in: the
    # transaction stays usable to look the conflict up, two round trips fewer.
    try:
        inserted = await conn.fetchval(
            f"{before} {insert} ON CONFLICT DO NOTHING RETURNING true", *values, *before_args
        )
    except asyncpg.ProgramLimitExceededError as exc:
        names = {"Run.id": run.id, "Run.feature_branch": run.feature_branch}
        raise too_long_for_an_index(exc, {**names, "Run.repo_path": run.repo_path}) from None
    if inserted:
        return run
    conflict = await _holder(conn, run, inserting=True)
    if conflict is not None:
        raise conflict
    # The row it met is gone already, or a rule we do not know was broken: the
    # plain insert stores the run or raises that rule's own error.
    await conn.execute(f"{before} {insert}", *values, *before_args)
    return run


async def get(conn: asyncpg.Connection, *, run_id: str, lock: bool = False) -> Run | None:
    """The run with this id, or None; with ``lock``, its row is locked for the transaction."""
    row = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM runs WHERE id = $1" + (" FOR UPDATE" if lock else ""), run_id
    )
    return None if row is None else from_row(row)


async def get_by_branch(
    conn: asyncpg.Connection, *, feature_branch: str, repo_path: str
) -> Run | None:
    """The active run of this branch and repo, else the newest one, else None."""
    row = await conn.fetchrow(
        f"SELECT {COLUMNS} FROM runs WHERE feature_branch = $1 AND repo_path = $2"
        f" ORDER BY {_ACTIVE} DESC, id DESC LIMIT 1",
        feature_branch,
        repo_path,
    )
    return None if row is None else from_row(row)


async def update_status(
    conn: asyncpg.Connection,
    *,
    run_id: str,
    status: RunStatus,
    error: str | None,
    expected: Collection[RunStatus] | None = None,
    holder: Callable[[asyncpg.Connection], Awaitable[str]] | None = None,
) -> Run:
    """Set the status and error of a run, with the timestamps the change implies.

    The row is read ``FOR UPDATE``: the compare of ``expected`` and the write
    see the same status, whatever other hosts do meanwhile. A finished run is
    held by nobody; one made active again is held by ``holder`` (which
    registers the caller's owner and gives its id), as a run created active is.
    """
    run = await get(conn, run_id=run_id, lock=True)
    if run is None:
        raise RunNotFoundError(run_id)
    if expected is not None and run.status not in expected:
        raise StatusConflictError(run_id, run.status, expected)
    started_at, completed_at = run.started_at, run.completed_at
    if status is not run.status:
        started_at, completed_at = timestamps.on_change(
            started_at,
            running=status is RunStatus.RUNNING,
            finished=status in FINISHED_RUN_STATUSES,
        )
    updated = replace(
        run, status=status, error=error, started_at=started_at, completed_at=completed_at
    )
    finished = status in FINISHED_RUN_STATUSES
    reopened = run.status in FINISHED_RUN_STATUSES and not finished
    try:
        async with conn.transaction():
            await conn.execute(
                "UPDATE runs SET status = $1, error = $2, started_at = $3, completed_at = $4"
                + (", owner_id = NULL" if finished else "")
                + " WHERE id = $5",
                status.value,
                error,
                started_at,
                completed_at,
                run_id,
            )
            if reopened and holder is not None:
                await conn.execute(
                    "UPDATE runs SET owner_id = $1, attempts = 0 WHERE id = $2",
                    await holder(conn),
                    run_id,
                )
            await events.announce(conn, run_id)  # a follower ends when its run finishes
    except asyncpg.UniqueViolationError:
        conflict = await _holder(conn, updated, inserting=False)
        if conflict is None:
            raise
        raise conflict from None
    return updated


async def complete(
    conn: asyncpg.Connection,
    *,
    run_id: str,
    status: RunStatus,
    error: str | None,
    payload: str | None,
) -> Run:
    """Finish an active run and log its ``run_completed`` event, together (see SQLite's)."""
    run = await get(conn, run_id=run_id, lock=True)
    if run is None:
        raise RunNotFoundError(run_id)
    if run.status in FINISHED_RUN_STATUSES:
        if run.status is status:
            return run
        raise StatusConflictError(run_id, run.status, ACTIVE_RUN_STATUSES)
    run = await update_status(conn, run_id=run_id, status=status, error=error)
    await events.append(
        conn, run_id=run_id, event_type="run_completed", unit_id=None, payload=payload
    )
    return run


async def delete(conn: asyncpg.Connection, *, run_id: str) -> bool:
    """Delete a run; its units and events go with it (ON DELETE CASCADE)."""
    deleted = await conn.fetchval("DELETE FROM runs WHERE id = $1 RETURNING TRUE", run_id)
    if deleted is not None:
        await events.announce(conn, run_id)  # its followers end
    return deleted is not None


async def list_page(
    conn: asyncpg.Connection,
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
        f"{COLUMNS} FROM runs",
        statuses=statuses,
        feature_branch=feature_branch,
        repo_path=repo_path,
        after=after,
        newest_first=newest_first,
        limit=limit,
    )
    return [from_row(row) for row in await conn.fetch(sql, *params)]


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

    def param(value: object) -> str:
        params.append(value)
        return f"${len(params)}"

    if statuses is not None:
        conditions.append(f"runs.status = ANY({param([s.value for s in statuses])}::text[])")
    if feature_branch is not None:
        conditions.append(f"runs.feature_branch = {param(feature_branch)}")
    if repo_path is not None:
        conditions.append(f"runs.repo_path = {param(repo_path)}")
    if after is not None:
        # COLLATE "C": ids compare byte by byte, as SQLite's do, whatever the database's collation.
        op = "<" if newest_first else ">"
        conditions.append(f'runs.id COLLATE "C" {op} {param(after)}')
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    order = "DESC" if newest_first else "ASC"
    sql = f'SELECT {selected} {where} ORDER BY runs.id COLLATE "C" {order} LIMIT {param(limit)}'
    return sql, params


async def find_ids(conn: asyncpg.Connection, *, typed: str, limit: int) -> tuple[list[str], int]:
    """Run ids as people type them: the id, or a case-insensitive prefix or suffix of it."""
    pattern = typed.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    found = await conn.fetch(
        "SELECT id, (id = $1)::int + (id ILIKE $2)::int AS closeness, COUNT(*) OVER ()"
        " FROM runs WHERE id ILIKE $3 OR id ILIKE $4"
        ' ORDER BY closeness DESC, id COLLATE "C" LIMIT $5',
        typed,
        pattern,
        f"{pattern}%",
        f"%{pattern}",
        max(limit, 2),
    )
    if not found:
        return [], 0
    best, closeness, total = found[0]
    if closeness == 2 or (closeness == 1 and (len(found) == 1 or found[1][1] == 0)):
        return [best], 1
    return [row[0] for row in found[:limit]], int(total)


async def _holder(conn: asyncpg.Connection, run: Run, *, inserting: bool) -> RunExistsError | None:
    """The error for a uniqueness rule ``run`` broke: its id is taken, or its branch is busy."""
    if inserting:
        row = await conn.fetchrow(
            "SELECT feature_branch, repo_path FROM runs WHERE id = $1", run.id
        )
        if row is not None:
            return RunExistsError(row[0], row[1], run.id, same_id=True)
    if run.feature_branch is None:
        return None
    holder = await conn.fetchval(
        f"SELECT id FROM runs WHERE feature_branch = $1 AND repo_path = $2 AND {_ACTIVE}"
        ' AND id <> $3 ORDER BY id COLLATE "C" LIMIT 1',
        run.feature_branch,
        run.repo_path,
        run.id,
    )
    return None if holder is None else RunExistsError(run.feature_branch, run.repo_path, holder)
