"""Owners of runs: plain functions over a sqlite3 connection, run on its thread.

Every read-write DB is an owner: a row in ``owners`` (one per open DB), with a
lease it renews while open. A run records the owner holding it
(``runs.owner_id``); deleting an owner's row (a clean close) hands its runs
back (``ON DELETE SET NULL``). An owner is alive while its lease runs and, on
this machine, while its process runs (see ``daemon_db._process``).

``claim`` is start-up: in one write transaction it takes every active run that
no live owner holds, counting a takeover from an owner that died holding the
run, and gives up (finishes ``failed``) a run whose takeover would exceed the
cap. SQLite's write lock makes concurrent claims by several processes see each
other's results, so the sets they take are disjoint.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import timedelta
from functools import partial
from itertools import groupby, pairwise
from operator import itemgetter
from typing import Any

from .. import _timestamps as timestamps
from .._errors import damage_in
from .._owner import Held, Owner, asked_once, process_alive
from .._process import Process, this_process
from .._records import (
    ACTIVE_RUN_STATUSES,
    FINISHED_RUN_STATUSES,
    ResumableRun,
    Run,
    RunStatus,
    loader,
)
from . import events, rows, runs, units
from .work import snapshot

__all__ = [
    "START_UP",
    "Held",
    "Owner",
    "alive",
    "claim",
    "create_run",
    "ensure",
    "expire",
    "hold",
    "holds",
    "owned_page",
    "ownership",
    "release",
    "release_run",
    "release_runs",
    "renew",
    "resumable",
    "update_run_status",
]

_ACTIVE = ", ".join(f"'{status.value}'" for status in sorted(ACTIVE_RUN_STATUSES))


def ensure(conn: sqlite3.Connection, *, owner: Owner) -> None:
    """Register ``owner``, or renew its lease: its row exists, and runs until now + lease.

    Also after a claimer found this owner dead (a hung loop) and removed its
    row: an owner that can still write is alive again, holding what it makes.
    """
    process = owner.process
    conn.execute(
        "INSERT INTO owners (id, name, host, machine, pid, started, lease_until)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET lease_until = excluded.lease_until",
        (
            owner.id,
            owner.name,
            process.host,
            process.machine,
            process.pid,
            process.started,
            owner.lease_until(),
        ),
    )


def renew(conn: sqlite3.Connection, *, owner: Owner) -> bool:
    """``ensure``, saying whether the lease had run out first (or a claim had removed it)."""
    now = timestamps.to_text(timestamps.now())
    lasted = conn.execute(
        "SELECT lease_until >= ? FROM owners WHERE id = ?", (now, owner.id)
    ).fetchone()
    ensure(conn, owner=owner)
    return lasted is None or lasted[0] != 1


def hold(conn: sqlite3.Connection, *, owner: Owner) -> str:
    """Make ``owner`` fit to hold a run it writes now; return its id.

    A claimer that found the owner dead (its lease over) removed its row, or
    will: ``ensure`` brings it back, alive again and holding what it writes.
    So does a lease with less than half of it left: the DB renews it every
    third of it (``_db._renew``), so one whose renewals come on time never
    writes here, and one whose renewals fail or come late (a busy file, a
    slowed loop) has it renewed by its writes before it runs out. Otherwise
    the row is only read: writing it on every create cost one more page in
    the WAL (of about ten) for nothing.
    """
    due = timestamps.to_text(timestamps.now() + timedelta(seconds=owner.lease / 2))
    lasts = conn.execute(
        "SELECT 1 FROM owners WHERE id = ? AND lease_until >= ?", (owner.id, due)
    ).fetchone()
    if lasts is None:
        ensure(conn, owner=owner)
    return owner.id


def create_run(conn: sqlite3.Connection, *, run: Run, owner: Owner) -> Run:
    """Insert ``run``, held by ``owner`` from the start (a finished one by nobody).

    The owner is registered or renewed either way (see ``hold``): a create is a
    write, and a DB found dead while its loop hung is alive again once it writes.
    """
    owner_id = hold(conn, owner=owner)
    finished = run.status in FINISHED_RUN_STATUSES
    return runs.create(conn, run=run, owner_id=None if finished else owner_id)


def update_run_status(
    conn: sqlite3.Connection,
    *,
    run_id: str,
    status: RunStatus,
    error: str | None,
    expected: Collection[RunStatus] | None,
    owner: Owner,
) -> Run:
    """``runs.update_status``; a finished run made active again is held by ``owner``."""
    return runs.update_status(
        conn,
        run_id=run_id,
        status=status,
        error=error,
        expected=expected,
        holder=partial(hold, owner=owner),
    )


def release(conn: sqlite3.Connection, *, owner: Owner) -> None:
    """Hand back every run ``owner`` holds, unfinished, and forget it (a clean close)."""
    conn.execute("DELETE FROM owners WHERE id = ?", (owner.id,))


def expire(conn: sqlite3.Connection, *, owner: Owner) -> None:
    """End ``owner``'s lease now, keeping its runs: it crashed, and a takeover counts."""
    conn.execute("UPDATE owners SET lease_until = ? WHERE id = ?", (_LONG_AGO, owner.id))


