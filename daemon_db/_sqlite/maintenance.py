"""Looking after the file: statistics, checks, pruning history, backups.

Plain functions over a sqlite3 connection, run on its thread like the queries
in runs.py, units.py and events.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import sqlite3
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .._errors import DatabaseError, show, translate
from .._process import Process, is_running, this_process
from .._records import ACTIVE_RUN_STATUSES, FINISHED_RUN_STATUSES, Run, RunStatus, Stats, UnitStatus
from . import rows, runs
from .checkpointer import RESTART_WAIT_SECONDS
from .schema import APPLICATION_ID, MEMORY, SCHEMA_VERSION, objects, schema_problems, uri, wal_path
from .work import snapshot

__all__ = [
    "backup",
    "backup_to",
    "check",
    "delete_finished",
    "finished_before",
    "stats",
    "vacuum",
]

_FINISHED = ", ".join(f"'{status.value}'" for status in sorted(FINISHED_RUN_STATUSES))
_ACTIVE = ", ".join(f"'{status.value}'" for status in sorted(ACTIVE_RUN_STATUSES))


def stats(conn: sqlite3.Connection, *, path: str) -> Stats:
    """Counts of runs and units by status, events, file sizes: from one snapshot.

    The counts are the ones the triggers of the ``counts`` table keep (see
    migrations.py): a few rows read, however large the file.
    """
    with snapshot(conn):
        counts = dict(conn.execute(_COUNTS))
        (version,) = conn.execute("PRAGMA user_version").fetchone()
    return Stats(
        path=path,
        schema_version=version,
        runs={status.value: counts.get(f"runs:{status.value}", 0) for status in RunStatus},
        units={status.value: counts.get(f"units:{status.value}", 0) for status in UnitStatus},
        events=counts.get("events", 0),
        file_bytes=_size(path),
        wal_bytes=0 if path == MEMORY else _size(wal_path(path)),
    )


_COUNTS = "SELECT name, n FROM counts WHERE name IN ({})".format(
    ", ".join(
        repr(name)
        for name in (
            "events",
            *(f"runs:{status.value}" for status in RunStatus),
            *(f"units:{status.value}" for status in UnitStatus),
        )
    )
)
"""The counts ``stats()`` reports, and only those: a status another tool wrote
has a row of its own (the triggers count every status), whose name may not
even be UTF-8, which sqlite3 would refuse to read."""


def check(conn: sqlite3.Connection, *, quick: bool = False) -> list[str]:
    """Everything wrong with the database, one line each: [] when all is well.

    ``quick`` runs SQLite's ``quick_check`` (pages and records, without
    checking that every index matches its table) instead of ``integrity_check``;
    the store's own checks run either way.
    """
    factory = conn.text_factory
    # Another tool's text may not be UTF-8, which sqlite3 refuses to read:
    # the report shows it (invalid bytes replaced) rather than fail on it.
    conn.text_factory = _replacing
    # It stays registered (sqlite3 cannot remove a function); only our SQL calls
    # it, since trusted_schema=OFF keeps another tool's triggers and views from it.
    conn.create_function(_UTF8, -1, _is_utf8, deterministic=True)
    try:
        with snapshot(conn):
            return _check(conn, quick=quick)
    finally:
        conn.text_factory = factory


def _replacing(data: bytes) -> str:
    return data.decode(errors="replace")


_UTF8 = "daemon_db_is_utf8"
"""check()'s SQL function: whether its blobs (None: no text) are UTF-8.

