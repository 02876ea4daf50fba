"""Owners of runs on PostgreSQL: leases on the database's clock, claims that skip locked rows.

As on SQLite (see ``daemon_db/_sqlite/owners.py``), every read-write DB is an
owner with a lease it renews while open, and a run records the owner holding
it. Across hosts, the lease is the test of life: ``lease_until`` is set and
compared with the server's ``now()``, so the hosts' clocks need not agree. An
owner on this machine is also dead as soon as its process is gone
(``daemon_db._process``). ``claim`` locks the runs it takes with ``FOR UPDATE
SKIP LOCKED``: daemons claiming at the same moment take disjoint sets, neither
waiting for the other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from functools import partial
from itertools import pairwise
from typing import Any

import asyncpg

from .. import _timestamps as timestamps
from .._errors import RunNotFoundError, damage_in
from .._owner import Held, Owner, asked_once, process_alive
from .._process import Process, this_process
from .._records import FINISHED_RUN_STATUSES, ResumableRun, Run, RunStatus, loader
from . import damage, events, runs, units

__all__ = [
    "claim",
    "create_run",
    "ensure",
    "holds",
    "owned_page",
    "ownership",
    "release",
    "release_run",
    "renew",
    "resumable",
]

_OWNER = "owners.name, owners.machine, owners.pid, owners.started, owners.lease_until >= now()"
_RESUMABLE = (
    f"SELECT runs.id, runs.feature_branch, runs.repo_path, runs.target_branch, runs.tasks_dir,"
    " runs.parallelism, runs.status, runs.daemon_version, runs.started_at, runs.completed_at,"
    " runs.error, runs.config_json, runs.attempts, runs.next_sequence,"
    f" {_OWNER}, runs.owner_id"
    " FROM runs LEFT JOIN owners ON owners.id = runs.owner_id"
)
_ATTEMPTS, _NEXT, _NAME, _LIVENESS, _OWNER_ID = 12, 13, 14, slice(15, 19), 19


async def ensure(conn: asyncpg.Connection, *, owner: Owner) -> None:
    """Register ``owner``, or renew its lease to the server's now + lease."""
    await conn.execute(_REGISTER, *_registration(owner))


async def renew(conn: asyncpg.Connection, *, owner: Owner) -> bool:
    """``ensure``, saying whether the lease had run out first (or a claim had removed it).

    The row is locked as the renewal's update would lock it (``NO KEY``): a
    claim deleting it waits, or is waited for, and a block that made a run
    this owner holds (its foreign key's lock) holds up neither.
    """
    lasted = await conn.fetchval(
        "SELECT lease_until >= now() FROM owners WHERE id = $1 FOR NO KEY UPDATE", owner.id
    )
    await conn.execute(_REGISTER, *_registration(owner))
    return lasted is not True


_REGISTER = (
    "INSERT INTO owners (id, name, host, machine, pid, started, lease_until)"
    " VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))"
    " ON CONFLICT (id) DO UPDATE SET lease_until = excluded.lease_until"
)
"""Register an owner or renew its lease (``ensure``); ``_hold`` is the form for writes."""


def _registration(owner: Owner) -> tuple[Any, ...]:
    process = owner.process
    return (
        owner.id,
        owner.name,
        process.host,
        process.machine,
        process.pid,
        process.started,
        owner.lease,
    )