_LONG_AGO = "1970-01-01T00:00:00.000000Z"


def release_runs(conn: sqlite3.Connection, *, run_ids: Sequence[str], owner: Owner) -> None:
    """Hand back those of these runs that ``owner`` still holds."""
    conn.execute(
        "UPDATE runs SET owner_id = NULL"
        " WHERE id IN (SELECT value FROM json_each(?)) AND owner_id = ?",
        (json.dumps(list(run_ids)), owner.id),
    )


def release_run(conn: sqlite3.Connection, *, run_id: str) -> str | None:
    """Hand a run back, whoever holds it; return the name of the owner that held it."""
    row = conn.execute(
        f"SELECT {_NAME} FROM runs LEFT JOIN owners ON owners.id = runs.owner_id WHERE runs.id = ?",
        (run_id,),
    ).fetchone()
    if row is None:
        raise runs.not_found(run_id)
    conn.execute("UPDATE runs SET owner_id = NULL WHERE id = ?", (run_id,))
    name: str | None = _text(row[0])
    return name


def holds(conn: sqlite3.Connection, *, run_id: str, owner: Owner, lock: bool) -> bool:
    """Whether ``owner`` holds the run (not if there is none).

    ``lock`` is for PostgreSQL: a SQLite block holds the write lock from its
    ``BEGIN IMMEDIATE``, so no claim or release can come between.
    """
    found = conn.execute(
        "SELECT 1 FROM runs WHERE id = ? AND owner_id = ?", (run_id, owner.id)
    ).fetchone()
    return found is not None


def ownership(conn: sqlite3.Connection, *, run_ids: Sequence[str]) -> dict[str, Held]:
    """Who holds each of these runs, whether it is alive, and the runs' attempts."""
    now = timestamps.to_text(timestamps.now())
    is_alive = asked_once(partial(alive, now=now, here=this_process()))
    found = rows.fetchall(
        conn,
        "runs",
        f"SELECT runs.id, runs.attempts, {_HOLDER}, {_OWNER_COLUMNS}"
        " FROM runs LEFT JOIN owners ON owners.id = runs.owner_id"
        " WHERE runs.id IN (SELECT value FROM json_each(?))",
        (json.dumps(list(run_ids)),),
    )
    return {
        run_id: Held(
            _text(name),
            name is not None and is_alive(_text(owner_id), liveness),
            attempts,
            owner_id,
        )
        for run_id, attempts, owner_id, name, *liveness in found
    }