SQLite stores text as it is given, and has no function that tells."""


def _is_utf8(*data: bytes | None) -> bool:
    try:
        for each in data:
            if each is not None:
                each.decode()
    except UnicodeDecodeError:
        return False
    return True


def _check(conn: sqlite3.Connection, *, quick: bool) -> list[str]:
    problems: list[str] = []
    pragma = "quick_check" if quick else "integrity_check"
    for (line,) in conn.execute(f"PRAGMA {pragma}"):
        if line != "ok":
            problems.append(f"integrity: {line}")
    for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check"):
        problems.append(f"foreign key: {table} row {rowid} refers to a missing {parent} row")
    (application_id,) = conn.execute("PRAGMA application_id").fetchone()
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if (application_id, version) != (APPLICATION_ID, SCHEMA_VERSION):
        problems.append(
            f"schema: application_id {application_id:#x}, version {version}; expected"
            f" {APPLICATION_ID:#x}, version {SCHEMA_VERSION}"
        )
    # Another version's objects differ by design: its version is the problem.
    changed: list[str] = []
    if version == SCHEMA_VERSION:
        changed = schema_problems(objects(conn))
        problems += changed
    if any(line.startswith("schema: table") and line.endswith("missing") for line in changed):
        problems.append("the store's own checks need every table: not run")
        return problems
    # As the index has it: a run without a branch is nobody's rival.
    for branch, repo, count, first, last in conn.execute(
        f"SELECT feature_branch, repo_path, COUNT(*), MIN(id), MAX(id) FROM runs"
        f" WHERE status IN ({_ACTIVE}) AND feature_branch IS NOT NULL"
        " GROUP BY feature_branch, repo_path HAVING COUNT(*) > 1"
    ):
        problems.append(
            f"one active run: {count} active runs on {show(branch)} in {show(repo)}"
            f" ({first} ... {last})"
        )
    for run_id, count, highest in conn.execute(
        "SELECT run_id, COUNT(*), MAX(sequence) FROM events GROUP BY run_id"
        " HAVING COUNT(*) <> MAX(sequence) OR MIN(sequence) <> 1"
    ):
        problems.append(f"sequences: run {run_id} has {count} events up to sequence {highest}")
    problems += _damaged_values(conn, quick=quick)
    problems += _wrong_counts(conn)
    return problems


def _wrong_counts(conn: sqlite3.Connection) -> list[str]:
    """Kept counts (what stats() reports) that differ from the rows counted."""
    kept = {name: n for name, n in conn.execute("SELECT name, n FROM counts") if n != 0}
    counted: dict[str, int] = {}
    for table in ("runs", "units"):
        # Named as the triggers name them: a blob status another tool wrote,
        # b'running', is counted with 'running' (|| reads it as text).
        for name, n in conn.execute(
            f"SELECT '{table}:' || status, COUNT(*) FROM {table} GROUP BY status"
        ):
            counted[name] = counted.get(name, 0) + n
    counted["events"] = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    return [
        f"counts: {name} is kept as {kept.get(name, 0)} but {counted.get(name, 0)} rows are stored"
        for name in sorted(kept.keys() | {k for k, n in counted.items() if n})
        if kept.get(name, 0) != counted.get(name, 0)
    ]


def _no_moment(column: str) -> str:
    """Text of the timestamp's form that names no moment: reading it back fails.

    The form already bounds minutes and seconds; this finds year 0, month 00
    or 13 to 19, day 00 or past its month's end (February 29 of a year that
    is not a leap year), hour 24 to 29. The month's end is worked out only for
    days past the 28th, about a tenth of rows (the specs give what it costs).
    """
    year, month, day = (f"substr({column}, {at}, {n})" for at, n in ((1, 4), (6, 2), (9, 2)))
    leap = f"{year} % 4 = 0 AND ({year} % 100 <> 0 OR {year} % 400 = 0)"
    last = (
        f"CASE {month} WHEN '02' THEN CASE WHEN {leap} THEN '29' ELSE '28' END"
        " WHEN '04' THEN '30' WHEN '06' THEN '30' WHEN '09' THEN '30' WHEN '11' THEN '30'"
        " ELSE '31' END"
    )
    return (
        f"{column} < '0001' OR {month} NOT BETWEEN '01' AND '12'"
        f" OR {column} GLOB '???????????2[4-9]*'"
        f" OR {day} NOT BETWEEN '01' AND '28' AND ({day} = '00' OR {day} > {last})"
    )


def _text(column: str, *, optional: bool = False, name: bool = False) -> str:
    bad = f"typeof({column}) <> 'text'" + (f" OR trim({column}) = ''" if name else "")
    return f"{column} IS NOT NULL AND ({bad})" if optional else bad


def _timestamp(column: str, *, optional: bool = True) -> str:
    bad = (
        f"typeof({column}) <> 'text' OR {column} NOT GLOB '{rows.TIMESTAMP_FORM}'"
        # GLOB stops at a NUL; Python's fromisoformat does too, reading the text before it.
        f" OR length(CAST({column} AS BLOB)) <> {rows.TIMESTAMP_BYTES}"
        f" OR {_no_moment(column)}"
    )
    return f"{column} IS NOT NULL AND ({bad})" if optional else f"{column} IS NULL OR {bad}"


def _one_of(column: str, values: Iterable[str]) -> str:
    return f"{column} NOT IN ({', '.join(repr(value) for value in values)})"


_VALUES = {
    "runs": {
        "id": _text("id", name=True),
        "feature_branch": _text("feature_branch", optional=True, name=True),
        "repo_path": _text("repo_path", name=True),
        "target_branch": _text("target_branch", name=True),
        "tasks_dir": _text("tasks_dir", name=True),
        "parallelism": "parallelism IS NOT NULL"
        " AND (typeof(parallelism) <> 'integer' OR parallelism < 1)",
        "attempts": "typeof(attempts) <> 'integer' OR attempts < 0",
        "status": _one_of("status", (status.value for status in RunStatus)),
        "daemon_version": _text("daemon_version"),
        "started_at": _timestamp("started_at"),
        "completed_at": _timestamp("completed_at"),
        "error": _text("error", optional=True),
        "config_json": "typeof(config_json) <> 'text' OR NOT json_valid(config_json)"
        " OR json_type(config_json) <> 'object'",
    },
    "units": {
        "id": _text("id", name=True),
        "unit_id": _text("unit_id", name=True),
        "status": _one_of("status", (status.value for status in UnitStatus)),
        "branch": _text("branch", optional=True, name=True),
        "worktree_path": _text("worktree_path", optional=True, name=True),
        "started_at": _timestamp("started_at"),
        "completed_at": _timestamp("completed_at"),
        "error": _text("error", optional=True),
    },
    # A lease_until that is not a timestamp compares as text, so another
    # tool's 'never' would keep an owner alive for good.
    "owners": {
        "id": _text("id", name=True),
        "name": _text("name", name=True),
        "machine": _text("machine", name=True),
        "pid": "typeof(pid) <> 'integer' OR pid < 1",
        "started": _text("started", optional=True),
        # GLOB stops at a NUL; claims check the length too, and refuse such a lease.
        # Nor is a lease longer than a year (MAX_LEASE, and a day for clocks) ours:
        # another tool's '9999-...' kept an owner alive for good, and check() was quiet.
        "lease_until": _timestamp("lease_until", optional=False)
        + f" OR length(CAST(lease_until AS BLOB)) <> {rows.TIMESTAMP_BYTES}"
        + " OR lease_until > strftime('%Y-%m-%dT%H:%M:%SZ', 'now', '+366 days')",
    },
    "events": {
        # A sequence of 2.5 in place of 2 passes the gap check's count and maximum.
        "sequence": "typeof(sequence) <> 'integer' OR sequence < 1",
        "event_type": _text("event_type", name=True),
        "unit_id": _text("unit_id", optional=True),
        "payload_json": "payload_json IS NOT NULL AND (typeof(payload_json) <> 'text'"
        " OR NOT json_valid(payload_json))",
        "created_at": _timestamp("created_at", optional=False),
    },
}
"""For each table, each column's rule broken: the values a daemon_db never writes."""

