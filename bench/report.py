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
        limit = raw + 1.25 * trip
        check(
            f"{op} p50 <= sqlite3 p50 + 1.25 round trips",
            f"{ours:.0f} us <= {limit:.0f} us ({raw:.0f} + 1.25 x {trip:.0f})",
            ours <= limit,
        )
    for op in (*WRITES, *READS):
        ours, plain = _p50(results, "daemon_db", op), _p50(results, "aiosqlite", op)
        need = 1.3 if op in WRITES else 1.0
        check(
            f"{op}: {need}x as fast as straightforward aiosqlite (p50)",
            f"{plain / ours:.2f}x",
            plain / ours >= need,
        )
    for op in (*WRITES, *READS):
        ours, alchemy = _p50(results, "daemon_db", op), _p50(results, "sqlalchemy", op)
        check(f"{op}: faster than SQLAlchemy (p50)", f"{alchemy / ours:.2f}x", ours < alchemy)
    rates = results["stores"]["daemon_db"]["appends_per_second"]
    raw_rates = results["stores"]["sqlite3"]["appends_per_second"]
    check(
        "100 tasks appending: 2x the events/s of sqlite3 committing each",
        f"{rates['100']:,.0f}/s vs {raw_rates['1']:,.0f}/s = {rates['100'] / raw_rates['1']:.2f}x",
        rates["100"] >= 2 * raw_rates["1"],
    )
    stalls = results["stores"]["daemon_db"]["stall"]
    stream = stalls["streaming"]
    check(
        "worst event-loop stall iterating the log (iter_events) <= 10 ms, GC included",
        f"{stream['worst_ms']:.1f} ms (longest GC pause {stream['gc_longest_ms']:.1f} ms)",
        stream["worst_ms"] <= 10,
    )
    for moment in ("listing", "burst"):
        stall = stalls[moment]
        check(
            f"worst event-loop stall during the {moment} < 5 ms (GC pauses apart)",
            f"{stall['worst_ours_ms']:.1f} ms (with GC: {stall['worst_ms']:.1f} ms)",
            stall["worst_ours_ms"] < 5,
        )
    row = results["stores"]["daemon_db"]["per_row_us"]
    check(
        "iter_events per row <= 1.2x list_events_since per row",
        f"{row['iterate']:.2f} us vs {row['list']:.2f} us = {row['iterate'] / row['list']:.2f}x",
        row["iterate"] <= 1.2 * row["list"],
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


def _per_row_cell(row: dict[str, float] | None) -> str:
    return "-" if row is None else f"{row['list']:.2f} / {row['iterate']:.2f}"


def table(results: dict[str, Any]) -> str:
    """The results as aligned text tables."""
    stores = [s for s in STORE_ORDER if s in results["stores"]]
    machine = results["machine"]
    lines = [
        f"daemon_db benchmark ({'quick' if results['quick'] else 'full'} run), all figures"
        " from this one run",
        f"machine: {machine.get('processor', '?')}, {machine['cpus']} CPUs,"
        f" {machine.get('memory_gb', '?')} GB; {machine['platform']};"
        f" Python {machine['python']}, SQLite {machine['sqlite']}",
        "stores: sqlite3 = daemon_db's SQL called synchronously (the floor);"
        " aiosqlite = straightforward aiosqlite (autocommit, one statement and one"
        " execute_fetchall per call); sqlalchemy = SQLAlchemy 2 async Core",
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
    labels = {
        "1": "1 task",
        "1, commit per 100": "1 task, commit per 100",
        "10": "10 tasks",
        "100": "100 tasks",
    }
    for tasks, label in labels.items():
        cells = []
        for store in stores:
            rate = results["stores"][store]["appends_per_second"].get(tasks)
            cells.append("-" if rate is None else f"{rate:,.0f}")
        lines.append(f"{label:22}" + "".join(f"{cell:>20}" for cell in cells))

    lines += [
        "",
        "event-loop stall (1 ms ticker), ms: worst with GC / p99 / worst without GC pauses"
        " (longest GC pause)",
        f"{'':22}" + "".join(f"{s:>26}" for s in stores),
    ]
    for moment, title in (
        ("listing", "listing the log"),
        ("streaming", "iterating the log"),
        ("burst", "burst of appends"),
    ):
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

    per_row = {s: results["stores"][s].get("per_row_us") for s in stores}
    lines += [
        "",
        "the whole log, microseconds per row: listed at once / iterated a page at a time",
        f"{'':22}" + "".join(f"{s:>20}" for s in stores),
        f"{'':22}" + "".join(f"{_per_row_cell(row):>20}" for row in per_row.values()),
    ]
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
