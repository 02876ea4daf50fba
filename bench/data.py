"""Databases to measure against, filled in bulk with plain sqlite3 (fast, and identical for all)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from daemon_db import DB, new_run_id

NOW = "2026-11-27T12:00:00.000000Z"
PAYLOAD = '{"unit":"u1","step":"compile","pct":50}'


@dataclass(frozen=True)
class Dataset:
    """Ids in a filled database that the measurements use."""

    live_run: str  # running, with one unit: the target of the writes
    unit: str
    log_run: str  # with the big event log
    log_events: int
    incomplete: list[str]


def _run(run_id: str, status: str, n: int) -> tuple[object, ...]:
    started = NOW if status != "pending" else None
    completed = NOW if status in ("completed", "failed", "cancelled") else None
    return (run_id, f"feature/{n}", "/srv/app", "main", "tasks", 2, status, "bench", started,
            completed, None, "{}")  # fmt: skip


def _insert_runs(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    conn.executemany(
        "INSERT INTO runs (id, feature_branch, repo_path, target_branch, tasks_dir, parallelism,"
        " status, daemon_version, started_at, completed_at, error, config_json)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def _insert_events(conn: sqlite3.Connection, rows: Iterator[tuple[object, ...]]) -> None:
    conn.executemany(
        "INSERT INTO events (run_id, sequence, event_type, unit_id, payload_json, created_at)"
        " VALUES (?, ?, 'progress', 'u1', ?, ?)",
        rows,
    )


async def create(path: Path) -> None:
    """An empty database with daemon_db's schema and settings (WAL)."""
    async with DB.open(path):
        pass


async def build(
    path: Path, *, finished_runs: int, incomplete_runs: int, events: int, spread: bool
) -> Dataset:
    """A database with finished and incomplete runs (4 units each) and ``events`` events.

    The events are all one run's log; or with ``spread``, the first incomplete
    run has a log of 150 (so that queries on it return the same rows at every
    size) and the rest are shared out over the other runs, as a long-lived
    daemon's file grows.
    """
    await create(path)
    live, log_run = new_run_id(), new_run_id()
    finished = [new_run_id() for _ in range(finished_runs)]
    incomplete = [new_run_id() for _ in range(incomplete_runs)]
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        _insert_runs(
            conn,
            [
                _run(live, "running", 0),
                _run(log_run, "running", 1),
                *(_run(run_id, "completed", n + 2) for n, run_id in enumerate(finished)),
                *(
                    _run(run_id, "running", n + 2 + len(finished))
                    for n, run_id in enumerate(incomplete)
                ),
            ],
        )
        every_run = [live, log_run, *finished, *incomplete]
        conn.executemany(
            "INSERT INTO units (id, run_id, unit_id, status) VALUES (?, ?, ?, 'pending')",
            ((f"{run_id}_u{n}", run_id, f"u{n}") for run_id in every_run for n in range(1, 5)),
        )
        if spread:
            logs = dict.fromkeys(every_run, 0)
            logs[incomplete[0]] = per_run = 150
            others = [run_id for run_id in every_run if run_id != incomplete[0]]
            for n in range(events - per_run):
                logs[others[n % len(others)]] += 1
        else:
            logs = {log_run: events}
            per_run = events
        _insert_events(
            conn,
            (
                (run_id, seq, PAYLOAD, NOW)
                for run_id, count in logs.items()
                for seq in range(1, count + 1)
            ),
        )
    return Dataset(
        live_run=live,
        unit=f"{live}_u1",
        log_run=log_run,
        log_events=per_run,
        incomplete=incomplete,
    )