_READ_AS_TEXT = ("runs", "units", "events")
"""The tables whose text a read decodes: text that is not UTF-8 there fails it.
Owners are read as bytes (owners.py), so their text cannot."""

_DAMAGED_SHOWN = 20


def _not_utf8(*columns: str) -> str:
    """Whether any of the row's ``columns`` holds text that is not UTF-8: one call a row."""
    text = ", ".join(
        f"iif(typeof({column}) = 'text', CAST({column} AS BLOB), NULL)" for column in columns
    )
    return f"NOT {_UTF8}({text})"


def _damaged_values(conn: sqlite3.Connection, *, quick: bool) -> list[str]:
    """Stored values that break the store's rules (another tool wrote them): one scan a table.

    The scan only tests each row against the rules (an OR of them, which stops
    at the first broken one, and builds nothing for a healthy row); which
    columns are broken is worked out for the few rows found. Unless ``quick``,
    it also hands each row's text to Python, to find text that is not UTF-8.
    """
    problems: list[str] = []
    for table, rules in _VALUES.items():
        utf8 = not quick and table in _READ_AS_TEXT
        anything = " OR ".join(f"({condition})" for condition in rules.values())
        if utf8:
            anything += f" OR {_not_utf8(*rules)}"
        # By rowid: an id shown with its invalid bytes replaced finds no row. Text
        # ids come as bytes, to be shown as a DamagedRecordError shows them.
        found = conn.execute(
            "SELECT rowid, iif(typeof(id) = 'text', CAST(id AS BLOB), id), typeof(id) = 'text',"
            f" count(*) OVER () FROM {table} WHERE {anything} LIMIT {_DAMAGED_SHOWN}"
        ).fetchall()
        broken = " || ".join(
            (f"CASE WHEN {_not_utf8(column)} THEN '{column}:utf8 '" if utf8 else "CASE")
            + f" WHEN {condition} THEN '{column} ' ELSE '' END"
            for column, condition in rules.items()
        )
        for rowid, stored_id, is_text, _ in found:
            record_id = rows.text(rows.decoded(stored_id)) if is_text else stored_id
            (columns,) = conn.execute(
                f"SELECT {broken} FROM {table} WHERE rowid = ?", (rowid,)
            ).fetchone()
            for column in columns.split():
                column, _, not_utf8 = column.partition(":")
                # Text that is not UTF-8 shown as its bytes: replaced, they would not show why.
                shown = f"CAST({column} AS BLOB)" if not_utf8 else column
                (value,) = conn.execute(
                    f"SELECT {shown} FROM {table} WHERE rowid = ?", (rowid,)
                ).fetchone()
                reason = "is not UTF-8 text" if not_utf8 else "is not what daemon_db writes"
                problems.append(
                    f"damaged value: {table} row {show(record_id)}: {column}={show(value)} {reason}"
                )
        if found and found[0][3] > len(found):
            problems.append(f"damaged value: {found[0][3] - len(found)} more rows in {table}")
    return problems


