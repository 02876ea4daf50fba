"""``python -m bench [--quick] [--json]``: daemon_db side by side with its baselines, in one run.

Every figure comes from this one run on this machine; compare the ratios, not
the absolute times, across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from daemon_db import DB

from . import data, report
from .backends import STORES
from .measure import machine, quantiles, timings
from .worker import new_run

FULL = {
    "samples": 1000,
    "warmup": 100,
    "finished_runs": 1000,
    "log_events": 100_000,
    "appends": 3000,
    "burst": 10_000,
    "scales": [1_000, 10_000, 100_000, 1_000_000],
    "scale_samples": 90,
    "size_events": 10_000,
    "rounds": 3,
}
QUICK = {
    "samples": 40,
    "warmup": 5,
    "finished_runs": 100,
    "log_events": 2_000,
    "appends": 200,
    "burst": 500,
    "scales": [1_000, 10_000],
    "scale_samples": 5,
    "size_events": 500,
    "rounds": 1,
}


def run_worker(store: str, path: Path, **args: Any) -> dict[str, Any]:
    """Measure one store in a process of its own (see bench/worker.py)."""
    argument = json.dumps({"store": store, "path": str(path), **args})
    done = subprocess.run(
        [sys.executable, "-m", "bench.worker", argument],
        cwd=Path(__file__).parent.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {store} worker failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def measure_stores(
    template: Path, dataset: data.Dataset, folder: Path, sizes: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, float]]:
    """Every store's figures, in rounds that take turns so that drift hits all alike."""
    paths = {}
    for cls in STORES:
        paths[cls.name] = folder / f"{cls.name}.db"
        shutil.copyfile(template, paths[cls.name])
    rounds = sizes["rounds"]
    share = {**sizes, "samples": max(1, sizes["samples"] // rounds)}
    samples: dict[str, dict[str, list[float]]] = {}
    stores: dict[str, Any] = {}
    for turn in range(rounds):
        for name in [*paths, "round_trip"]:
            measured = run_worker(
                name,
                paths.get(name, template),
                sizes=share,
                dataset=dataclasses.asdict(dataset),
                tag=str(turn),
                load=turn == rounds - 1,
            )
            for operation, times in measured.pop("latency").items():
                samples.setdefault(name, {}).setdefault(operation, []).extend(times)
            if name != "round_trip":
                stores.setdefault(name, {}).update(measured)
    for name, by_operation in samples.items():
        if name != "round_trip":
            stores[name]["latency"] = {op: quantiles(times) for op, times in by_operation.items()}
    return stores, quantiles(samples["round_trip"]["round_trip"])


async def measure_scaling(folder: Path, sizes: dict[str, Any]) -> dict[str, dict[str, float]]:
    """p50 of the start-up queries as the file grows, the sizes taking turns."""
    built = {}
    for rows in sizes["scales"]:
        path = folder / f"scale-{rows}.db"
        built[rows] = await data.build(
            path, finished_runs=rows // 100, incomplete_runs=10, events=rows, spread=True
        )
    times: dict[str, dict[str, list[float]]] = {}
    dbs = {rows: await DB.open(folder / f"scale-{rows}.db") for rows in built}
    try:
        queries: dict[str, dict[int, Any]] = {}
        for rows, db in dbs.items():
            dataset = built[rows]
            first, last_100 = dataset.incomplete[0], max(0, dataset.log_events - 100)
            by_name: dict[str, Any] = {
                "list_incomplete_runs": lambda i, db=db: db.list_incomplete_runs(),
                "resumable_runs": lambda i, db=db: db.resumable_runs(),
                "get_next_sequence": lambda i, db=db, run=first: db.get_next_sequence(run),
                "list_events_since": lambda i, db=db, run=first, since=last_100: (
                    db.list_events_since(run, since)
                ),
            }
            for name, query in by_name.items():
                queries.setdefault(name, {})[rows] = query
        # Call by call, the sizes take turns. The machine's speed swings (the
        # same get_next_sequence took 90 µs a call for a while, then 290), and
        # a swing during one size's calls alone made a flat query look 2.4x.
        for name, by_rows in queries.items():
            for query in by_rows.values():
                await timings(query, range(3))
            for i in range(sizes["scale_samples"]):
                for rows, query in by_rows.items():
                    times.setdefault(name, {}).setdefault(str(rows), []).extend(
                        await timings(query, range(i, i + 1))
                    )
    finally:
        for db in dbs.values():
            await db.close()
        for rows in built:
            remove(folder / f"scale-{rows}.db")
    return {
        name: {rows: quantiles(samples)["p50_us"] for rows, samples in by_rows.items()}
        for name, by_rows in times.items()
    }


def remove(path: Path) -> None:
    """Delete a database file and its -wal and -shm files."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def measure_size(folder: Path, sizes: dict[str, Any]) -> float:
    """Bytes the file takes per 10,000 events appended by a daemon."""
    path = folder / "size.db"
    count = sizes["size_events"]
    async with DB.open(path) as db:
        run = await db.create_run(new_run("size", 0))
        payload = {"unit": "unit-07", "step": "compile", "pct": 50, "message": "building"}

        async def append(n: int) -> None:
            for _ in range(n):
                await db.append_event(run.id, "unit_progress", unit_id="unit-07", payload=payload)

        await asyncio.gather(*(append(count // 100) for _ in range(100)))
    empty = folder / "empty.db"
    await data.create(empty)
    grown = path.stat().st_size - empty.stat().st_size
    return grown * 10_000 / count


async def main(quick: bool) -> dict[str, Any]:
    sizes = QUICK if quick else FULL
    folder = Path(tempfile.mkdtemp(prefix="daemon-db-bench-"))
    try:
        template = folder / "template.db"
        dataset = await data.build(
            template,
            finished_runs=sizes["finished_runs"],
            incomplete_runs=10,
            events=sizes["log_events"],
            spread=False,
        )
        stores, round_trip = measure_stores(template, dataset, folder, sizes)
        results: dict[str, Any] = {
            "machine": machine(),
            "quick": quick,
            "sizes": sizes,
            "round_trip": round_trip,
            "stores": stores,
        }
        results["scaling"] = await measure_scaling(folder, sizes)
        results["bytes_per_10k_events"] = await measure_size(folder, sizes)
        results["targets"] = report.targets(results)
        return results
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the harness runs")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = asyncio.run(main(args.quick))
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(report.table(results))
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