def owned_page(
    conn: sqlite3.Connection,
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
        f"{runs.QUALIFIED_COLUMNS}, runs.attempts, {_OWNER_COLUMNS}, {_HOLDER}"
        " FROM runs LEFT JOIN owners ON owners.id = runs.owner_id",
        statuses=statuses,
        feature_branch=feature_branch,
        repo_path=repo_path,
        after=after,
        newest_first=newest_first,
        limit=limit,
    )
    found = rows.fetchall(conn, "runs", sql, params)
    now = timestamps.to_text(timestamps.now())
    is_alive = asked_once(partial(alive, now=now, here=this_process()))
    page: list[tuple[Run, Held]] = []
    for row in found:
        attempts, name, *liveness, owner_id = row[12:]
        alive_now = name is not None and is_alive(_text(owner_id), liveness)
        held = Held(_text(name), alive_now, attempts)
        page.append((runs.from_row(row[:12]), held))
    return page


def alive(owner_id: str, row: Sequence[Any], *, now: str, here: Process) -> bool:
    """Whether the owner ``owner_id``, ``(machine, pid, started, lease_until)``, is alive.

    The row is read with ``_OWNER_COLUMNS``, where a lease that is not a
    stored timestamp (another tool's) is None, and so over: text compares by
    character, and ``'5'`` would outlast every date.
    """
    machine, pid, started, lease_until = _text(row[0]), row[1], _text(row[2]), row[3]
    if lease_until is None or lease_until < now:
        return False
    return process_alive(owner_id, machine, pid, started, here=here)


_NAME = "CAST(owners.name AS BLOB)"
_HOLDER = "CAST(runs.owner_id AS BLOB)"

_RESUMABLE = (
    f"SELECT {runs.QUALIFIED_COLUMNS}, runs.attempts,"
    # The largest sequence as it is (see _next), text as bytes: it may not be UTF-8.
    " (SELECT iif(typeof(last) = 'text', CAST(last AS BLOB), last)"
    " FROM (SELECT MAX(sequence) AS last FROM events WHERE run_id = runs.id)),"
    f" {_HOLDER} FROM runs"
)
_RUN, _ATTEMPTS, _LAST, _OWNER_ID = slice(0, 12), 12, 13, 14

_OWNER_COLUMNS = (
    f"{_NAME}, CAST(owners.machine AS BLOB),"
    " iif(typeof(owners.pid) = 'integer', owners.pid, NULL), CAST(owners.started AS BLOB),"
    " iif(typeof(owners.lease_until) = 'text'"
    f" AND length(CAST(owners.lease_until AS BLOB)) = {rows.TIMESTAMP_BYTES}"
    f" AND owners.lease_until GLOB '{rows.TIMESTAMP_FORM}', owners.lease_until, NULL)"
)
"""An owner's name and ``alive``'s columns as another tool may have left them:
text read as bytes (``_text``), a pid that is not an integer and a lease that
is not a stored timestamp as NULL (``GLOB`` stops at a NUL, so the length in
bytes is checked too). sqlite3 raises on text that is not UTF-8, and one such
row must not stop a start-up, a claim (which reads every owner to judge it) or
a listing. Owner ids (``_HOLDER``) are read as bytes too."""


def _text(value: Any) -> Any:
    """A value read as bytes, as text again (invalid bytes replaced; None stays None)."""
    return value.decode(errors="replace") if type(value) is bytes else value


_OWNERS = (
    f"SELECT CAST(owners.id AS BLOB), {_OWNER_COLUMNS} FROM owners"
    f" WHERE id IN (SELECT owner_id FROM runs WHERE status IN ({_ACTIVE}))"
)
"""The owners of active runs, read apart from the runs: a handful of rows,
where a join would repeat five columns on each of a thousand runs (2 ms of a
start-up). Only theirs: the dead may pile up until a claim removes them."""