_PRUNABLE = f"SELECT {runs.COLUMNS}, CAST((SELECT COALESCE(MAX(sequence), 0) FROM events" + (
    # The highest sequence only sizes a batch: cast, it is a whole number
    # whatever another tool wrote there (text sorts above every number).
    # The index is named, not left to the planner: without ANALYZE figures it
    # may pick runs_by_status and sort every finished run, batch after batch.
    # A partial index serves only a query whose WHERE repeats its own, as here.
    " WHERE run_id = runs.id) AS INTEGER) FROM runs INDEXED BY runs_finished_by_completion"
    " WHERE status IN ('cancelled', 'completed', 'failed') AND completed_at < ?"
)


# One correlated subquery per structure a run's delete changes: the runs
# table (through the batch's own index) and each index on runs, then its units
# and their key index, and its events with their rows.
_WARM = (
    "SELECT (SELECT count(*) FROM runs WHERE id = r.id)"
    " + (SELECT count(*) FROM runs INDEXED BY runs_by_branch WHERE feature_branch IS"
    " r.feature_branch AND repo_path = r.repo_path AND id = r.id)"
    " + (SELECT count(*) FROM runs INDEXED BY runs_by_repo"
    " WHERE repo_path = r.repo_path AND id = r.id)"
    " + (SELECT count(*) FROM runs INDEXED BY runs_by_status WHERE status = r.status AND id = r.id)"
    " + (SELECT count(*) FROM units WHERE id IN (SELECT id FROM units WHERE run_id = r.id))"
    " + (SELECT sum(length(payload_json)) FROM events WHERE run_id = r.id)"
    " FROM runs AS r INDEXED BY runs_finished_by_completion"
    " WHERE status IN ('cancelled', 'completed', 'failed') AND completed_at < ?"
)
_ORDER = " ORDER BY completed_at, id LIMIT ?"


Key = tuple[object, object]
"""A run's ``(completed_at, id)`` as stored: where a prune's next page or batch starts."""

Prunable = tuple[Key, Run | rows.DamagedRow, int]
"""A run a prune found: its key, the run (or why it cannot be read), its event count."""