def _hold(first: int) -> str:
    """Register an owner that is to hold a run it writes now (as ``hold`` on SQLite).

    A claimer that found the owner dead removed its row: it is registered
    again. Its lease is renewed only if less than half of it is left: the DB
    renews it every third. A healthy owner's row is neither written nor
    locked: an upsert locks the row it conflicts with even when its ``DO
    UPDATE ... WHERE`` is false, and a transaction block that created a run
    would hold the row, and so stall the DB's other creates, claims and lease
    renewal, until it ends.

    The lease is judged by ``clock_timestamp()``: in a block, ``now()`` is
    when the block began, and a lease that ran out since (renewals failing)
    would pass for fresh while a claimer deletes the row, and the run's
    insert then fail its foreign key.
    """
    id_, name, host, machine, pid, started, lease = (f"${first + i}" for i in range(7))
    half = f"make_interval(secs => {lease}::float8) / 2"
    return (
        "INSERT INTO owners (id, name, host, machine, pid, started, lease_until)"
        f" SELECT {id_}::text, {name}::text, {host}::text, {machine}::text, {pid}::bigint,"
        f" {started}::text, clock_timestamp() + make_interval(secs => {lease}::float8)"
        " WHERE NOT EXISTS"
        f" (SELECT FROM owners WHERE id = {id_} AND lease_until >= clock_timestamp() + {half})"
        " ON CONFLICT (id) DO UPDATE SET lease_until = excluded.lease_until"
        f" WHERE owners.lease_until < clock_timestamp() + {half}"
    )


_HOLD = f"WITH held AS ({_hold(14)})"
"""``_hold`` before a run's insert (``runs.create``), in the same statement."""


async def create_run(conn: asyncpg.Connection, *, run: Run, owner: Owner) -> Run:
    """Insert ``run``, held by ``owner`` from the start (a finished one by nobody).

    The owner is registered or renewed either way, in the same statement (see
    SQLite's).
    """
    return await runs.create(
        conn,
        run=run,
        owner_id=None if run.status in FINISHED_RUN_STATUSES else owner.id,
        before=_HOLD,
        before_args=_registration(owner),
    )


async def update_run_status(
    conn: asyncpg.Connection,
    *,
    run_id: str,
    status: RunStatus,
    error: str | None,
    expected: Collection[RunStatus] | None,
    owner: Owner,
) -> Run:
    """``runs.update_status``; a finished run made active again is held by ``owner``."""

    async def hold(conn: asyncpg.Connection) -> str:
        await conn.execute(_hold(1), *_registration(owner))
        return owner.id

    return await runs.update_status(
        conn, run_id=run_id, status=status, error=error, expected=expected, holder=hold
    )


LEASE_END_WAIT_MS = 5000
"""How long ending a lease at close() waits for a row another session has locked.

A session the network cut on our side may live on at the server, holding its
locks, until the server notices (TCP keepalive: hours by default). Past this
wait close() gives up: the lease then runs out by itself, and a claim takes
the runs (a crash's takeover counts an attempt; see ``_db.DB._release``).
"""


async def _waiting_at_most(conn: asyncpg.Connection, milliseconds: int) -> None:
    await conn.execute(f"SET LOCAL lock_timeout = {int(milliseconds)}")


async def expire(conn: asyncpg.Connection, *, owner: Owner) -> None:
    """End ``owner``'s lease now, keeping its runs: it crashed, and a takeover counts."""
    await _waiting_at_most(conn, LEASE_END_WAIT_MS)
    await conn.execute("UPDATE owners SET lease_until = '-infinity' WHERE id = $1", owner.id)


async def release_runs(conn: asyncpg.Connection, *, run_ids: Sequence[str], owner: Owner) -> None:
    """Hand back those of these runs that ``owner`` still holds."""
    await conn.execute(
        "UPDATE runs SET owner_id = NULL WHERE id = ANY($1::text[]) AND owner_id = $2",
        list(run_ids),
        owner.id,
    )


async def release(conn: asyncpg.Connection, *, owner: Owner) -> None:
    """Hand back every run ``owner`` holds, unfinished, and forget it (a clean close)."""
    await _waiting_at_most(conn, LEASE_END_WAIT_MS)
    await conn.execute("DELETE FROM owners WHERE id = $1", owner.id)


