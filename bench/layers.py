"""``python -m bench.layers [--quick]``: where a call's time goes, layer by layer.

The same four writes (a create, a run's and a unit's status change, an
append), read and listing (1,000 runs of one status), timed in one process in
turns (so that a busy moment of the machine hits every layer alike):

- ``aiosqlite``: the straightforward aiosqlite call of ``make bench`` (one
  autocommit statement, one hop to aiosqlite's thread).
- ``engine SQL, one hop``: daemon_db's own SQL function for the call, in its
  transaction, sent to the connection's thread with one bare hop: what the
  call would cost with nothing of the front around it.
- ``+ write queue``: the same through the writer's queue (group commit, the
  checkpointer's hooks).
- ``daemon_db``: the public call (argument checks, JSON, the engine seam).

A call's cost above the first line is what daemon_db adds; the differences
between lines say which layer adds it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from daemon_db import DB, Run, RunStatus, UnitRecord, UnitStatus
from daemon_db._sqlite import bridge, events, owners, runs, units, work

from .backends import StraightAiosqlite

Call = Callable[[int], Awaitable[Any]]


def new_run(status: RunStatus) -> Run:
    return Run(
        feature_branch=None,
        repo_path="/srv/app",
        target_branch="main",
        tasks_dir="tasks",
        parallelism=2,
        status=status,
    )


async def measure(rounds: int, per_round: int) -> dict[str, dict[str, float]]:
    """p50 in microseconds of each operation at each layer."""
    with tempfile.TemporaryDirectory() as folder:
        ours_path, theirs_path = Path(folder) / "ours.db", Path(folder) / "theirs.db"
        async with DB.open(theirs_path) as seed:  # the same schema and rows for aiosqlite
            theirs_run = await seed.create_run(new_run(RunStatus.RUNNING))
            theirs_unit = await seed.create_unit(UnitRecord(run_id=theirs_run.id, unit_id="u"))
            await _listed_runs(seed)
        theirs = StraightAiosqlite()
        await theirs.open(theirs_path)
        try:
            async with DB.open(ours_path) as db:
                ours_run = await db.create_run(new_run(RunStatus.RUNNING))
                ours_unit = await db.create_unit(UnitRecord(run_id=ours_run.id, unit_id="u"))
                await _listed_runs(db)
                layers = _layers(
                    db,
                    theirs,
                    (theirs_run.id, theirs_unit.id),
                    (ours_run, ours_unit),
                    rounds * per_round,
                )
                return await _timed(layers, rounds, per_round)
        finally:
            await theirs.close()


LISTED = 1000
"""Runs in the listing timed (all cancelled: the one status listed)."""


async def _listed_runs(db: DB) -> None:
    async with db.transaction():
        for _ in range(LISTED):
            await db.create_run(new_run(RunStatus.CANCELLED))


def _layers(
    db: Any,
    theirs: StraightAiosqlite,
    their_ids: tuple[str, str],
    ours: tuple[Run, UnitRecord],
    creates: int,
) -> dict[str, dict[str, Call]]:
    (their_run, their_unit), (run, unit) = their_ids, ours
    writer, reader, path, owner = db._writer, db._reader, db.path, db._owner
    # Each layer creates its own runs, made beforehand (building one is not timed);
    # finished, so that they join neither an active branch nor the listing.
    fresh = {
        layer: iter([new_run(RunStatus.COMPLETED) for _ in range(creates)])
        for layer in ("aiosqlite", "engine SQL, one hop", "+ write queue", "daemon_db")
    }
    run_flip = [RunStatus.PENDING, RunStatus.RUNNING]
    payload = {"unit": "unit-07", "step": "compile", "pct": 50}
    text = json.dumps(payload, separators=(",", ":"))
    flip = [UnitStatus.RUNNING, UnitStatus.PENDING]
    listing = partial(
        runs.list_page,
        statuses={RunStatus.CANCELLED},
        feature_branch=None,
        repo_path=None,
        after=None,
        newest_first=False,
        limit=LISTED + 1,
    )

    def append_sql(conn: Any) -> Any:
        return events.append(conn, run_id=run.id, event_type="progress", unit_id=None, payload=text)

    def status_sql(i: int) -> Callable[[Any], Any]:
        return partial(units.update_status, unit_record_id=unit.id, status=flip[i % 2], error=None)

    def create_sql(layer: str) -> Callable[[Any], Any]:
        return partial(owners.create_run, run=next(fresh[layer]), owner=owner)

    def run_status_sql(i: int) -> Callable[[Any], Any]:
        return partial(
            owners.update_run_status,
            run_id=run.id,
            status=run_flip[i % 2],
            error=None,
            expected=None,
            owner=owner,
        )

    return {
        "create_run": {
            "aiosqlite": lambda i: theirs.create_run(next(fresh["aiosqlite"])),
            "engine SQL, one hop": lambda i: bridge.submit(
                writer.connection,
                partial(work.write_one, work=create_sql("engine SQL, one hop"), path=path),
            ),
            "+ write queue": lambda i: writer.submit(create_sql("+ write queue")),
            "daemon_db": lambda i: db.create_run(next(fresh["daemon_db"])),
        },
        "update_run_status": {
            "aiosqlite": lambda i: theirs.update_run_status(their_run, run_flip[i % 2]),
            "engine SQL, one hop": lambda i: bridge.submit(
                writer.connection, partial(work.write_one, work=run_status_sql(i), path=path)
            ),
            "+ write queue": lambda i: writer.submit(run_status_sql(i)),
            "daemon_db": lambda i: db.update_run_status(run.id, run_flip[i % 2]),
        },
        "append_event": {
            "aiosqlite": lambda i: theirs.append_event(their_run, payload),
            "engine SQL, one hop": lambda i: bridge.submit(
                writer.connection, partial(work.write_one, work=append_sql, path=path)
            ),
            "+ write queue": lambda i: writer.submit(append_sql),
            "daemon_db": lambda i: db.append_event(run.id, "progress", payload=payload),
        },
        "update_unit_status": {
            "aiosqlite": lambda i: theirs.update_unit_status(their_unit, flip[i % 2]),
            "engine SQL, one hop": lambda i: bridge.submit(
                writer.connection, partial(work.write_one, work=status_sql(i), path=path)
            ),
            "+ write queue": lambda i: writer.submit(status_sql(i)),
            "daemon_db": lambda i: db.update_unit_status(unit.id, flip[i % 2]),
        },
        "get_run": {
            "aiosqlite": lambda i: theirs.get_run(their_run),
            "engine SQL, one hop": lambda i: bridge.submit(
                reader, partial(work.read, work=partial(runs.get, run_id=run.id), path=path)
            ),
            "daemon_db": lambda i: db.get_run(run.id),
        },
        "list_runs_by_status": {
            "aiosqlite": lambda i: theirs.list_runs_by_status(RunStatus.CANCELLED),
            "engine SQL, one hop": lambda i: bridge.submit(
                reader, partial(work.read, work=listing, path=path)
            ),
            "daemon_db": lambda i: db.list_runs_by_status(RunStatus.CANCELLED),
        },
    }


async def _timed(
    layers: dict[str, dict[str, Call]], rounds: int, per_round: int
) -> dict[str, dict[str, float]]:
    samples: dict[str, dict[str, list[float]]] = {
        op: {layer: [] for layer in calls} for op, calls in layers.items()
    }
    clock = time.perf_counter
    for turn in range(rounds):
        for op, calls in layers.items():
            order = list(calls.items())
            times = per_round if op != "list_runs_by_status" else max(1, per_round // 20)
            for layer, call in order if turn % 2 else reversed(order):
                for i in range(times):
                    start = clock()
                    await call(i)
                    samples[op][layer].append(clock() - start)
    return {
        op: {layer: statistics.median(times) * 1e6 for layer, times in by_layer.items()}
        for op, by_layer in samples.items()
    }


def report(figures: dict[str, dict[str, float]]) -> str:
    lines = ["Where a call's time goes (p50 in µs, one process, layers in turns):", ""]
    for op, by_layer in figures.items():
        lines.append(f"  {op}")
        base = by_layer["aiosqlite"]
        for layer, p50 in by_layer.items():
            lines.append(f"    {layer:22} {p50:7.0f}  ({base / p50:.2f}x aiosqlite)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.layers", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few samples: checks it runs")
    args = parser.parse_args(argv)
    rounds, per_round = (2, 10) if args.quick else (20, 200)
    print(report(asyncio.run(measure(rounds, per_round))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
