"""One store, measured in a process of its own: ``python -m bench.worker ARGS_JSON``.

Each store runs alone in its process, so that no store's threads, connection
pools or garbage change another's figures. Prints one JSON object: latency
samples in seconds per operation, and with ``load`` the appends per second and
the event loop's stalls.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

import aiosqlite

from daemon_db import Run, RunStatus, UnitStatus

from .backends import STORES
from .data import Dataset
from .measure import LoopWatch, timings


def new_run(tag: str, n: int) -> Run:
    return Run(
        feature_branch=f"feature/bench-{tag}-{n}",
        repo_path="/srv/app",
        target_branch="main",
        tasks_dir="tasks",
        parallelism=2,
        config_json='{"retries": 2}',
    )


async def call(store: Any, method: str, *args: Any) -> Any:
    result = getattr(store, method)(*args)
    return await result if store.is_async else result


def operations(store: Any, dataset: Dataset, tag: str, count: int) -> dict[str, Any]:
    """The operations timed, each a function of the call's index."""
    runs = [new_run(tag, i) for i in range(count)]
    flip_run = [RunStatus.RUNNING, RunStatus.PENDING]
    flip_unit = [UnitStatus.RUNNING, UnitStatus.PENDING]
    return {
        "create_run": lambda i: store.create_run(runs[i]),
        "get_run": lambda i: store.get_run(dataset.live_run),
        "update_run_status": lambda i: store.update_run_status(dataset.live_run, flip_run[i % 2]),
        "update_unit_status": lambda i: store.update_unit_status(dataset.unit, flip_unit[i % 2]),
        "append_event": lambda i: store.append_event(dataset.live_run, {"i": i, "step": "test"}),
        "list_runs_by_status": lambda i: store.list_runs_by_status(RunStatus.COMPLETED),
        "list_events_since": lambda i: store.list_events_since(
            dataset.log_run, dataset.log_events - 100
        ),
    }


async def latency_samples(
    store: Any, dataset: Dataset, sizes: dict[str, Any], tag: str
) -> dict[str, list[float]]:
    n, warm = sizes["samples"], sizes["warmup"]
    samples: dict[str, list[float]] = {}
    for name, operation in operations(store, dataset, tag, n + warm).items():
        count = max(2, n // 10) if name == "list_runs_by_status" else n
        await timings(operation, range(warm))
        gc.collect()  # each operation starts from the same heap
        samples[name] = await timings(operation, range(warm, warm + count))
    return samples


async def load(store: Any, dataset: Dataset, sizes: dict[str, Any]) -> dict[str, Any]:
    """Appends per second with 1, 10 and 100 tasks, and the event loop's stalls."""
    result: dict[str, Any] = {"appends_per_second": {}, "stall": {}}

    async def append(count: int) -> None:
        for i in range(count):
            await call(store, "append_event", dataset.live_run, {"i": i})

    for tasks in (1, 10, 100) if store.is_async else (1,):
        per_task = sizes["appends"] // tasks
        gc.collect()
        start = time.perf_counter()
        await asyncio.gather(*(append(per_task) for _ in range(tasks)))
        result["appends_per_second"][str(tasks)] = per_task * tasks / (time.perf_counter() - start)
    if not store.is_async:  # the floor for grouped commits: one transaction per 100 events
        count = sizes["appends"] // 100 * 100
        gc.collect()
        start = time.perf_counter()
        for n in range(0, count, 100):
            store.append_events(dataset.live_run, [{"i": i} for i in range(n, n + 100)])
        result["appends_per_second"]["1, commit per 100"] = count / (time.perf_counter() - start)

    if store.is_async:
        gc.collect()
        async with LoopWatch() as watch:
            listed = await store.list_events_since(dataset.log_run, 0)
        assert len(listed) == dataset.log_events
        del listed
        result["stall"]["listing"] = watch.figures()
        if hasattr(store, "iter_events"):
            gc.collect()
            async with LoopWatch() as watch:
                streamed = 0
                async for _event in store.iter_events(dataset.log_run, 0):
                    streamed += 1
            assert streamed == dataset.log_events
            result["stall"]["streaming"] = watch.figures()
            result["per_row_us"] = await per_row(store, dataset)
        gc.collect()
        async with LoopWatch() as watch:
            await asyncio.gather(*(append(sizes["burst"] // 100) for _ in range(100)))
        result["stall"]["burst"] = watch.figures()
    return result


async def per_row(store: Any, dataset: Dataset) -> dict[str, float]:
    """Microseconds per row: listing the whole log at once, and iterating over it."""
    best = {"list": float("inf"), "iterate": float("inf")}
    for _ in range(3):
        gc.collect()
        start = time.perf_counter()
        listed = await store.list_events_since(dataset.log_run, 0)
        best["list"] = min(best["list"], time.perf_counter() - start)
        del listed
        gc.collect()
        start = time.perf_counter()
        async for _event in store.iter_events(dataset.log_run, 0):
            pass
        best["iterate"] = min(best["iterate"], time.perf_counter() - start)
    return {name: seconds * 1e6 / dataset.log_events for name, seconds in best.items()}


async def round_trips(path: Path, sizes: dict[str, Any]) -> dict[str, list[float]]:
    """One bare aiosqlite round trip: ``execute_fetchall("SELECT 1")``."""
    async with aiosqlite.connect(path) as conn:
        trip = {"round_trip": lambda i: conn.execute_fetchall("SELECT 1")}["round_trip"]
        await timings(trip, range(sizes["warmup"]))
        return {"round_trip": await timings(trip, range(sizes["samples"]))}


async def main(args: dict[str, Any]) -> dict[str, Any]:
    path, sizes = Path(args["path"]), args["sizes"]
    if args["store"] == "round_trip":
        return {"latency": await round_trips(path, sizes)}
    store = next(cls for cls in STORES if cls.name == args["store"])()
    dataset = Dataset(**args["dataset"])
    await call(store, "open", path)
    try:
        result = {"latency": await latency_samples(store, dataset, sizes, args["tag"])}
        if args["load"]:
            result |= await load(store, dataset, sizes)
    finally:
        await call(store, "close")
    return result


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
