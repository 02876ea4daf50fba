"""``python -m bench.scale [--runs N] [--quick] [--json]``: daemon_db on a large file.

Builds a file of ``--runs`` runs (default 1,000,000), 4 units each and 10
events per run (``bench/bulk.py``, a few minutes at a million), plus files of
1/100 and 1/10 of it for the figures that must stay flat, measures each
figure of issue 10, and deletes the files. Everything is measured in this one
run on this machine, beside the figures the issue reported before the change
(on its author's machine, with a file of 1M runs, 4M units and 11M events);
where the old mechanism can still be switched back on (SQLite's automatic
checkpoint), it is measured here too. The files go in the system's temporary
folder unless ``--dir`` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, cast

from daemon_db import DB
from daemon_db import _timestamps as timestamps
from daemon_db._owner import Owner
from daemon_db._process import this_process
from daemon_db._sqlite import maintenance, owners

from . import bulk
from .measure import GcPauses, LoopWatch, machine

ROOT = Path(__file__).parent.parent

BEFORE: dict[str, str] = {
    "append_max": "p99.9 20-22 ms, max 68-72 ms",
    "beside_prune": "p50 650 ms, max 4.5-5.4 s",
    "prune_batch": "39 / 126 / 980 ms at 10k / 100k / 1M runs",
    "dry_run": "1.4 / 13.5 / 34 s for 2k / 20k / 50k runs",
    "list_runs": "10 s, 700 MB, stall 322-342 ms",
    "list_events": "6.5 s, 562 MB, stall 222-229 ms",
    "cli_runs_json": "57-62 s, 3.78 GB peak RSS",
    "resumable": "67-110 ms (2,001 statements)",
    "stats": "2.9-5 s",
    "check": "44-47 s (full only)",
    "repo_page": "229 ms (2.3 ms at 10k runs)",
}
"""Issue 10's figures: 1M runs / 4M units / 11M events, on the issue author's machine."""


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def appends(db: DB, run_id: str, count: int, *, wal: Path) -> dict[str, float]:
    """Latency of ``count`` sequential appends, and the largest the WAL file got."""
    payload = {"unit": "unit-07", "step": "compile", "pct": 50}
    times: list[float] = []
    largest = 0
    clock = time.perf_counter
    with GcPauses() as collector:
        for n in range(count):
            start = clock()
            await db.append_event(run_id, "unit_progress", unit_id="unit-07", payload=payload)
            times.append(clock() - start)
            if n % 100 == 0:
                largest = max(largest, _size(wal))
    return {
        "count": count,
        "p50_ms": statistics.median(times) * 1e3,
        "p999_ms": quantile(times, 0.999) * 1e3,
        "max_ms": max(times) * 1e3,
        "wal_max_mb": largest / 1e6,
        "gc_longest_ms": collector.longest_ms,
    }


def _size(path: Path) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


async def with_autocheckpoint(db: DB) -> None:
    """Switch the old mechanism back on: no checkpointer, SQLite checkpointing in commits."""
    assert db._checkpointer is not None
    assert db._writer is not None
    await asyncio.to_thread(db._checkpointer.stop)
    db._checkpointer = None
    await db._writer.connection.execute("PRAGMA wal_autocheckpoint = 1000")


def timed_batches() -> tuple[list[float], Callable[[], None]]:
    """Time each prune batch on the writer's thread (wraps maintenance.delete_finished)."""
    seconds: list[float] = []
    real = maintenance.delete_finished

    def timed(conn: sqlite3.Connection, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return real(conn, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    maintenance.delete_finished = timed  # type: ignore[assignment]

    def undo() -> None:
        maintenance.delete_finished = real  # type: ignore[assignment]

    return seconds, undo


def cutoff_after(big: bulk.BigFile, finished_runs: int) -> Any:
    """The moment before which ``finished_runs`` of the oldest runs completed."""
    finished = big.runs - bulk.active_count(big.runs)
    step = timedelta(days=365) / max(1, finished)
    first = bulk.NOW - timedelta(days=366) + timedelta(minutes=5)
    return first + step * finished_runs


async def beside_prune(db: DB, big: bulk.BigFile, runs: int) -> dict[str, float]:
    """An appender's latency while prune_runs deletes the oldest ``runs`` runs."""
    batches, undo = timed_batches()
    done = asyncio.Event()
    times: list[float] = []

    async def appender() -> None:
        while not done.is_set():
            start = time.perf_counter()
            await db.append_event(big.active[0], "beside_prune")
            times.append(time.perf_counter() - start)

    task = asyncio.create_task(appender())
    try:
        with GcPauses() as collector:
            start = time.perf_counter()
            removed = await db.prune_runs(cutoff_after(big, runs))
            took = time.perf_counter() - start
    finally:
        done.set()
        await task
        undo()
    return {
        "runs_removed": len(removed),
        "seconds": took,
        "batches": len(batches),
        "batch_p50_ms": statistics.median(batches) * 1e3,
        "batch_max_ms": max(batches) * 1e3,
        "appends": len(times),
        "append_p50_ms": statistics.median(times) * 1e3,
        "append_max_ms": max(times) * 1e3,
        "gc_longest_ms": collector.longest_ms,
    }


async def prune_batch(path: Path, big: bulk.BigFile) -> float:
    """Median milliseconds of a prune batch (5,000 events or 10 ms) on this file."""
    batches, undo = timed_batches()
    try:
        async with DB.open(path) as db:
            await db.prune_runs(cutoff_after(big, BATCH_RUNS))
    finally:
        undo()
    return statistics.median(batches) * 1e3


async def dry_runs(db: DB, big: bulk.BigFile) -> list[dict[str, float]]:
    found = []
    for share in (0.002, 0.02, 0.05):
        runs = max(10, round(big.runs * share))
        start = time.perf_counter()
        listed = await db.prune_runs(cutoff_after(big, runs), dry_run=True)
        took = time.perf_counter() - start
        found.append(
            {"runs": len(listed), "seconds": took, "us_per_run": took * 1e6 / max(1, len(listed))}
        )
    return found


async def p50(call: Callable[[], Awaitable[Any]], times: int) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


async def start_up(db: DB, path: Path, times: int) -> tuple[float, float]:
    """p50 milliseconds of ``resumable_runs()``, and of its statements' rows alone.

    In turns: the second is sqlite3 fetching the same rows as tuples in one
    snapshot, on a connection of its own, with no records built: the floor
    of any Python code reading them.
    """
    calls, rows = [], []
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for _ in range(times):
            start = time.perf_counter()
            await db.resumable_runs()
            calls.append(time.perf_counter() - start)
            start = time.perf_counter()
            conn.execute("BEGIN")
            for statement in owners.START_UP:
                conn.execute(statement).fetchall()
            conn.execute("COMMIT")
            rows.append(time.perf_counter() - start)
    return statistics.median(calls) * 1e3, statistics.median(rows) * 1e3


def statements(path: Path) -> tuple[int, int]:
    """How many statements ``resumable_runs()`` and a claim send (not counting their
    transactions' own, or the statements triggers run), traced on a connection
    of this benchmark's own; the claim is rolled back."""
    sent: list[str] = []
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.set_trace_callback(sent.append)
        owners.resumable(conn)
        read = _counted(sent)
        sent.clear()
        conn.execute("BEGIN IMMEDIATE")
        try:
            owners.claim(conn, owner=Owner("bench", "bench", this_process(), 30.0), max_attempts=3)
        finally:
            conn.execute("ROLLBACK")
        return read, _counted(sent)


def _counted(sent: list[str]) -> int:
    ends = {"BEGIN", "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK"}
    return sum(1 for sql in sent if not sql.startswith("--") and sql.strip() not in ends)


class _Undo(Exception):
    """Raised to leave a transaction block rolled back."""


async def claims(db: DB, times: int) -> tuple[float, int]:
    """p50 milliseconds of ``claim_resumable_runs()`` taking the active runs, and how many.

    Each claim runs in a transaction block then rolled back, so that each
    takes the same runs from the daemon killed holding them (the time of the
    commit, a few hundred rows, is left out).
    """
    samples, taken = [], 0
    for _ in range(times):
        with contextlib.suppress(_Undo):
            async with db.transaction() as tx:
                start = time.perf_counter()
                claimed = await tx.claim_resumable_runs()
                samples.append(time.perf_counter() - start)
                taken = len(claimed.resumed)
                raise _Undo
    return statistics.median(samples) * 1e3, taken


def in_process(task: str, path: Path, argument: str = "") -> dict[str, Any]:
    """Run one listing in a fresh process: its time, its loop's stalls, its peak RSS."""
    spec = json.dumps({"task": task, "path": str(path), "argument": argument})
    return _child([sys.executable, "-m", "bench.scale", "--worker", spec], json_out=True)


def _child(command: list[str], *, json_out: bool) -> dict[str, Any]:
    """Run a child; it reports its peak RSS as the last line of stderr."""
    start = time.perf_counter()
    out = subprocess.PIPE if json_out else subprocess.DEVNULL
    done = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.PIPE, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{command[2:]} failed:\n{done.stderr.decode()}")
    result: dict[str, Any] = json.loads(done.stdout) if json_out else {}
    result["seconds_total"] = time.perf_counter() - start
    result["peak_rss_mb"] = float(done.stderr.decode().split()[-1])
    return result


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux's VmHWM), in MB.

    Not ``getrusage``: its maximum survives ``exec``, so a child started by a
    large parent reports the parent's size.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def cli_in_process(argv: list[str]) -> int:
    """``daemon-db ARGS`` in this process, then its peak RSS on stderr."""
    from daemon_db._cli import main

    code = main(argv)
    sys.stderr.write(f"\n{peak_rss_mb():.1f}\n")
    return code


async def worker(spec: dict[str, str]) -> dict[str, Any]:
    """One listing, watched: ``iter_runs``, ``list_runs``, ``iter_events`` or ``list_events``."""
    async with DB.open(spec["path"], readonly=True) as db:
        count = 0
        async with LoopWatch() as watch:
            start = time.perf_counter()
            if spec["task"] == "iter_runs":
                async for _run in db.iter_runs():
                    count += 1
            elif spec["task"] == "list_runs":
                count = len(await db.list_runs())
            elif spec["task"] == "iter_events":
                async for _event in db.iter_events(spec["argument"]):
                    count += 1
            else:
                count = len(await db.list_events(spec["argument"]))
            took = time.perf_counter() - start
    return {"rows": count, "seconds": took, **watch.figures()}


@dataclass(frozen=True)
class EventShape:
    """An event row's shape, as ``event_rows`` builds and measures it."""

    run_key: bool  # the run as an integer key (a runs rowid) rather than its 26-character id
    integer_time: bool  # created_at as integer microseconds rather than 27 characters of text
    clustered: bool  # WITHOUT ROWID on (run, sequence), the global id from a counter row

    @property
    def run(self) -> str:
        return "run_key" if self.run_key else "run_id"

    def schema(self) -> list[str]:
        run = f"{self.run} {'INTEGER' if self.run_key else 'TEXT'} NOT NULL"
        created = f"created_at {'INTEGER' if self.integer_time else 'TEXT'} NOT NULL"
        rest = f"event_type TEXT NOT NULL, unit_id TEXT, payload_json TEXT, {created}"
        if self.clustered:
            events = (
                f"CREATE TABLE events (id INTEGER NOT NULL, {run}, sequence INTEGER NOT NULL,"
                f" {rest}, PRIMARY KEY ({self.run}, sequence)) WITHOUT ROWID"
            )
        else:
            events = (
                f"CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, {run},"
                f" sequence INTEGER NOT NULL, {rest}, UNIQUE ({self.run}, sequence))"
            )
        statements = [
            "CREATE TABLE runs (key INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, status TEXT)"
            if self.run_key
            else "CREATE TABLE runs (id TEXT PRIMARY KEY, status TEXT)",
            events,
            # As the daemon's file: a kept count of events, moved by a trigger.
            "CREATE TABLE counts (name TEXT PRIMARY KEY NOT NULL, n INTEGER NOT NULL)"
            " WITHOUT ROWID",
            "CREATE TRIGGER events_counted_in AFTER INSERT ON events BEGIN"
            " INSERT INTO counts (name, n) VALUES ('events', 1)"
            " ON CONFLICT (name) DO UPDATE SET n = n + 1; END",
        ]
        if self.clustered:
            # The global id: the last one given, in a counts row that every insert
            # moves, whatever writes it; as with AUTOINCREMENT, never given twice.
            statements += [
                "INSERT INTO counts (name, n) VALUES ('event id', 0)",
                "CREATE TRIGGER events_numbered AFTER INSERT ON events BEGIN"
                " UPDATE counts SET n = new.id WHERE name = 'event id' AND n < new.id; END",
            ]
        return statements

    def load(self) -> str:
        """The bulk insert: id, run, sequence, payload, time."""
        return (
            f"INSERT INTO events (id, {self.run}, sequence, event_type, unit_id, payload_json,"
            " created_at) VALUES (?, ?, ?, 'unit_progress', 'unit-07', ?, ?)"
        )

    def next_sequence(self) -> str:
        """An append's first statement: the run's key (or id) and its next sequence."""
        run = "key" if self.run_key else "id"
        return (
            f"SELECT {run}, (SELECT COALESCE(MAX(sequence), 0) + 1 FROM events"
            f" WHERE {self.run} = runs.{run}) FROM runs WHERE id = ?"
        )

    def append(self) -> str:
        """An append's insert, given the run, sequence, payload and time."""
        columns = f"{self.run}, sequence, event_type, unit_id, payload_json, created_at"
        values = "?, ?, 'unit_progress', 'unit-07', ?, ?"
        if self.clustered:
            return (
                f"INSERT INTO events (id, {columns}) VALUES ((SELECT n + 1 FROM counts"
                f" WHERE name = 'event id'), {values}) RETURNING id"
            )
        return f"INSERT INTO events ({columns}) VALUES ({values}) RETURNING id"

    def page(self) -> str:
        """A page of a run's log, from the run's 26-character id (the API's argument)."""
        if not self.run_key:  # the events table alone, as today
            return (
                "SELECT id, run_id, sequence, event_type, unit_id, payload_json, created_at"
                " FROM events WHERE run_id = ? AND sequence > ? ORDER BY sequence LIMIT ?"
            )
        return (
            "SELECT e.id, r.id, e.sequence, e.event_type, e.unit_id, e.payload_json,"
            " e.created_at FROM runs r JOIN events e ON e.run_key = r.key"
            " WHERE r.id = ? AND e.sequence > ? ORDER BY e.sequence LIMIT ?"
        )


EVENT_SHAPES = {
    "today": EventShape(run_key=False, integer_time=False, clustered=False),
    "run key": EventShape(run_key=True, integer_time=False, clustered=False),
    "run key and integer time": EventShape(run_key=True, integer_time=True, clustered=False),
    "clustered on (run_id, sequence)": EventShape(
        run_key=False, integer_time=False, clustered=True
    ),
    "clustered on (run_key, sequence)": EventShape(
        run_key=True, integer_time=False, clustered=True
    ),
}
ACTIVE_RUNS = 16
"""Runs taking events at once in the daemon's order of inserts."""
LONG_LOG = 1000
"""Events of the one long run (the others have 10): the log read a page at a time."""


def _per_run(runs: int) -> Iterator[tuple[int, int]]:
    """(run, sequence) a run after the other, as the bulk loader inserts them."""
    for n in range(runs):
        for sequence in range(1, (LONG_LOG if n == runs // 2 else 10) + 1):
            yield n, sequence


def _interleaved(runs: int) -> Iterator[tuple[int, int]]:
    """(run, sequence) as a daemon appends them: ``ACTIVE_RUNS`` runs at once.

    Each event goes to one of the active runs, picked at random (seeded, so
    that they finish at different times); a run that has its events gives its
    place to the next run (a newer ULID, a higher key).
    """
    pick = random.Random(10).randrange
    active = [[n, 0] for n in range(min(ACTIVE_RUNS, runs))]
    started = len(active)
    while active:
        i = pick(len(active))
        slot = active[i]
        slot[1] += 1
        yield slot[0], slot[1]
        if slot[1] == (LONG_LOG if slot[0] == runs // 2 else 10):
            if started < runs:
                active[i] = [started, 0]
                started += 1
            else:
                active.pop(i)


def _build_events(
    path: Path, shape: EventShape, runs: int, order: Iterator[tuple[int, int]]
) -> dict[str, float]:
    """A file of ``runs`` runs and their events inserted in ``order``; its events' size."""
    created: object = 1_795_780_800_000_000 if shape.integer_time else bulk._stamp(bulk.NOW)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = OFF")  # the pages come out the same as in WAL
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -1000000")
        conn.execute("BEGIN")
        for statement in shape.schema():
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO runs (id, status) VALUES (?, 'completed')",
            ((bulk._run_id(n),) for n in range(runs)),
        )
        # Every insert is the same b-tree insert in one transaction or in many:
        # the order sets the pages, not where the commits fall.
        conn.executemany(
            shape.load(),
            (
                (i, n + 1 if shape.run_key else bulk._run_id(n), s, bulk.PAYLOAD, created)
                for i, (n, s) in enumerate(order, start=1)
            ),
        )
        conn.execute("COMMIT")
        (events,) = conn.execute("SELECT n FROM counts WHERE name = 'events'").fetchone()
        size, unused = conn.execute(
            "SELECT SUM(pgsize), SUM(unused) FROM dbstat WHERE name = 'events' OR name IN"
            " (SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'events')"
        ).fetchone()
        conn.execute("PRAGMA journal_mode = WAL")
    return {"bytes_per_event": size / events, "fill": 1 - unused / size}


def event_rows(folder: Path, count: int, turns: int = 5) -> dict[str, dict[str, float]]:
    """Bytes per event in two orders of inserts, and raw appends and reads, for each shape.

    - ``today``: the run's 26-character id in the row and in the
      (run_id, sequence) index, the timestamp as 27 characters of text;
    - ``run key``: the run as an integer key (a runs rowid) instead;
    - ``run key and integer time``: besides, the timestamp as microseconds
      since the epoch (an integer);
    - ``clustered on ...``: a ``WITHOUT ROWID`` table whose primary key is
      (run, sequence), with no other index; the global id from a counter row.

    Sizes (the events table and its indexes, with dbstat) are for ``count``
    events, 10 a run and one run of ``LONG_LOG``, inserted a run after the
    other (the bulk loader's order) and interleaved (``ACTIVE_RUNS`` runs at
    once, a daemon's order). The timings are taken on the interleaved files,
    in ``turns`` turns over the shapes, each figure the median of the turns'
    figures: appends (``BEGIN IMMEDIATE``, the run's next sequence from a seek
    on runs, the insert, ``COMMIT``) spread over the newest runs; a page of
    100 events of the long log; a 10-event run read whole, picked at random.
    The integer-key shapes pay their run id -> key seek on runs in each.
    """
    runs = count // 10
    results: dict[str, dict[str, float]] = {}
    paths: dict[str, Path] = {}
    for name, shape in EVENT_SHAPES.items():
        stem = name.translate({ord(c): "-" for c in " (),"})
        path = folder / f"rows-{stem}.db"
        per_run = _build_events(path, shape, runs, _per_run(runs))
        path.unlink()
        paths[name] = folder / f"rows-{stem}-interleaved.db"
        interleaved = _build_events(paths[name], shape, runs, _interleaved(runs))
        results[name] = {
            "bytes_per_event": per_run["bytes_per_event"],
            "fill": per_run["fill"],
            "bytes_per_event_interleaved": interleaved["bytes_per_event"],
            "fill_interleaved": interleaved["fill"],
            "decode_us": _decode_us(
                1_795_780_800_000_000 if shape.integer_time else bulk._stamp(bulk.NOW)
            ),
        }
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in EVENT_SHAPES}
    conns = {name: sqlite3.connect(path, isolation_level=None) for name, path in paths.items()}
    try:
        for conn in conns.values():
            conn.execute("PRAGMA synchronous = NORMAL")
        names = list(EVENT_SHAPES)
        for turn in range(turns):
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                figures = _hot_paths(conns[name], EVENT_SHAPES[name], runs, seed=turn)
                for figure, value in figures.items():
                    samples[name].setdefault(figure, []).append(value)
    finally:
        for conn in conns.values():
            conn.close()
    for name, turned in samples.items():
        results[name].update({k: statistics.median(v) for k, v in turned.items()})
    return results


def _hot_paths(
    conn: sqlite3.Connection, shape: EventShape, runs: int, *, seed: int
) -> dict[str, float]:
    """One turn's appends and reads on an interleaved file, in microseconds."""
    clock = time.perf_counter
    created: object = 1_795_780_800_000_000 if shape.integer_time else bulk._stamp(bulk.NOW)
    newest = [bulk._run_id(n) for n in range(runs - ACTIVE_RUNS, runs)]
    appends = []
    for i in range(400):
        run_id = newest[i % ACTIVE_RUNS]
        start = clock()
        conn.execute("BEGIN IMMEDIATE")
        run, sequence = conn.execute(shape.next_sequence(), (run_id,)).fetchone()
        conn.execute(shape.append(), (run, sequence, bulk.PAYLOAD, created)).fetchone()
        conn.execute("COMMIT")
        appends.append(clock() - start)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    pick = random.Random(seed)
    long_log, page = bulk._run_id(runs // 2), shape.page()
    pages = []
    for _ in range(200):
        after = pick.randrange(LONG_LOG - 100)
        start = clock()
        rows = conn.execute(page, (long_log, after, 100)).fetchall()
        pages.append(clock() - start)
        assert len(rows) == 100
    whole = []
    for _ in range(200):
        run_id = bulk._run_id(pick.randrange(runs - ACTIVE_RUNS))
        start = clock()
        rows = conn.execute(page, (run_id, 0, 100)).fetchall()
        whole.append(clock() - start)
        assert len(rows) == 10 or run_id == long_log
    return {
        "append_p50_us": statistics.median(appends) * 1e6,
        "append_p99_us": quantile(appends, 0.99) * 1e6,
        "page_us": statistics.median(pages) * 1e6,
        "run_us": statistics.median(whole) * 1e6,
    }


def _decode_us(stored: object) -> float:
    """Microseconds to turn a stored timestamp into the aware datetime a record holds."""
    if isinstance(stored, str):
        decode: Callable[[], object] = partial(timestamps.from_text, stored)
    else:
        epoch, micros = datetime(1970, 1, 1, tzinfo=UTC), int(cast(int, stored))

        def decode() -> object:
            return epoch + timedelta(microseconds=micros)

    return min(timeit.repeat(decode, number=100_000, repeat=5)) / 100_000 * 1e6


async def measure(folder: Path, runs: int, appends_count: int, full_check: bool) -> dict[str, Any]:
    sizes = sorted({max(1000, runs // 100), max(1000, runs // 10), runs})
    files: dict[int, bulk.BigFile] = {}
    for size in sizes:
        files[size] = await bulk.build(folder / f"runs-{size}.db", size)
    big = files[runs]
    results: dict[str, Any] = {
        "machine": machine(),
        "runs": runs,
        "build_seconds": {str(size): f.seconds for size, f in files.items()},
        "file_mb": big.path.stat().st_size / 1e6,
    }
    results["prune_batch_ms"] = {
        str(size): await prune_batch(f.path, f) for size, f in files.items() if size != runs
    }
    # Listings, each in a process of its own (peak memory is per process).
    results["iter_runs"] = in_process("iter_runs", big.path)
    results["list_runs"] = in_process("list_runs", big.path)
    results["iter_events"] = in_process("iter_events", big.path, big.long_log)
    results["list_events"] = in_process("list_events", big.path, big.long_log)
    cli = [sys.executable, "-m", "bench.scale", "--cli", "runs", "--json", "--db", str(big.path)]
    results["cli_runs_json"] = _child(cli, json_out=False)
    async with DB.open(big.path) as db:
        results["resumable_ms"], results["resumable_rows_ms"] = await start_up(db, big.path, 20)
        results["resumable_runs"] = len(await db.resumable_runs())
        results["claim_ms"], results["claimed_runs"] = await claims(db, 5)
        results["resumable_statements"], results["claim_statements"] = statements(big.path)
        results["stats_ms"] = await p50(db.stats, 5)
        results["repo_page_ms"] = await p50(
            partial(db.list_runs, repo_path=big.repo, limit=1000), 20
        )
        if full_check:
            start = time.perf_counter()
            results["check_problems"] = len(await db.check())
            results["check_s"] = time.perf_counter() - start
        start = time.perf_counter()  # second: the file is as warm for it as for the full one
        results["check_quick_problems"] = len(await db.check(quick=True))
        results["check_quick_s"] = time.perf_counter() - start
        results["dry_run"] = await dry_runs(db, big)
        results["prune_batch_ms"][str(runs)] = statistics.median([await prune_batch_in(db, big)])
        results["appends"] = await appends(
            db, big.active[1], appends_count, wal=Path(f"{big.path}-wal")
        )
        results["beside_prune"] = await beside_prune(db, big, BATCH_RUNS + max(1000, runs // 50))
    async with DB.open(big.path) as db:
        await with_autocheckpoint(db)
        results["appends_autocheckpoint"] = await appends(
            db, big.active[2], appends_count, wal=Path(f"{big.path}-wal")
        )
    results["event_rows"] = event_rows(folder, min(1_000_000, 10 * runs))
    return results


async def prune_batch_in(db: DB, big: bulk.BigFile) -> float:
    """Median milliseconds of a prune batch, on an open DB."""
    batches, undo = timed_batches()
    try:
        await db.prune_runs(cutoff_after(big, BATCH_RUNS))
    finally:
        undo()
    return statistics.median(batches) * 1e3


BATCH_RUNS = 2500
"""Runs removed to time prune batches: about 5 batches (500 runs of 10 events each)."""


def _row(what: str, before: str, after: str, goal: str, met: bool | None) -> list[str]:
    mark = "" if met is None else ("met" if met else "**missed**")
    return [what, before, after, goal, mark]


def table(r: dict[str, Any]) -> str:
    m = r["machine"]
    runs = r["runs"]
    a, ac = r["appends"], r["appends_autocheckpoint"]
    bp = r["beside_prune"]
    batches = r["prune_batch_ms"]
    batch_sizes = sorted(batches, key=int)
    flat = max(batches.values()) / min(batches.values())
    dry = r["dry_run"]
    dry_ratio = max(d["us_per_run"] for d in dry) / min(d["us_per_run"] for d in dry)
    lr, ir, le, ie = r["list_runs"], r["iter_runs"], r["list_events"], r["iter_events"]
    cli = r["cli_runs_json"]
    rows = [
        _row(
            f"{a['count']:,} sequential appends: p50 / p99.9 / max; largest WAL",
            BEFORE["append_max"],
            f"{a['p50_ms']:.2f} / {a['p999_ms']:.2f} / {a['max_ms']:.1f} ms"
            f" ({a['gc_longest_ms']:.1f} ms); {a['wal_max_mb']:.0f} MB",
            "max <= 20 ms, p99.9 <= 5x p50, WAL <= 64 MB",
            a["max_ms"] <= 20 and a["p999_ms"] <= 5 * a["p50_ms"] and a["wal_max_mb"] <= 64,
        ),
        _row(
            "the same with SQLite's automatic checkpoint (the old way, switched on here)",
            "-",
            f"{ac['p50_ms']:.2f} / {ac['p999_ms']:.2f} / {ac['max_ms']:.1f} ms"
            f" ({ac['gc_longest_ms']:.1f} ms); {ac['wal_max_mb']:.0f} MB",
            "(for comparison)",
            None,
        ),
        _row(
            f"an appender beside prune_runs ({bp['runs_removed']:,} runs, {bp['batches']} batches)",
            BEFORE["beside_prune"],
            f"p50 {bp['append_p50_ms']:.2f} ms, max {bp['append_max_ms']:.1f} ms"
            f" ({bp['gc_longest_ms']:.1f} ms);"
            f" batch p50 {bp['batch_p50_ms']:.1f} ms, max {bp['batch_max_ms']:.1f} ms",
            "max <= 50 ms",
            bp["append_max_ms"] <= 50,
        ),
        _row(
            "a prune batch at " + " / ".join(f"{int(s):,}" for s in batch_sizes) + " runs",
            BEFORE["prune_batch"],
            " / ".join(f"{batches[s]:.1f}" for s in batch_sizes) + f" ms ({flat:.2f}x)",
            "flat within 2x",
            flat <= 2,
        ),
        _row(
            "prune --dry-run of " + " / ".join(f"{d['runs']:,}" for d in dry) + " runs",
            BEFORE["dry_run"],
            " / ".join(f"{d['seconds']:.2f}" for d in dry)
            + f" s ({dry_ratio:.2f}x spread per run)",
            "linear (per run within 2x)",
            dry_ratio <= 2,
        ),
        _row(
            f"list_runs() of {runs:,} runs: time, peak RSS, worst stall with GC (GC alone)",
            BEFORE["list_runs"],
            f"{lr['seconds']:.1f} s, {lr['peak_rss_mb']:.0f} MB, {lr['worst_ms']:.0f} ms"
            f" ({lr['gc_longest_ms']:.0f} ms)",
            "(kept; iter_runs is the streaming form)",
            None,
        ),
        _row(
            f"iter_runs() of {runs:,} runs: same figures",
            "-",
            f"{ir['seconds']:.1f} s, {ir['peak_rss_mb']:.0f} MB, {ir['worst_ms']:.1f} ms"
            f" ({ir['gc_longest_ms']:.1f} ms); per row {ir['seconds'] / lr['seconds']:.2f}x"
            " list_runs",
            "stall <= 10 ms with GC; per row <= 1.2x",
            ir["worst_ms"] <= 10 and ir["seconds"] <= 1.2 * lr["seconds"],
        ),
        _row(
            f"list_events of a {le['rows']:,}-event log: same figures",
            BEFORE["list_events"],
            f"{le['seconds']:.1f} s, {le['peak_rss_mb']:.0f} MB, {le['worst_ms']:.0f} ms"
            f" ({le['gc_longest_ms']:.0f} ms)",
            "(kept; iter_events is the streaming form)",
            None,
        ),
        _row(
            f"iter_events of a {ie['rows']:,}-event log: same figures",
            "-",
            f"{ie['seconds']:.1f} s, {ie['peak_rss_mb']:.0f} MB, {ie['worst_ms']:.1f} ms"
            f" ({ie['gc_longest_ms']:.1f} ms); per row {ie['seconds'] / le['seconds']:.2f}x"
            " list_events",
            "stall <= 10 ms with GC; per row <= 1.2x",
            ie["worst_ms"] <= 10 and ie["seconds"] <= 1.2 * le["seconds"],
        ),
        _row(
            f"daemon-db runs --json, {runs:,} runs: time, peak RSS",
            BEFORE["cli_runs_json"],
            f"{cli['seconds_total']:.1f} s, {cli['peak_rss_mb']:.0f} MB",
            "<= 150 MB",
            cli["peak_rss_mb"] <= 150,
        ),
        _row(
            f"resumable_runs(), {r['resumable_runs']:,} active runs (p50)",
            BEFORE["resumable"],
            f"{r['resumable_ms']:.1f} ms ({r['resumable_statements']} statements; their rows"
            " alone in sqlite3,"
            f" no records: {r['resumable_rows_ms']:.1f} ms)",
            "<= 40 ms",
            r["resumable_ms"] <= 40,
        ),
        _row(
            f"claim_resumable_runs(), {r['claimed_runs']:,} runs of a killed daemon (p50)",
            "-",
            f"{r['claim_ms']:.1f} ms ({r['claim_statements']} statements)",
            "<= 40 ms",
            r["claim_ms"] <= 40,
        ),
        _row(
            "stats() (p50)",
            BEFORE["stats"],
            f"{r['stats_ms']:.2f} ms",
            "<= 0.5 s",
            r["stats_ms"] <= 500,
        ),
        _row(
            "check --quick / check",
            BEFORE["check"],
            f"{r['check_quick_s']:.1f} s / "
            + (f"{r['check_s']:.1f} s" if "check_s" in r else "not run"),
            "(a quick form)",
            None,
        ),
        _row(
            "list_runs(repo_path=..., limit=1000) (p50)",
            BEFORE["repo_page"],
            f"{r['repo_page_ms']:.1f} ms",
            "(an index)",
            None,
        ),
    ]
    head = ["what", "before (issue 10)", "after (this run)", "goal", "met"]
    lines = [
        f"daemon_db at scale: {runs:,} runs, {4 * runs:,} units, {10 * runs:,} events"
        f" ({r['file_mb']:,.0f} MB, built in {r['build_seconds'][str(runs)]:.0f} s),"
        " all figures from this one run",
        f"machine: {m['processor']}, {m['cpus']} CPUs, {m['memory_gb']} GB; {m['platform']};"
        f" Python {m['python']}, SQLite {m['sqlite']}",
        "before: issue 10's figures (1M runs, 4M units, 11M events, on its author's machine),"
        " and, for appends, SQLite's automatic checkpoint switched back on here",
        "stalls: worst gap of a 1 ms ticker, garbage collector included; its longest pause"
        " in brackets (for latencies too: a pause stops every thread)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [
        "",
        "Event rows (raw sqlite3, 10 events a run, 65-byte payload; bytes per event"
        " inserted a run after the other / interleaved, 16 runs at once, with the pages'"
        " fill; timings on the interleaved files, medians of turns over the shapes):",
        "",
        "| event row | bytes per event | append p50 / p99 | a page of 100 events"
        " | a 10-event run | a timestamp read back |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    today = r["event_rows"]["today"]
    for name, f in r["event_rows"].items():
        size, interleaved = f["bytes_per_event"], f["bytes_per_event_interleaved"]
        change = [
            "" if name == "today" else f" ({value / today[key] - 1:+.0%})"
            for key, value in (
                ("bytes_per_event", size),
                ("bytes_per_event_interleaved", interleaved),
            )
        ]
        lines.append(
            f"| {name} | {size:.0f}{change[0]} / {interleaved:.0f}{change[1]}"
            f" ({f['fill']:.0%} / {f['fill_interleaved']:.0%} full)"
            f" | {f['append_p50_us']:.0f} / {f['append_p99_us']:.0f} us"
            f" | {f['page_us']:.0f} us | {f['run_us']:.0f} us | {f['decode_us']:.2f} us |"
        )
    return "\n".join(lines)


def cli(argv: list[str]) -> int:
    if argv[:1] == ["--cli"]:
        return cli_in_process(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--runs", type=int, default=1_000_000, help="runs in the largest file")
    parser.add_argument("--appends", type=int, default=100_000, help="sequential appends timed")
    parser.add_argument("--quick", action="store_true", help="10,000 runs: checks the harness runs")
    parser.add_argument("--no-full-check", action="store_true", help="skip the full check()")
    parser.add_argument("--dir", help="where the files go (default: the system's temporary folder)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(asyncio.run(worker(json.loads(args.worker)))))
        sys.stderr.write(f"\n{peak_rss_mb():.1f}\n")
        return 0
    runs, count = (10_000, 500) if args.quick else (args.runs, args.appends)
    folder = Path(tempfile.mkdtemp(prefix="daemon-db-scale-", dir=args.dir))
    try:
        results = asyncio.run(measure(folder, runs, count, not args.no_full_check))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