def finished_before(
    conn: sqlite3.Connection, *, cutoff: str, after: Key | None, limit: int
) -> list[Prunable]:
    """Finished runs completed before ``cutoff``, oldest first, with their event counts.

    One statement: a seek in the index of finished runs by completion, from
    ``after`` (the key of the last run read before), and an index seek per
    run for its event count (sequences are gap-free from 1, so the highest is
    the count). A run whose row cannot be read comes as its DamagedRow, in
    its place: a prune passes over it, and goes on after it.
    """
    sql, params = _after(_PRUNABLE, cutoff, after)
    found = rows.ordered(conn, "runs", sql + _ORDER, (*params, limit))
    return [
        ((row[9], row[0]), _to_prune(row) if damage is None else damage, row[12])
        for row, damage in found
    ]


def _after(sql: str, cutoff: str, after: Key | None) -> tuple[str, list[object]]:
    """``sql`` (ending in the cutoff's test) from the run after ``after`` on; its parameters."""
    if after is None:
        return sql, [cutoff]
    # As stored: the key of a damaged run may be text that is not UTF-8, or a
    # blob; rebuilt from a Run, a timestamp of another form would not sort as
    # it does (the same page again, for ever).
    marks, values = rows.bound(after)
    return f"{sql} AND (completed_at, id) > {marks}", [cutoff, *values]


def _to_prune(row: Sequence[Any]) -> Run | rows.DamagedRow:
    """The run a prune may delete, or why it may not.

    Besides what every read refuses: a blob in a text column (listings hand it
    over, but the command line cannot show it, and a prune must not delete
    what it cannot show), and a completion time not written as daemon_db
    writes it, whose place in the index's text order is not its moment's
    (``...-05:00`` sorts before a cutoff its moment is after).
    """
    # In Python: asked in SQL (typeof, GLOB), it made a dry run half as slow again.
    try:
        run = runs.from_row(row)
    except rows.DamagedRow as exc:
        return exc
    if bytes in map(type, row):
        name, value = next(
            (n, v) for n, v in zip(runs.NAMES, row, strict=False) if type(v) is bytes
        )
        return rows.DamagedRow("runs", row[0], name, value, "is a blob another tool wrote")
    if _STORED_FORM(row[9]) is None:
        reason = "is not a timestamp of the form daemon_db writes, which a prune's order needs"
        return rows.DamagedRow("runs", row[0], "completed_at", row[9], reason)
    return run


_STORED_FORM = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z"
).fullmatch
"""Whether text is a timestamp in the one form daemon_db writes (reads accept others)."""


def warm_finished(conn: sqlite3.Connection, *, cutoff: str, after: Key | None) -> None:
    """Read every page that deleting the next prune batch will change.

    On a file larger than the page cache, a batch's deletes would otherwise
    wait for the disk a page at a time while holding the write lock, and every
    other writer with them (a single delete took 10 to 20 ms on a million-run
    file, while a checkpoint was writing). Run on a reader just before the
    batch, this reads the same pages without holding anything up, so that the
    batch finds them in the operating system's cache.
    """
    sql, params = _after(_WARM, cutoff, after)
    conn.execute(sql + _ORDER, (*params, _PRUNE_LOOKAHEAD)).fetchall()


Batch = tuple[list[tuple[Run, int]], list[rows.DamagedRow], Key | None]
"""A prune batch: the runs it deleted with their event counts, those it passed over, and
the key of the last run it read (None: it found none)."""


def delete_finished(
    conn: sqlite3.Connection,
    *,
    cutoff: str,
    after: Key | None,
    max_events: int,
    max_seconds: float,
) -> Batch:
    """Delete the oldest finished runs completed before ``cutoff``, after ``after``.

    Runs go one at a time until their events add up to ``max_events`` or the
    deleting has taken ``max_seconds`` (always at least one run), so that one
    transaction never holds the write lock for long, however big the file.
    Units and events go with their runs (ON DELETE CASCADE). A run whose row
    cannot be read is left where it is, returned apart.
    """
    deadline = time.perf_counter() + max_seconds
    taken: list[tuple[Run, int]] = []
    damaged: list[rows.DamagedRow] = []
    last: Key | None = None
    events = 0
    for key, run, count in finished_before(
        conn, cutoff=cutoff, after=after, limit=_PRUNE_LOOKAHEAD
    ):
        if isinstance(run, Run):
            if taken and (events + count > max_events or time.perf_counter() > deadline):
                break
            conn.execute("DELETE FROM runs WHERE id = ?", (run.id,))
            taken.append((run, count))
            events += count
        else:
            damaged.append(run)
        last = key
    return taken, damaged, last