async def release_run(conn: asyncpg.Connection, *, run_id: str) -> str | None:
    """Hand a run back, whoever holds it; return the name of the owner that held it."""
    row = await conn.fetchrow(
        "SELECT owners.name FROM runs LEFT JOIN owners ON owners.id = runs.owner_id"
        " WHERE runs.id = $1 FOR UPDATE OF runs",
        run_id,
    )
    if row is None:
        raise RunNotFoundError(run_id)
    await conn.execute("UPDATE runs SET owner_id = NULL WHERE id = $1", run_id)
    name: str | None = row[0]
    return name


def _alive(owner_id: str, liveness: Sequence[Any], here: Process) -> bool:
    """Whether the owner ``owner_id``, ``(machine, pid, started, leased)``, is alive."""
    machine, pid, started, leased = liveness
    if not leased:
        return False
    return process_alive(owner_id, machine, pid, started, here=here)


async def holds(conn: asyncpg.Connection, *, run_id: str, owner: Owner, lock: bool) -> bool:
    """Whether ``owner`` holds the run (not if there is none).

    With ``lock`` (a read-write block), a run it holds stays locked until the
    block ends: a claim skips it (``SKIP LOCKED``), a release waits. ``NO KEY``:
    a write that only refers to the run (a unit or event's foreign key) does
    not wait; ``UPDATE`` rather than ``SHARE``: two blocks of the daemon that
    both ask and then change the run take turns instead of deadlocking.
    """
    found = await conn.fetchval(
        "SELECT 1 FROM runs WHERE id = $1 AND owner_id = $2"
        + (" FOR NO KEY UPDATE" if lock else ""),
        run_id,
        owner.id,
    )
    return found is not None


async def ownership(conn: asyncpg.Connection, *, run_ids: Sequence[str]) -> dict[str, Held]:
    """Who holds each of these runs, whether it is alive, and the runs' attempts."""
    is_alive = asked_once(partial(_alive, here=this_process()))
    found = await conn.fetch(
        f"SELECT runs.id, runs.attempts, {_OWNER}, runs.owner_id FROM runs"
        " LEFT JOIN owners ON owners.id = runs.owner_id WHERE runs.id = ANY($1::text[])",
        list(run_ids),
    )
    return {
        row[0]: Held(
            row[2], row[2] is not None and is_alive(row[7], tuple(row)[3:7]), row[1], row[7]
        )
        for row in found
    }


async def owned_page(
    conn: asyncpg.Connection,
    *,
    statuses: Collection[RunStatus] | None,
    feature_branch: str | None,
    repo_path: str | None,
    after: str | None,
    newest_first: bool,
    limit: int,
) -> list[tuple[Run, Held]]:
    """A page of ``runs.list_page``, each run with who holds it (one statement)."""
    sql, params = runs.page_query(
        f"{runs.QUALIFIED_COLUMNS}, runs.attempts, {_OWNER}, runs.owner_id"
        " FROM runs LEFT JOIN owners ON owners.id = runs.owner_id",
        statuses=statuses,
        feature_branch=feature_branch,
        repo_path=repo_path,
        after=after,
        newest_first=newest_first,
        limit=limit,
    )
    is_alive = asked_once(partial(_alive, here=this_process()))
    page: list[tuple[Run, Held]] = []
    for row in await conn.fetch(sql, *params):
        attempts, name, *liveness, owner_id = tuple(row)[12:]
        held = Held(name, name is not None and is_alive(owner_id, liveness), attempts)
        page.append((runs.from_row(row), held))
    return page


def _unknown_statuses() -> str:
    """The runs whose status is none of the five (a tool dropped the check): index ranges.

    Another tool's ``'RUNNING'`` may mean a run that is active; start-up
    reports such a run rather than lose sight of it. ``NOT IN`` would read
    every run; the ranges between the five values are a few seeks on
    ``runs_by_status``. (Every collation orders the five lowercase words
    alike.)
    """
    known = sorted(status.value for status in RunStatus)
    between = [
        f"status < '{known[0]}'",
        *(f"(status > '{low}' AND status < '{high}')" for low, high in pairwise(known)),
        f"status > '{known[-1]}'",
        "status IS NULL",
    ]
    return f"SELECT {runs.COLUMNS} FROM runs WHERE {' OR '.join(between)}"


