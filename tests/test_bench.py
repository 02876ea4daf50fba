"""The benchmark harness runs end to end (quick mode), so that it never rots.

No timing is asserted here: figures on a shared machine are noise; the
harness reports them, and the targets are read from a full `make bench` run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench import report, scale

ROOT = Path(__file__).parent.parent
STORES = {"sqlite3", "aiosqlite", "sqlalchemy", "daemon_db"}
OPERATIONS = {
    "create_run",
    "get_run",
    "update_run_status",
    "update_unit_status",
    "append_event",
    "list_runs_by_status",
    "list_events_since",
}


def test_the_quick_benchmark_runs_and_reports_every_figure() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert set(figures["stores"]) == STORES
    for store, measured in figures["stores"].items():
        assert set(measured["latency"]) == OPERATIONS, store
        for timing in measured["latency"].values():
            assert 0 < timing["p50_us"] <= timing["p99_us"]
        assert all(rate > 0 for rate in measured["appends_per_second"].values())
        if store != "sqlite3":  # synchronous: it has no event loop to stall
            streams = store in ("aiosqlite", "daemon_db")  # SQLAlchemy's is not measured
            assert set(measured["stall"]) == {"listing", "burst"} | (
                {"streaming"} if streams else set()
            )
            assert ("per_row_us" in measured) == streams
        else:
            assert set(measured["appends_per_second"]) == {"1", "1, commit per 100"}
    assert figures["round_trip"]["p50_us"] > 0
    assert set(figures["scaling"]) == {
        "list_incomplete_runs",
        "resumable_runs",
        "get_next_sequence",
        "list_events_since",
    }
    assert figures["bytes_per_10k_events"] > 0
    assert all({"target", "measured", "met"} <= set(check) for check in figures["targets"])

    # The readable table is made from the same figures (as JSON keeps them).
    text = report.table(figures)
    for check in figures["targets"]:
        assert check["target"] in text


def test_the_quick_scale_benchmark_runs_and_reports_every_figure() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.scale", "--quick", "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    for listing in ("iter_runs", "list_runs", "iter_events", "list_events", "cli_runs_json"):
        assert figures[listing]["peak_rss_mb"] > 0, listing
    assert figures["iter_runs"]["rows"] == figures["list_runs"]["rows"] == figures["runs"]
    assert figures["iter_events"]["rows"] == figures["list_events"]["rows"] == figures["runs"]
    assert figures["beside_prune"]["runs_removed"] > 0
    assert len(figures["prune_batch_ms"]) == 2
    assert figures["resumable_runs"] == figures["claimed_runs"] == 10
    assert figures["check_quick_problems"] == figures["check_problems"] == 0
    assert set(figures["event_rows"]) == set(scale.EVENT_SHAPES)
    assert {"today", "run key", "clustered on (run_key, sequence)"} <= set(scale.EVENT_SHAPES)
    assert "| what | before (issue 10) |" in scale.table(figures)


def test_the_postgresql_benchmark_runs(postgres_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.postgres", "--quick", "--url", postgres_url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "PostgreSQL (loopback)" in result.stdout
    assert "append_event" in result.stdout


def test_the_layers_benchmark_runs_and_names_every_layer() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.layers", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for name in (
        "append_event",
        "update_unit_status",
        "get_run",
        "list_runs_by_status",
        "engine SQL, one hop",
    ):
        assert name in result.stdout