_PRUNE_LOOKAHEAD = 64
"""Runs a prune batch reads ahead; it deletes fewer when their events or its time run out."""


def vacuum(conn: sqlite3.Connection, *, path: str) -> int:
    """Rewrite the file without its free pages; return the bytes it shrank by (0 if not yet).

    In WAL mode the new file is written through the WAL; a TRUNCATE
    checkpoint then moves it into the database and empties the WAL. That
    checkpoint waits for readers of older snapshots holding every write up, so
    it waits ``RESTART_WAIT_SECONDS`` at most, as the checkpointer's do, not
    the writer's busy timeout (5 s by default, every write held up behind a
    ``check`` or a ``backup``). A reader still there keeps the old pages in use:
    the file shrinks at the checkpointer's next TRUNCATE, once it is gone.
    """
    before = _file_bytes(conn, path)
    try:
        conn.execute("VACUUM")
        (timeout,) = conn.execute("PRAGMA busy_timeout").fetchone()
        conn.execute(f"PRAGMA busy_timeout = {round(RESTART_WAIT_SECONDS * 1000)}")
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            conn.execute(f"PRAGMA busy_timeout = {timeout}")
    except sqlite3.Error as exc:
        raise translate(exc, path) from None
    return max(0, before - _file_bytes(conn, path))


def _file_bytes(conn: sqlite3.Connection, path: str) -> int:
    """The database file's size: what the system would get back."""
    if path != MEMORY:
        with contextlib.suppress(OSError):
            return os.path.getsize(path)
    (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    (count,) = conn.execute("PRAGMA page_count").fetchone()
    size: int = page_size * count
    return size


def backup(
    conn: sqlite3.Connection,
    *,
    destination: str,
    progress: Callable[[int, int], Any] | None,
    pages_per_step: int = 1024,
) -> int:
    """Copy the database into ``destination`` (a new file); return the pages copied.

    The copy is taken in steps, inside one read transaction on the source: a
    stepped backup restarts whenever another connection writes, which with a
    busy daemon would be forever; within a read transaction it copies one
    consistent snapshot, and the daemon's writes go on meanwhile (WAL).
    """
    target = sqlite3.connect(uri(destination, "rw"), uri=True)
    try:
        # No journal: a copy that fails is deleted whole, and a journal was left
        # behind on a disk that filled up.
        target.execute("PRAGMA journal_mode = OFF")
        with snapshot(conn):
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()  # start the snapshot
            total = 0

            def step(status: int, remaining: int, pages: int) -> None:
                nonlocal total
                total = pages
                if progress is not None:
                    progress(pages - remaining, pages)

            conn.backup(target, pages=pages_per_step, progress=step, sleep=0)
        # The copy took the source's WAL mode with its pages; a reader of a WAL
        # file (a check of the backup) leaves -wal and -shm beside it, and the
        # next backup onto it refused them. A copy is one file; DB.open puts a
        # file it writes to back in WAL mode.
        target.execute("PRAGMA journal_mode = DELETE")
        return total
    finally:
        target.close()


def backup_to(
    conn: sqlite3.Connection,
    *,
    source: str,
    destination: str,
    overwrite: bool,
    progress: Callable[[int, int], object] | None,
) -> int:
    """Back up into a temporary file beside ``destination``, then rename it into place."""
    _check_destination(source, destination, overwrite=overwrite)
    folder = os.path.dirname(os.path.abspath(destination))
    me = this_process()
    _remove_abandoned(folder, me)
    try:
        fd, partial_copy = tempfile.mkstemp(
            prefix=f".backup-{me.host}-{_tag(me)}-{me.pid}-{me.started or 0}-",
            suffix=".db",
            dir=folder,
        )
    except OSError as exc:
        raise DatabaseError(destination, f"cannot write the copy: {exc.strerror}") from None
    os.close(fd)  # mkstemp made it owner-only, as the database itself
    try:
        pages = backup(conn, destination=partial_copy, progress=progress)
        # On disk before it takes the name, and the name on disk before success.
        _sync(partial_copy)
        os.replace(partial_copy, destination)
        if os.name == "posix":  # elsewhere a folder cannot be opened to sync it
            _sync(folder)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial_copy)
        if isinstance(exc, sqlite3.Error) and _writing(exc):
            raise translate(exc, destination) from None
        if isinstance(exc, OSError):
            raise DatabaseError(destination, f"cannot write the copy: {exc.strerror}") from None
        raise
    return pages


