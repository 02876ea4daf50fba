"""A large daemon_db file, bulk-loaded with plain sqlite3 in a few minutes.

The file has the project's own schema (created by ``DB.open``, migrations and
triggers included); the rows go in with ``executemany`` in large
transactions, with the journal off while loading and WAL mode back on at the
end, as a daemon leaves it. The shape, for ``runs`` runs:

- ``runs - active`` finished runs (completed, failed, cancelled in turn),
  completed over the year before ``NOW``, oldest first, on 1,000 branches of
  100 repositories; ``active`` running runs (1,000 at a million runs);
- 4 units per run (the active runs' first unit completed, second running),
  each with the timestamps its status implies;
- the active runs held by a daemon killed a moment ago: its owner row names
  this machine, a process that has exited, and a lease still running, so
  that start-up looks at that process as it does after a crash;
- ``10 * runs`` events: one run with a log of ``runs`` events (the long log),
  the rest shared out over the other runs, with a 65-byte payload.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from daemon_db import DB
from daemon_db._process import this_process

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
PAYLOAD = '{"unit":"unit-07","step":"compile","pct":50,"message":"building"}'
assert len(PAYLOAD) == 65
CHUNK = 200_000
STATUSES = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class BigFile:
    """What was loaded, and the ids the measurements use."""

    path: Path
    runs: int
    units: int
    events: int
    active: list[str]
    long_log: str  # the run with ``runs`` events
    long_log_events: int
    repo: str  # a repository with runs/100 runs
    seconds: float


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


def _run_id(n: int) -> str:
    # ULID-shaped: 26 characters of Crockford base32, in creation order.
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    digits = []
    value = 0x01000000000000000000 + n
    for _ in range(26):
        value, digit = divmod(value, 32)
        digits.append(alphabet[digit])
    return "".join(reversed(digits))


def active_count(runs: int) -> int:
    return max(10, min(1000, runs // 1000))


def _runs(runs: int, active: int) -> Iterator[tuple[object, ...]]:
    finished = runs - active
    step = timedelta(days=365) / max(1, finished)
    start = NOW - timedelta(days=366)
    for n in range(runs):
        run_id = _run_id(n)
        if n < finished:
            started = start + step * n
            status = STATUSES[n % 3]
            completed: str | None = _stamp(started + timedelta(minutes=5))
        else:
            started, status, completed = NOW - timedelta(minutes=n % 60), "running", None
        owner = None if n < finished else KILLED
        yield (run_id, f"feature/{n}", f"/srv/repo-{n % 100}", "main", "tasks", 2, status,
               "bench", _stamp(started), completed, None, "{}", owner)  # fmt: skip


def _units(runs: int, active: int) -> Iterator[tuple[object, ...]]:
    finished = runs - active
    started, completed = _stamp(NOW - timedelta(minutes=30)), _stamp(NOW - timedelta(minutes=10))
    times = {"completed": (started, completed), "running": (started, None), "pending": (None, None)}
    for n in range(runs):
        run_id = _run_id(n)
        for u in range(1, 5):
            if n < finished:
                status = "completed"
            else:
                status = ("completed", "running", "pending", "pending")[u - 1]
            yield (f"{run_id}_unit-{u}", run_id, f"unit-{u}", status, *times[status])


def _events(runs: int, long_log: int) -> Iterator[tuple[object, ...]]:
    created = _stamp(NOW)
    per_run, extra = divmod(9 * runs, runs - 1)
    for n in range(runs):
        run_id = _run_id(n)
        count = runs if n == long_log else per_run + (1 if n < extra else 0)
        for sequence in range(1, count + 1):
            yield (run_id, sequence, "unit_progress", "unit-07", PAYLOAD, created)


def _chunks(rows: Iterator[tuple[object, ...]]) -> Iterator[list[tuple[object, ...]]]:
    while True:
        chunk = [row for _, row in zip(range(CHUNK), rows, strict=False)]
        if not chunk:
            return
        yield chunk


async def build(path: Path, runs: int) -> BigFile:
    """Create ``path`` with ``runs`` runs, 4 units each and 10 events per run on average."""
    began = time.perf_counter()
    await _create(path)
    active = active_count(runs)
    long_log = runs // 2  # a finished run in the middle of the file
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -1000000")  # 1 GB
        for sql, rows in (
            (
                "INSERT INTO owners (id, name, host, machine, pid, started, lease_until)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                iter([_killed_daemon()]),
            ),
            (
                "INSERT INTO runs (id, feature_branch, repo_path, target_branch, tasks_dir,"
                " parallelism, status, daemon_version, started_at, completed_at, error,"
                " config_json, owner_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _runs(runs, active),
            ),
            ("INSERT INTO units (id, run_id, unit_id, status, started_at, completed_at)"
             " VALUES (?, ?, ?, ?, ?, ?)", _units(runs, active)),
            ("INSERT INTO events (run_id, sequence, event_type, unit_id, payload_json, created_at)"
             " VALUES (?, ?, ?, ?, ?, ?)", _events(runs, long_log)),
        ):  # fmt: skip
            for chunk in _chunks(rows):
                conn.execute("BEGIN")
                conn.executemany(sql, chunk)
                conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")
    return BigFile(
        path=path,
        runs=runs,
        units=4 * runs,
        events=10 * runs,
        active=[_run_id(n) for n in range(runs - active, runs)],
        long_log=_run_id(long_log),
        long_log_events=runs,
        repo="/srv/repo-7",
        seconds=time.perf_counter() - began,
    )


KILLED = "killed-daemon"
"""The owner id of the daemon that held the active runs."""


def _killed_daemon() -> tuple[object, ...]:
    """The owner row of a daemon on this machine killed a moment ago, its lease still running."""
    here = this_process()
    with subprocess.Popen([sys.executable, "-c", "pass"]) as child:  # a pid that has exited
        child.wait()
    lease_until = _stamp(datetime.now(UTC) + timedelta(days=1))
    return (KILLED, "daemon", here.host, here.machine, child.pid, "1", lease_until)


async def _create(path: Path) -> None:
    async with DB.open(path):
        pass