def _unknown_statuses() -> str:
    """The runs whose status is none of the five: six range seeks on ``runs_by_status``.

    Another tool's ``'RUNNING'`` may mean a run that is active; start-up
    reports such a run rather than lose sight of it. The ranges lie between
    the five values (numbers sort before text, blobs after it); SQLite scans
    the whole index for ``NOT IN``, or for an ``OR`` of the ranges.
    """
    known = sorted(status.value for status in RunStatus)
    between = [
        f"status < '{known[0]}'",
        *(f"status > '{low}' AND status < '{high}'" for low, high in pairwise(known)),
        f"status > '{known[-1]}'",
    ]
    return " UNION ALL ".join(f"SELECT {runs.COLUMNS} FROM runs WHERE {where}" for where in between)


_UNKNOWN_STATUSES = _unknown_statuses()

_ACTIVE_RUNS = f"{_RESUMABLE} WHERE runs.status IN ({_ACTIVE})"
_ACTIVE_UNITS = (
    f"SELECT {units.COLUMNS} FROM units"
    f" WHERE run_id IN (SELECT id FROM runs WHERE status IN ({_ACTIVE}))"
    " ORDER BY run_id, unit_id"
)
START_UP = (_ACTIVE_RUNS, _ACTIVE_UNITS, _UNKNOWN_STATUSES, _OWNERS)
"""``resumable``'s statements: the active runs (in no order), their units, the
runs of a status none of the five (which may be active), and the owners."""


def resumable(conn: sqlite3.Connection) -> tuple[list[ResumableRun], list[rows.DamagedRow]]:
    """Every active run with its units, next sequence, owner and attempts: four statements.

    Also returns the rows that could not be read: a run or unit another tool
    broke, and every run whose status is none of the five.
    """
    is_alive = asked_once(
        partial(alive, now=timestamps.to_text(timestamps.now()), here=this_process())
    )
    heads: list[_Head] = []
    damaged: list[rows.DamagedRow] = []
    with snapshot(conn):  # _next and a read of text that is not UTF-8 read again, in one state
        run_rows, bad_runs = rows.readable(conn, "runs", _ACTIVE_RUNS)
        unit_rows, bad_units = rows.readable(conn, "units", _ACTIVE_UNITS)
        unknown, bad_unknown = rows.readable(conn, "runs", _UNKNOWN_STATUSES)
        owner_rows = conn.execute(_OWNERS).fetchall()  # its text is read as bytes
        damaged += [damage for _, damage in bad_runs + bad_unknown]
        names = {row[0]: _text(row[1]) for row in owner_rows}
        alive_by_id = {row[0]: is_alive(_text(row[0]), row[2:]) for row in owner_rows}
        run_rows.sort(key=_by_id)
        for row in run_rows:
            try:
                run, attempts = runs.from_row(row[_RUN]), _attempts(row)
                next_sequence = _next(conn, row)
            except rows.DamagedRow as exc:
                damaged.append(exc)
                continue
            owner_id = row[_OWNER_ID]  # None, or an owner whose row is gone (another tool)
            held = names.get(owner_id), alive_by_id.get(owner_id, False)
            heads.append((run, next_sequence, attempts, *held))
    found, unreadable = _with_units(heads, unit_rows, bad_units)
    return found, damaged + unreadable + damage_in(unknown, runs.from_row)


def _by_id(row: Sequence[Any]) -> str:
    """The key start-up sorts run rows by (see ``START_UP``).

    The status index gives each status's runs in id order; SQLite would merge
    the two in a temporary B-tree (a millisecond at a thousand runs), Python's
    sort merges two ordered runs in one linear pass. An id that is not text
    (a blob another tool wrote) sorts first rather than fail the comparison;
    ``_attempts`` then leaves that run out as damaged.
    """
    run_id = row[0]
    return run_id if type(run_id) is str else ""