_PARTIAL = re.compile(r"\.backup-(.*)-([0-9a-f]{12})-([0-9]+)-([0-9]+)-[a-z0-9_]{8}\.db\Z")
"""A partial copy's name: who makes it (host, machine, pid, start time), and mkstemp's part."""


def _tag(process: Process) -> str:
    """Where the process's pid means something (boot and pid namespace), in a name's few characters.

    The host name is not enough: containers sharing it (and a backup folder)
    each have pids of their own, and one took the other's live copy for a
    dead one's.
    """
    return hashlib.sha256(process.machine.encode()).hexdigest()[:12]


def _remove_abandoned(folder: str, me: Process) -> None:
    """Remove the partial copies that backups killed mid-copy left in ``folder``.

    A copy is made under a hidden name and renamed when whole; killed before
    that, a backup left its partial copy, as large as the copy had got, for
    good. Only copies by processes of this machine (boot and pid namespace)
    that no longer run go: a live backup's, even in a folder other hosts or
    containers share, is left alone.
    """
    here = _tag(me)
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            found = _PARTIAL.match(name)
            if found is None or found[2] != here or int(found[3]) == me.pid:
                continue
            if not is_running(int(found[3]), None if found[4] == "0" else found[4]):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, name))


def _sync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _writing(exc: sqlite3.Error) -> bool:
    """Whether an error of a backup came from writing the copy (the source is only read)."""
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith("SQLITE_IOERR"):
        return name not in ("SQLITE_IOERR_READ", "SQLITE_IOERR_SHORT_READ")
    return name in ("SQLITE_FULL", "SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM")


_COMPANIONS = ("-wal", "-shm", "-journal")
"""The files SQLite keeps beside a database, which belong to it."""


def _check_destination(source: str, destination: str, *, overwrite: bool) -> None:
    """Refuse a destination the copy must not replace.

    Renaming a copy over the live database (or one of its -wal, -shm files),
    through whatever link, would corrupt it under the connections that have
    it open; a folder or a device is not a file to replace; and a file whose
    -wal, -shm or -journal sits beside it is a database that may be in use,
    whose log would be replayed onto the copy at its first open (a -journal
    left by a killed writer rolls its pages back into the copy, and corrupts it).
    """
    try:
        found = os.stat(destination)
    except FileNotFoundError:
        found = None
    except OSError as exc:
        raise DatabaseError(destination, f"cannot be written: {exc.strerror}") from None
    if source != MEMORY:
        itself = f"is the database being copied ({source}) or one of its files"
        real = os.path.realpath(source)
        if os.path.realpath(destination) in {real, *(real + end for end in _COMPANIONS)}:
            raise DatabaseError(destination, itself)
        if found is not None and any(
            _same_file(found, path) for path in (source, *(source + end for end in _COMPANIONS))
        ):
            raise DatabaseError(destination, f"{itself}, through a link")
    if found is not None and stat.S_ISDIR(found.st_mode):
        raise DatabaseError(destination, "is a folder: give the path of the file to write")
    if found is not None and not stat.S_ISREG(found.st_mode):
        raise DatabaseError(destination, "is not a regular file; the copy would replace it")
    if found is not None and not overwrite:
        raise DatabaseError(destination, "exists already (pass overwrite=True to replace it)")
    for end in _COMPANIONS:
        if os.path.lexists(destination + end):
            raise DatabaseError(
                destination,
                f"has a {end} file beside it: it may be a database in use (close it, or remove"
                f" {destination}{end} if nothing uses it)",
            )


def _same_file(found: os.stat_result, path: str) -> bool:
    try:
        other = os.stat(path)
    except OSError:
        return False
    return (found.st_dev, found.st_ino) == (other.st_dev, other.st_ino)


def _size(path: str) -> int:
    if path.startswith(MEMORY):
        return 0
    try:
        return os.path.getsize(path)
    except OSError:
        return 0