_UNKNOWN_STATUSES = _unknown_statuses()


async def resumable(
    conn: asyncpg.Connection,
) -> tuple[list[ResumableRun], list[damage.DamagedRow]]:
    """Every active run with its units, next sequence, owner and attempts: three statements.

    Also returns the rows that could not be read: a run or unit another tool
    broke, and every run whose status is none of the five.
    """
    here = this_process()
    run_rows = await conn.fetch(
        f"{_RESUMABLE} WHERE runs.status IN ('pending', 'running') ORDER BY runs.id COLLATE \"C\""
    )
    unit_rows = await conn.fetch(
        f"SELECT {units.COLUMNS} FROM units WHERE run_id = ANY($1::text[])"
        ' ORDER BY run_id, unit_id COLLATE "C"',
        [row[0] for row in run_rows],
    )

    is_alive = asked_once(partial(_alive, here=here))

    def ownership(row: Sequence[Any]) -> tuple[str | None, bool]:
        held = row[_OWNER_ID] is not None
        return row[_NAME], held and is_alive(row[_OWNER_ID], tuple(row)[_LIVENESS])

    found, damaged = _assemble(run_rows, unit_rows, ownership)
    return found, damaged + damage_in(await conn.fetch(_UNKNOWN_STATUSES), runs.from_row)


async def claim(
    conn: asyncpg.Connection, *, owner: Owner, max_attempts: int | None
) -> tuple[list[ResumableRun], list[Run], list[damage.DamagedRow]]:
    """Take every active run no live owner holds; give up those past ``max_attempts``."""
    await conn.execute(_hold(1), *_registration(owner))
    # Each dead owner with the lease it was judged by (see the DELETE below), as
    # text: no datetime holds a lease another tool set BC, and -infinity and
    # year 1 come back as the same one.
    judged = [
        (row[0], row[5])
        for row in await conn.fetch(
            "SELECT id, machine, pid, started, lease_until >= now(), lease_until::text FROM owners"
            " WHERE id <> $1",
            owner.id,
        )
        if not _alive(row[0], tuple(row)[1:5], owner.process)
    ]
    dead = [owner_id for owner_id, _ in judged]
    # SKIP LOCKED: a run another claimer is taking right now is its, not ours.
    run_rows = await conn.fetch(
        f"{_RESUMABLE} WHERE runs.status IN ('pending', 'running')"
        " AND (runs.owner_id IS NULL OR runs.owner_id = ANY($1::text[])"
        # No owner row (a tool that wrote with session_replication_role = replica).
        " OR NOT EXISTS (SELECT FROM owners WHERE owners.id = runs.owner_id))"
        ' ORDER BY runs.id COLLATE "C" FOR UPDATE OF runs SKIP LOCKED',
        dead,
    )
    taken: list[Any] = []
    given_up: list[Run] = []
    damaged: list[damage.DamagedRow] = []
    for row in run_rows:
        try:
            run = runs.from_row(row)
        except damage.DamagedRow as found:
            damaged.append(found)  # not taken: listed apart, as resumable_runs() does
            continue
        taken_over = row[_OWNER_ID] is not None
        attempt = min(row[_ATTEMPTS] + taken_over, _LARGEST)  # the count stops at int4's largest
        if taken_over and max_attempts is not None and attempt > max_attempts:
            given_up.append(await _give_up(conn, run, attempt, max_attempts, row[_NAME]))
        else:
            taken.append((*tuple(row)[:12], attempt, row[_NEXT]))
    unit_rows = await conn.fetch(
        f"SELECT {units.COLUMNS} FROM units WHERE run_id = ANY($1::text[])"
        ' ORDER BY run_id, unit_id COLLATE "C"',
        [row[0] for row in taken],
    )
    resumed, unreadable = _assemble(taken, unit_rows, lambda row: (owner.name, True))
    unreadable += damage_in(await conn.fetch(_UNKNOWN_STATUSES), runs.from_row)
    # Only the runs read whole are taken: one whose units are damaged stays where it is.
    await conn.execute(
        "UPDATE runs SET owner_id = $1, attempts = taken.attempt"
        " FROM unnest($2::text[], $3::integer[]) AS taken (id, attempt) WHERE runs.id = taken.id",
        owner.id,
        [item.run.id for item in resumed],
        [item.attempt for item in resumed],
    )
    # An owner found dead is forgotten; one still holding a run another claimer
    # locked keeps its row until that claimer is done (its runs point to it).
    # So does one that renewed its lease since (its lease is not the one judged)
    # and one whose row another session has locked: a hung loop that woke, in
    # a block that made a run (its foreign key's lock) or renews. Waiting for
    # such a block deadlocked with it when it then asked holds() of a run this
    # claim had locked; a row skipped now is forgotten by a later claim.
    forgotten = await conn.fetch(
        "SELECT owners.id FROM owners"
        " JOIN unnest($1::text[], $2::text[]) AS judged (id, lease) ON owners.id = judged.id"
        " WHERE owners.lease_until::text = judged.lease FOR UPDATE OF owners SKIP LOCKED",
        dead,
        [lease for _, lease in judged],
    )
    if forgotten:
        # A statement of its own, so that NOT EXISTS reads a snapshot taken once
        # the rows are locked: a run made by a block that committed after the
        # lock's statement began but before it reached the row is seen (one
        # statement's snapshot missed it, and the delete handed that run back),
        # and none can be made now without this lock.
        await conn.execute(
            "DELETE FROM owners WHERE id = ANY($1::text[])"
            " AND NOT EXISTS (SELECT 1 FROM runs WHERE runs.owner_id = owners.id)",
            [row[0] for row in forgotten],
        )
    return resumed, given_up, damaged + unreadable