def claim(
    conn: sqlite3.Connection, *, owner: Owner, max_attempts: int | None
) -> tuple[list[ResumableRun], list[Run], list[rows.DamagedRow]]:
    """Take every active run no live owner holds; give up those past ``max_attempts``.

    Runs in the caller's write transaction. Returns the runs taken (with their
    units and next sequence, as they stand after the claim), the runs given up,
    and the rows that could not be read (left as they are).
    """
    ensure(conn, owner=owner)
    now = timestamps.now()
    now_text = timestamps.to_text(now)
    # Dead owners by rowid: an id another tool wrote as a blob has no JSON form.
    found = conn.execute(
        f"SELECT rowid, CAST(id AS BLOB), {_OWNER_COLUMNS} FROM owners WHERE id <> ?", (owner.id,)
    )
    dead = json.dumps(
        [
            rowid
            for rowid, owner_id, _, *liveness in found
            if not alive(_text(owner_id), liveness, now=now_text, here=owner.process)
        ]
    )
    # An owner_id with no owner row (another tool deleted it) is held by nobody.
    run_rows, bad_runs = rows.readable(
        conn,
        "runs",
        f"{_RESUMABLE} WHERE runs.status IN ({_ACTIVE}) AND (runs.owner_id IS NULL"
        " OR runs.owner_id IN"
        " (SELECT id FROM owners WHERE rowid IN (SELECT value FROM json_each(?)))"
        " OR runs.owner_id NOT IN (SELECT id FROM owners))",
        (dead,),
    )
    run_rows.sort(key=_by_id)
    taken: list[_Head] = []
    given_up: list[Run] = []
    damaged = [damage for _, damage in bad_runs]
    for row in run_rows:
        try:
            run = runs.from_row(row[_RUN])
            attempts, next_sequence = _attempts(row), _next(conn, row)
        except rows.DamagedRow as exc:
            damaged.append(exc)
            continue
        taken_over = row[_OWNER_ID] is not None  # from an owner that died holding it
        attempt = min(attempts + taken_over, _LARGEST)  # the count stops at SQLite's largest
        if taken_over and max_attempts is not None and attempt > max_attempts:
            given_up.append(_give_up(conn, run, attempt, max_attempts, now))
        else:
            taken.append((run, next_sequence, attempt, owner.name, True))
    unit_rows, bad_units = rows.readable(
        conn,
        "units",
        f"SELECT {units.COLUMNS} FROM units WHERE run_id IN (SELECT value FROM json_each(?))"
        " ORDER BY run_id, unit_id",
        (json.dumps([head[0].id for head in taken]),),
    )
    resumed, unreadable = _with_units(taken, unit_rows, bad_units)
    unknown, bad_unknown = rows.readable(conn, "runs", _UNKNOWN_STATUSES)
    unreadable += [damage for _, damage in bad_unknown] + damage_in(unknown, runs.from_row)
    # Only the runs read whole are taken: one whose units are damaged stays where it is.
    # One statement for every run taken; each SET reads the row as it was, so
    # a run taken from a dead owner (owner_id still set) counts an attempt.
    conn.execute(
        f"UPDATE runs SET attempts = MIN(attempts + (owner_id IS NOT NULL), {_LARGEST}),"
        " owner_id = ? WHERE id IN (SELECT value FROM json_each(?))",
        (owner.id, json.dumps([item.run.id for item in resumed])),
    )
    conn.execute("DELETE FROM owners WHERE rowid IN (SELECT value FROM json_each(?))", (dead,))
    return resumed, given_up, damaged + unreadable


_LARGEST = 2**63 - 1


