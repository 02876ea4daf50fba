"""``python -m bench.postgres [--quick] [--url URL]``: daemon_db on PostgreSQL beside SQLite.

The same calls through the same public API, on a SQLite file and on a
PostgreSQL database over loopback TCP (a throwaway server this run starts, as
``make test`` does, unless ``--url`` names one; it runs with fsync off, so the
figures are of the protocol and the engine, not of a disk). What a user pays
for one registry shared by many hosts is the round trip per call; what they
gain is that writes from many processes no longer queue behind one file lock.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from daemon_db import DB, Run, RunStatus, UnitRecord, UnitStatus

from .measure import latency
from .worker import new_run as _new_run


def new_run(n: int, *, prefix: str, status: RunStatus = RunStatus.PENDING) -> Run:
    return replace(_new_run(prefix, n), status=status)


FULL = {"samples": 1000, "warmup": 100, "writers": 4, "appends": 500}
QUICK = {"samples": 40, "warmup": 5, "writers": 2, "appends": 50}


async def operations(location: str, sizes: dict[str, int]) -> dict[str, dict[str, float]]:
    """p50 and p99 of each call, in microseconds."""
    samples, warmup = sizes["samples"], sizes["warmup"]
    total = samples + warmup
    async with DB.open(location) as db:
        runs = [await db.create_run(new_run(i, prefix="seed")) for i in range(total)]
        units = [await db.create_unit(UnitRecord(run_id=run.id, unit_id="u")) for run in runs]
        log = await db.create_run(new_run(0, prefix="log", status=RunStatus.RUNNING))
        for i in range(200):
            await db.append_event(log.id, "tick", payload={"i": i})
        return {
            "create_run": await latency(
                lambda i: db.create_run(new_run(i, prefix="made")), samples=samples, warmup=warmup
            ),
            "get_run": await latency(
                lambda i: db.get_run(runs[i].id), samples=samples, warmup=warmup
            ),
            "update_run_status": await latency(
                lambda i: db.update_run_status(runs[i].id, RunStatus.RUNNING),
                samples=samples,
                warmup=warmup,
            ),
            "update_unit_status": await latency(
                lambda i: db.update_unit_status(units[i].id, UnitStatus.RUNNING),
                samples=samples,
                warmup=warmup,
            ),
            "append_event": await latency(
                lambda i: db.append_event(log.id, "tick", payload={"i": i}),
                samples=samples,
                warmup=warmup,
            ),
            "list_events_since (last 100)": await latency(
                lambda i: db.list_events_since(log.id, 100), samples=samples, warmup=warmup
            ),
        }


async def appends_from_processes(location: str, sizes: dict[str, int]) -> float:
    """Appends per second to one run from ``writers`` processes at once."""
    async with DB.open(location) as db:
        run = await db.create_run(new_run(0, prefix="shared", status=RunStatus.RUNNING))
    child = Path(__file__).parent.parent / "tests" / "children" / "host.py"
    start = time.perf_counter()
    writers = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(child), "append", location, run.id, str(sizes["appends"])
        )
        for _ in range(sizes["writers"])
    ]
    assert [await writer.wait() for writer in writers] == [0] * len(writers)
    # Process start-up is in the time, alike for both engines.
    return sizes["writers"] * sizes["appends"] / (time.perf_counter() - start)


@contextlib.contextmanager
def server(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    sys.path.insert(0, str(Path(__file__).parent.parent))
    from tests import postgres_server

    bindir = postgres_server.find_bindir()
    if bindir is None:
        raise SystemExit("bench.postgres: no PostgreSQL server binaries (make test installs them)")
    with postgres_server.running_server(bindir) as running:
        yield running.new_database()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.postgres")
    parser.add_argument("--quick", action="store_true", help="few samples: checks it runs")
    parser.add_argument("--url", help="an empty PostgreSQL database to use (default: start one)")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory() as folder, server(args.url) as url:
        sqlite = str(Path(folder) / "bench.db")
        results: dict[str, Any] = {}
        for name, location in (("SQLite file", sqlite), ("PostgreSQL (loopback)", url)):
            results[name] = (
                asyncio.run(operations(location, sizes)),
                asyncio.run(appends_from_processes(location, sizes)),
            )
    names = list(results)
    print(f"daemon_db on each engine: p50 / p99 in µs ({sizes['samples']} calls each)")
    print(f"{'operation':32}" + "".join(f"{name:>28}" for name in names))
    for operation in results[names[0]][0]:
        cells = [results[name][0][operation] for name in names]
        print(
            f"{operation:32}"
            + "".join(f"{cell['p50_us']:>16,.0f} / {cell['p99_us']:>9,.0f}" for cell in cells)
        )
    rates = "".join(f"{results[name][1]:>28,.0f}" for name in names)
    print(f"{'appends/s, ' + str(sizes['writers']) + ' processes':32}{rates}")
    print(
        "PostgreSQL pays a network round trip (or several) per call; it gains one registry"
        " for many hosts, and writers that do not queue behind one file lock."
    )


if __name__ == "__main__":
    main()
