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
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, cast

from daemon_db import DB
from daemon_db import _timestamps as timestamps
from daemon_db._sqlite import maintenance

from . import bulk
from .__main__ import machine
from .measure import LoopWatch

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


def event_rows(folder: Path, count: int) -> dict[str, dict[str, float]]:
    """Bytes per event, a raw append's p50 and the cost of reading its timestamp back.

    - ``today``: the run's 26-character id in the row and in the
      (run_id, sequence) index, the timestamp as 27 characters of text;
    - ``run key``: the run as an integer key (a runs rowid) instead;
    - ``run key and integer time``: besides, the timestamp as microseconds
      since the epoch (an integer).
    """
    shapes = {
        "today": ("run_id TEXT NOT NULL", "created_at TEXT NOT NULL", True, True),
        "run key": (
            "run_key INTEGER NOT NULL",
            "created_at TEXT NOT NULL",
            False,
            True,
        ),
        "run key and integer time": (
            "run_key INTEGER NOT NULL",
            "created_at INTEGER NOT NULL",
            False,
            False,
        ),
    }
    results = {}
    for name, (run_column, time_column, text_run, text_time) in shapes.items():
        path = folder / f"rows-{name.replace(' ', '-')}.db"
        run_name = run_column.split()[0]
        with sqlite3.connect(path, isolation_level=None) as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(
                f"CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, {run_column},"
                " sequence INTEGER NOT NULL, event_type TEXT NOT NULL, unit_id TEXT,"
                f" payload_json TEXT, {time_column}, UNIQUE ({run_name}, sequence))"
            )
            runs = count // 10
            created: object = bulk._stamp(bulk.NOW) if text_time else 1_795_780_800_000_000
            conn.execute("BEGIN")
            conn.executemany(
                f"INSERT INTO events ({run_name}, sequence, event_type, unit_id, payload_json,"
                " created_at) VALUES (?, ?, 'unit_progress', 'unit-07', ?, ?)",
                (
                    (bulk._run_id(n) if text_run else n + 1_000_000, s, bulk.PAYLOAD, created)
                    for n in range(runs)
                    for s in range(1, 11)
                ),
            )
            conn.execute("COMMIT")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            size = path.stat().st_size
            key = bulk._run_id(runs - 1) if text_run else runs - 1 + 1_000_000
            times = []
            for _ in range(2000):
                start = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    f"INSERT INTO events ({run_name}, sequence, event_type, unit_id,"
                    " payload_json, created_at) SELECT ?, COALESCE(MAX(sequence), 0) + 1,"
                    f" 'unit_progress', 'unit-07', ?, ? FROM events WHERE {run_name} = ?",
                    (key, bulk.PAYLOAD, created, key),
                )
                conn.execute("COMMIT")
                times.append(time.perf_counter() - start)
        conn.close()
        results[name] = {
            "bytes_per_event": size / count,
            "append_p50_us": statistics.median(times) * 1e6,
            "decode_us": _decode_us(created),
        }
    return results


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
        results["resumable_ms"] = await p50(db.resumable_runs, 20)
        results["resumable_runs"] = len(await db.resumable_runs())
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
            f"{a['p50_ms']:.2f} / {a['p999_ms']:.2f} / {a['max_ms']:.1f} ms;"
            f" {a['wal_max_mb']:.0f} MB",
            "max <= 20 ms, p99.9 <= 5x p50, WAL <= 64 MB",
            a["max_ms"] <= 20 and a["p999_ms"] <= 5 * a["p50_ms"] and a["wal_max_mb"] <= 64,
        ),
        _row(
            "the same with SQLite's automatic checkpoint (the old way, switched on here)",
            "-",
            f"{ac['p50_ms']:.2f} / {ac['p999_ms']:.2f} / {ac['max_ms']:.1f} ms;"
            f" {ac['wal_max_mb']:.0f} MB",
            "(for comparison)",
            None,
        ),
        _row(
            f"an appender beside prune_runs ({bp['runs_removed']:,} runs, {bp['batches']} batches)",
            BEFORE["beside_prune"],
            f"p50 {bp['append_p50_ms']:.2f} ms, max {bp['append_max_ms']:.1f} ms;"
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
            f"{r['resumable_ms']:.1f} ms (2 statements)",
            "<= 40 ms",
            r["resumable_ms"] <= 40,
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
        " in brackets",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += [
        "",
        "Event rows (raw sqlite3, 10 events a run, 65-byte payload):",
        "",
        "| event row | bytes per event | append p50 | a timestamp read back |",
        "|---|---:|---:|---:|",
    ]
    for name, figures in r["event_rows"].items():
        size, append = figures["bytes_per_event"], figures["append_p50_us"]
        decode = figures["decode_us"]
        lines.append(f"| {name} | {size:.0f} | {append:.0f} us | {decode:.2f} us |")
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