def _next(conn: sqlite3.Connection, row: Sequence[Any]) -> int:
    """The run's next sequence, from its largest (``_LAST``), unless another tool broke it.

    SQLite's ``MAX(sequence) + 1`` made the largest integer a float, and text
    (which sorts after every number) 1: a run resumed with either would fail
    its first append, so it is reported instead, naming the event.
    """
    last = row[_LAST]
    if last is None:
        return 1
    if type(last) is int and 0 < last < _LARGEST:
        return last + 1
    (event_id,) = conn.execute(
        "SELECT id FROM events WHERE run_id = ? ORDER BY sequence DESC LIMIT 1", (row[0],)
    ).fetchone()
    # Text as a read of the event shows it: bytes only if it is not UTF-8.
    value = rows.text(rows.decoded(last)) if type(last) is bytes else last
    reason = "leaves no next sequence" if last == _LARGEST else "is not an integer >= 1"
    if type(value) is bytes:
        reason = "is not UTF-8 text"
    raise rows.DamagedRow("events", event_id, "sequence", value, reason)


def _attempts(row: Sequence[Any]) -> int:
    """The row's attempts, unless another tool wrote what the store never does.

    Also checks the run's id, which listings do not (``check()`` does): at
    start-up, a blob id would be handed to the daemon as the run's id, and a
    claim would fail for every run writing it back.
    """
    if type(row[0]) is not str:
        raise rows.DamagedRow("runs", row[0], "id", row[0], "is not text")
    attempts = row[_ATTEMPTS]
    if type(attempts) is not int or attempts < 0:
        raise rows.DamagedRow("runs", row[0], "attempts", attempts, "is not an integer >= 0")
    return attempts


def _give_up(conn: sqlite3.Connection, run: Run, attempt: int, max_attempts: int, now: Any) -> Run:
    # The name that held it, as bytes: one another tool wrote (not UTF-8, a number) still names it.
    found = conn.execute(
        f"SELECT {_NAME} FROM runs JOIN owners ON owners.id = runs.owner_id WHERE runs.id = ?",
        (run.id,),
    )
    owner = next((_text(name) for (name,) in found), None)
    error = (
        f"abandoned: the owners that held it died {attempt} times, and max_attempts is"
        f" {max_attempts}"
    )
    conn.execute(
        "UPDATE runs SET status = 'failed', completed_at = ?, error = ?, owner_id = NULL,"
        " attempts = ? WHERE id = ?",
        (timestamps.to_text(now), error, attempt, run.id),
    )
    payload = json.dumps(
        {"attempts": attempt, "max_attempts": max_attempts, "owner": owner}, separators=(",", ":")
    )
    events.append(conn, run_id=run.id, event_type="run_abandoned", unit_id=None, payload=payload)
    return replace(run, status=RunStatus.FAILED, completed_at=now, error=error)


_Head = tuple[Run, int, int, str | None, bool]
"""A run read for start-up: the run, its next sequence, attempts, owner's name, owner alive."""


def _with_units(
    heads: Sequence[_Head], unit_rows: Sequence[Sequence[Any]], unreadable: list[rows.Unreadable]
) -> tuple[list[ResumableRun], list[rows.DamagedRow]]:
    """ResumableRuns of these runs, with their units from ``unit_rows`` (ordered by run).

    Start-up reads every active run at once (a thousand runs, four thousand
    units), so this is written for that: units grouped as they come, and
    records built without checks (the values were checked on the way in;
    ``from_row`` reports what another tool broke). A run with a damaged unit
    is left out, and the unit's row reported; so is one with an ``unreadable``
    unit (text that is not UTF-8).
    """
    units_of = {run_id: list(group) for run_id, group in groupby(unit_rows, itemgetter(1))}
    unreadable_of = {row[1]: damage for row, damage in unreadable}
    found: list[ResumableRun] = []
    damaged: list[rows.DamagedRow] = []
    for run, next_sequence, attempts, name, is_alive in heads:
        try:
            if run.id in unreadable_of:
                raise unreadable_of[run.id]
            unit_records = [units.from_row(unit) for unit in units_of.get(run.id, ())]
        except rows.DamagedRow as exc:
            damaged.append(exc)
            continue
        found.append(_resumable(run, unit_records, next_sequence, attempts, name, is_alive))
    return found, damaged


_resumable = loader(ResumableRun)