_LARGEST = 2**31 - 1


async def _give_up(
    conn: asyncpg.Connection, run: Run, attempt: int, max_attempts: int, owner: str | None
) -> Run:
    error = (
        f"abandoned: the owners that held it died {attempt} times, and max_attempts is"
        f" {max_attempts}"
    )
    now = timestamps.now()
    await conn.execute(
        "UPDATE runs SET status = 'failed', completed_at = $1, error = $2, owner_id = NULL,"
        " attempts = $3 WHERE id = $4",
        now,
        error,
        attempt,
        run.id,
    )
    payload = json.dumps(
        {"attempts": attempt, "max_attempts": max_attempts, "owner": owner}, separators=(",", ":")
    )
    await events.append(
        conn, run_id=run.id, event_type="run_abandoned", unit_id=None, payload=payload
    )
    return replace(run, status=RunStatus.FAILED, completed_at=now, error=error)


def _assemble(
    run_rows: Sequence[Any],
    unit_rows: Sequence[Any],
    ownership: Callable[[Sequence[Any]], tuple[str | None, bool]],
) -> tuple[list[ResumableRun], list[damage.DamagedRow]]:
    """The runs as ResumableRuns; one with a damaged row is left out and listed apart."""
    units_of: dict[str, list[Any]] = {}
    for row in unit_rows:
        units_of.setdefault(row[1], []).append(row)
    found: list[ResumableRun] = []
    damaged: list[damage.DamagedRow] = []
    for row in run_rows:
        name, is_alive = ownership(row)
        try:
            run = runs.from_row(row)
            its_units = [units.from_row(unit) for unit in units_of.get(row[0], ())]
        except damage.DamagedRow as exc:
            damaged.append(exc)
            continue
        found.append(_resumable(run, its_units, row[_NEXT], row[_ATTEMPTS], name, is_alive))
    return found, damaged


_resumable = loader(ResumableRun)  # read back: checked on the way in, or above
