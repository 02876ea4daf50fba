"""The targets of the performance issue, checked, and the results as a readable table."""

from __future__ import annotations

from typing import Any

WRITES = ("create_run", "update_run_status", "update_unit_status", "append_event")
READS = ("get_run", "list_runs_by_status", "list_events_since")
ONE_HOP = ("append_event", "create_run", "update_run_status", "update_unit_status", "get_run")
PARENT = {  # the parent design's own limits, in microseconds
    "create_run": 5_000,
    "update_unit_status": 2_000,
    "append_event": 1_000,
    "list_runs_by_status": 10_000,
}
STORE_ORDER = ("sqlite3", "aiosqlite", "sqlalchemy", "daemon_db")


def _p50(results: dict[str, Any], store: str, operation: str) -> float:
    value: float = results["stores"][store]["latency"][operation]["p50_us"]
    return value


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target: what it asks, the figure measured, and whether it is met."""
    checks: list[dict[str, Any]] = []

    def check(name: str, measured: str, met: bool) -> None:
        checks.append({"target": name, "measured": measured, "met": met})

    trip = results["round_trip"]["p50_us"]
    for op in ONE_HOP:
        ours, raw = _p50(results, "daemon_db", op), _p50(results, "sqlite3", op)
        limit = raw + 1.5 * trip
        check(
            f"{op} p50 <= sqlite3 p50 + 1.5 round trips",
            f"{ours:.0f} us <= {limit:.0f} us ({raw:.0f} + 1.5 x {trip:.0f})",
            ours <= limit,
        )
    for op in (*WRITES, *READS):
        ours, naive = _p50(results, "daemon_db", op), _p50(results, "aiosqlite", op)
        need = 1.5 if op in WRITES else 2.0
        check(
            f"{op}: {need}x faster than naive aiosqlite (p50)",
            f"{naive / ours:.2f}x",
            naive / ours >= need,
        )
    for op in (*WRITES, *READS):
        ours, alchemy = _p50(results, "daemon_db", op), _p50(results, "sqlalchemy", op)
        check(f"{op}: faster than SQLAlchemy (p50)", f"{alchemy / ours:.2f}x", ours < alchemy)
    ours_100 = results["stores"]["daemon_db"]["appends_per_second"]["100"]
    raw_1 = results["stores"]["sqlite3"]["appends_per_second"]["1"]
    check(
        "100 tasks appending: 2x the events/s of sqlite3 committing each",
        f"{ours_100:,.0f}/s vs {raw_1:,.0f}/s = {ours_100 / raw_1:.2f}x",
        ours_100 >= 2 * raw_1,
    )
    for moment, stall in results["stores"]["daemon_db"]["stall"].items():
        check(
            f"worst event-loop stall during the {moment} < 5 ms (GC pauses apart)",
            f"{stall['worst_ours_ms']:.1f} ms (GC: {stall['gc_longest_ms']:.1f} ms)",
            stall["worst_ours_ms"] < 5,
        )
    for query, by_rows in results["scaling"].items():
        rows = sorted(by_rows, key=int)
        ratio = by_rows[rows[-1]] / by_rows[rows[0]]
        check(
            f"{query} at {int(rows[-1]):,} rows within 2x of {int(rows[0]):,}",
            f"{ratio:.2f}x",
            ratio <= 2,
        )
    for op, limit in PARENT.items():
        ours = _p50(results, "daemon_db", op)
        check(f"{op} < {limit / 1000:g} ms (parent design)", f"{ours / 1000:.3f} ms", ours < limit)
    size = results["bytes_per_10k_events"] / 1e6
    check("< 100 MB per 10,000 events (parent design)", f"{size:.2f} MB", size < 100)
    return checks


def table(results: dict[str, Any]) -> str:
    """The results as aligned text tables."""
    stores = [s for s in STORE_ORDER if s in results["stores"]]
    machine = results["machine"]
    lines = [
        f"daemon_db benchmark ({'quick' if results['quick'] else 'full'} run): Python"
        f" {machine['python']}, SQLite {machine['sqlite']}, {machine['cpus']} CPUs,"
        f" {machine['platform']}",
        f"one bare aiosqlite round trip (SELECT 1): p50 {results['round_trip']['p50_us']:.0f} us",
        "",
        "latency, microseconds: p50 / p99",
        f"{'':22}" + "".join(f"{s:>20}" for s in stores),
    ]
    for op in (*WRITES, *READS):
        cells = []
        for store in stores:
            figures = results["stores"][store]["latency"][op]
            cells.append(f"{figures['p50_us']:>9.0f} / {figures['p99_us']:<8.0f}")
        lines.append(f"{op:22}" + "".join(f"{cell:>20}" for cell in cells))

    lines += ["", "appends per second", f"{'':22}" + "".join(f"{s:>20}" for s in stores)]
    for tasks in (1, 10, 100):
        cells = []
        for store in stores:
            rate = results["stores"][store]["appends_per_second"].get(str(tasks))
            cells.append("-" if rate is None else f"{rate:,.0f}")
        label = f"{tasks} task{'s' if tasks > 1 else ''}"
        lines.append(f"{label:22}" + "".join(f"{cell:>20}" for cell in cells))

    lines += [
        "",
        "event-loop stall, ms: worst / p99 / worst without GC pauses (longest GC pause)",
        f"{'':22}" + "".join(f"{s:>26}" for s in stores),
    ]
    for moment, title in (("listing", "listing the log"), ("burst", "burst of appends")):
        cells = []
        for store in stores:
            stall = results["stores"][store]["stall"].get(moment)
            cells.append(
                "-"
                if stall is None
                else f"{stall['worst_ms']:.1f} / {stall['p99_ms']:.1f} / "
                f"{stall['worst_ours_ms']:.1f} ({stall['gc_longest_ms']:.0f})"
            )
        lines.append(f"{title:22}" + "".join(f"{cell:>26}" for cell in cells))

    scales = sorted({rows for by_rows in results["scaling"].values() for rows in by_rows}, key=int)
    lines += [
        "",
        "daemon_db start-up queries, p50 microseconds, by events in the file",
        f"{'':22}" + "".join(f"{int(rows):>12,}" for rows in scales),
    ]
    for query, by_rows in results["scaling"].items():
        lines.append(f"{query:22}" + "".join(f"{by_rows[rows]:>12.0f}" for rows in scales))
    lines += [
        "",
        f"file size per 10,000 events: {results['bytes_per_10k_events'] / 1e6:.2f} MB",
        "",
        "targets",
    ]
    for item in results["targets"]:
        mark = "met" if item["met"] else "MISSED"
        lines.append(f"  [{mark:>6}] {item['target']}: {item['measured']}")
    return "\n".join(lines)
