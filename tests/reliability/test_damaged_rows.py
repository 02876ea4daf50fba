"""Values another tool wrote into the file: a typed error naming where, and one bad row
never stops the other runs from resuming."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

import daemon_db._sqlite.db
from daemon_db import DB, DamagedRecordError, DatabaseError, Run, RunStatus, UnitStatus
from daemon_db._sqlite import maintenance
from tests.helpers import dump, new_run, new_unit, report

OLD = datetime(2020, 1, 1, tzinfo=UTC)

# (table, column, value another tool wrote, what the error says)
DAMAGE = [
    ("runs", "started_at", "yesterday", "not a timestamp"),
    ("runs", "started_at", "", "not a timestamp"),  # falsy: once taken for "not started"
    ("runs", "completed_at", "2024-01-01 10:00", "time zone"),  # naive: its moment is unknown
    ("runs", "status", "paused", "not a run status"),
    ("runs", "parallelism", "four", "integer"),
    ("runs", "parallelism", -1, "integer >= 1"),  # an int no Run holds
    ("units", "started_at", "soon", "not a timestamp"),
    ("units", "status", "stuck", "not a unit status"),
]


def _edit(path: Path, sql: str, *params: object) -> None:
    """Change the file as another tool would: plain sqlite3, with the checks off."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute(sql, params)


@pytest.mark.parametrize(("table", "column", "value", "says"), DAMAGE)
async def test_a_damaged_value_gets_a_typed_error_naming_table_row_and_column(
    db_path: Path, table: str, column: str, value: object, says: str
) -> None:
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run(status="running"))
        unit = await db.create_unit(new_unit(run, "u1", status="running"))
        healthy = await db.create_run(new_run(status="running"))
        await db.create_unit(new_unit(healthy, "u1"))
    record_id = run.id if table == "runs" else unit.id
    _edit(db_path, f"UPDATE {table} SET {column} = ? WHERE id = ?", value, record_id)

    async with DB.open(db_path) as db:
        read = db.get_run(run.id) if table == "runs" else db.get_unit(unit.id)
        with pytest.raises(DamagedRecordError) as raised:
            await read
        error = raised.value
        assert isinstance(error, DatabaseError)
        assert (error.table, error.record_id, error.column, error.value) == (
            table,
            record_id,
            column,
            value,
        )
        assert error.path == str(db_path)
        for part in (table, record_id, column, repr(value), says):
            assert part in str(error)

        # Start-up resumes every healthy run and reports the damaged one apart.
        found = await db.resumable_runs()
        assert [item.run.id for item in found] == [healthy.id]
        assert [(e.table, e.record_id, e.column) for e in found.damaged] == [
            (table, record_id, column)
        ]
        problems = await db.check()
        assert any(table in p and record_id in p and column in p for p in problems), problems

        if table == "runs":  # writes that read the row first say so too
            with pytest.raises(DamagedRecordError):
                await db.update_run_status(run.id, RunStatus.FAILED)
            with pytest.raises(DamagedRecordError):
                await db.list_runs()
            if column == "status":  # a follower reads the status alone
                with pytest.raises(DamagedRecordError, match=f"{record_id}.*status"):
                    await anext(aiter(db.follow_events(run.id)))
                followed = await _cli(db_path, "events", run.id, "--follow")
                assert followed.returncode == 1
                assert followed.stderr.count("\n") == 1, followed.stderr
                assert "damaged runs row" in followed.stderr
        else:
            with pytest.raises(DamagedRecordError):
                await db.update_unit_status(unit.id, UnitStatus.FAILED)
        assert await db.delete_run(run.id)  # the way out: the run can still be removed
        assert await db.check() == []


async def test_a_damaged_event_is_named_when_read(db_path: Path) -> None:
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run())
        event = await db.append_event(run.id, "e", payload={"a": 1})
    _edit(db_path, "UPDATE events SET created_at = 'noon' WHERE id = ?", event.id)
    async with DB.open(db_path) as db:
        with pytest.raises(DamagedRecordError) as raised:
            await db.list_events(run.id)
        assert (raised.value.table, raised.value.record_id) == ("events", event.id)
        assert any("created_at" in p for p in await db.check())


async def test_an_event_sequence_that_is_not_a_whole_number_is_named_when_read(
    db_path: Path,
) -> None:
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run())
        events = [await db.append_event(run.id, "e") for _ in range(3)]
    for value in (2.5, "two"):  # (text "2" would be stored as the integer)
        _edit(db_path, "UPDATE events SET sequence = ? WHERE id = ?", value, events[1].id)
        async with DB.open(db_path) as db:
            with pytest.raises(DamagedRecordError) as raised:
                await db.list_events(run.id)
            error = raised.value
            assert (error.table, error.record_id, error.column) == (
                "events",
                events[1].id,
                "sequence",
            )
            assert any("sequence" in p for p in await db.check())


@pytest.mark.parametrize("value", [2**63 - 1, 2.5, "two", b"\x02"])
async def test_an_append_after_a_sequence_another_tool_broke_stores_nothing(
    db_path: Path, value: object
) -> None:
    # SQLite's MAX(sequence) + 1 made the largest integer a float, stored and
    # acknowledged; text sorts after numbers, and its + 1 was a taken 1.
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run())
        events = [await db.append_event(run.id, "e") for _ in range(3)]
    _edit(db_path, "UPDATE events SET sequence = ? WHERE id = ?", value, events[2].id)
    before = dump(db_path)
    async with DB.open(db_path) as db:
        for in_a_block in (False, True):
            with pytest.raises(DamagedRecordError) as raised:
                if in_a_block:
                    async with db.transaction() as tx:
                        await tx.append_event(run.id, "next")
                else:
                    await db.append_event(run.id, "next")
            error = raised.value
            assert (error.table, error.record_id, error.column, error.value) == (
                "events",
                events[2].id,
                "sequence",
                value,
            )
    assert dump(db_path) == before


@pytest.mark.parametrize("value", [2.5, "two", b"\x02"])
async def test_a_prune_removes_a_run_whose_sequences_another_tool_broke(
    db_path: Path, value: object
) -> None:
    # The highest sequence sizes a prune's batch: text made it raise TypeError.
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run())
        events = [await db.append_event(run.id, "e") for _ in range(3)]
        await db.complete_run(run.id, RunStatus.COMPLETED)
    _edit(db_path, "UPDATE events SET sequence = ? WHERE id = ?", value, events[1].id)
    async with DB.open(db_path) as db:
        assert [r.id for r in await db.prune_runs(datetime.now(UTC), dry_run=True)] == [run.id]
        assert [r.id for r in await db.prune_runs(datetime.now(UTC))] == [run.id]
        assert await db.check() == []


async def _cli(db_path: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "daemon_db", *command, "--db", str(db_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_damaged_row_past_the_limit_fails_no_listing(db_path: Path) -> None:
    # A listing reads one row more than its limit to say whether more follow:
    # that row is not shown, so its damage is not the listing's.
    async with DB.open(db_path) as db:
        runs = [await db.create_run(new_run()) for _ in range(4)]
        events = [await db.append_event(runs[0].id, "e") for _ in range(4)]
    _edit(db_path, "UPDATE runs SET started_at = 'yesterday' WHERE id = ?", runs[3].id)
    _edit(db_path, "UPDATE events SET created_at = 'noon' WHERE id = ?", events[3].id)
    async with DB.open(db_path) as db:
        assert await db.list_runs(limit=3) == runs[:3]
        assert [run async for run in db.iter_runs(limit=3)] == runs[:3]
        assert await db.list_runs(limit=1, after=runs[1].id) == runs[2:3]
        with pytest.raises(DamagedRecordError):
            await db.list_runs(limit=4)
    for command, shown in [
        (["runs", "--limit", "3"], 3),
        (["events", runs[0].id, "--limit", "3"], 3),
    ]:
        result = await _cli(db_path, *command, "--nl")
        assert result.returncode == 0
        assert result.stderr.startswith(f"daemon-db: more {command[0]} follow")
        assert len(result.stdout.splitlines()) == shown
    result = await _cli(db_path, "runs", "--limit", "4", "--nl")
    assert result.returncode == 1
    assert runs[3].id in result.stderr


async def test_a_blob_another_tool_wrote_is_one_error_line_in_every_form(db_path: Path) -> None:
    async with DB.open(db_path) as db:
        runs = [await db.create_run(new_run()) for _ in range(3)]
    _edit(db_path, "UPDATE runs SET error = ? WHERE id = ?", b"ABC", runs[1].id)
    for command, form in itertools.product(
        ("runs", "resumable"), ("--json", "--nl", "--csv", None)
    ):
        result = await _cli(db_path, command, *([form] if form else []))
        assert result.returncode == 1, (command, form)
        # A listing stops at the row; resumable leaves the run out, as a daemon would.
        said = "error" if command == "runs" else "left out"
        assert result.stderr.startswith(f"daemon-db: {said}: damaged runs row"), result.stderr
        assert "error=b'ABC' is a blob" in result.stderr
        assert len(result.stderr.splitlines()) == 1  # no traceback
        assert runs[0].id in result.stdout  # what came before it is shown
        if form == "--json":
            shown = [runs[0].id] if command == "runs" else [runs[0].id, runs[2].id]
            assert [run["id"] for run in json.loads(result.stdout)] == shown


async def test_iterating_yields_every_row_before_a_damaged_one_then_names_it(
    db_path: Path,
) -> None:
    async with DB.open(db_path) as db:
        runs = [await db.create_run(new_run()) for _ in range(5)]
        events = [await db.append_event(runs[0].id, "e") for _ in range(10)]
    _edit(db_path, "UPDATE events SET created_at = 'noon' WHERE id = ?", events[6].id)
    _edit(db_path, "UPDATE runs SET status = 'paused' WHERE id = ?", runs[3].id)
    async with DB.open(db_path) as db:
        for listing, healthy, damaged in [
            (db.iter_events(runs[0].id), events[:6], ("events", events[6].id)),
            (db.iter_runs(), runs[:3], ("runs", runs[3].id)),
        ]:
            read = []
            with pytest.raises(DamagedRecordError) as raised:
                async for record in listing:
                    read.append(record)
            assert read == healthy  # the damaged row's page-mates before it too
            assert (raised.value.table, raised.value.record_id) == damaged
    for command, healthy_ids, damaged_id in [
        (["events", runs[0].id], [str(e.sequence) for e in events[:6]], events[6].id),
        (["runs"], [run.id for run in runs[:3]], runs[3].id),
    ]:
        result = await _cli(db_path, *command, "--nl")
        assert result.returncode != 0
        shown = [line for line in result.stdout.splitlines() if line]
        key = "sequence" if command[0] == "events" else "id"
        assert [str(json.loads(line)[key]) for line in shown] == healthy_ids
        assert str(damaged_id) in result.stderr


async def test_check_finds_every_kind_of_damaged_value_and_the_command_line_exits_1(
    db_path: Path,
) -> None:
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run())
        unit = await db.create_unit(new_unit(run, "u1"))
        event = await db.append_event(run.id, "e", payload=[1])
    edits = [
        ("runs", "config_json", "[1, 2]", run.id),
        ("runs", "feature_branch", b"\xff\x00", run.id),  # a blob: TEXT affinity keeps it
        ("runs", "started_at", "2024-01-01T10:00:00+02:00", run.id),  # readable, but sorts wrong
        ("units", "completed_at", "2024-01-01", unit.id),
        ("events", "payload_json", "{not json", event.id),
    ]
    for table, column, value, record_id in edits:
        _edit(db_path, f"UPDATE {table} SET {column} = ? WHERE id = ?", value, record_id)
        async with DB.open(db_path, readonly=True) as db:
            problems = await db.check()
        assert any(f"{table} row" in p and column in p for p in problems), (column, problems)
    # An owner on another machine whose lease never ends, as 'never' would sort.
    _edit(
        db_path,
        "INSERT INTO owners (id, name, host, machine, pid, started, lease_until)"
        " VALUES ('o1', 'elsewhere', 'h', 'another machine', 7, NULL, 'never')",
    )
    async with DB.open(db_path, readonly=True) as db:
        problems = await db.check()
    assert any("owners row 'o1': lease_until='never'" in p for p in problems), problems
    result = await _cli(db_path, "check")
    assert result.returncode == 1
    assert "damaged value" in result.stdout
    report(
        f"damaged rows: {len(DAMAGE)} kinds of value written by another tool, and text that"
        f" is not UTF-8 in {len(NOT_UTF8)} columns: each a DamagedRecordError naming table, row"
        " and column; start-up resumes the healthy runs and lists the damaged apart; check"
        " finds them"
    )


async def test_a_claim_leaves_a_run_whose_units_are_damaged_where_it_is(db_path: Path) -> None:
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run(status="running"))
        unit = await db.create_unit(new_unit(run, "u1"))
    _edit(db_path, "UPDATE units SET started_at = ? WHERE id = ?", "soon", unit.id)

    async with DB.open(db_path, owner="first") as first:
        claimed = await first.claim_resumable_runs()
        assert claimed.resumed == []
        assert [(e.table, e.record_id) for e in claimed.damaged] == [("units", unit.id)]
        # Not taken (ClaimedRuns.damaged says so): once an operator mends the unit,
        # another daemon claims the run, rather than it staying held by one that
        # will never resume it.
        _edit(db_path, "UPDATE units SET started_at = NULL WHERE id = ?", unit.id)
        async with DB.open(db_path, owner="second") as second:
            [resumed] = (await second.claim_resumable_runs()).resumed
            assert resumed.run.id == run.id
            assert resumed.owner == "second"


# Before, between and after the five statuses as SQLite orders them (the column
# stores a number as text; a blob sorts after all text).
STRANGE_STATUSES = ["", "0", "RUNNING", "cancelled ", "completes", "go", "paused", "z", b"x"]


async def test_start_up_reports_every_run_whose_status_is_none_of_the_five(
    db_path: Path,
) -> None:
    async with DB.open(db_path) as db:
        strange = [await db.create_run(new_run(status="running")) for _ in STRANGE_STATUSES]
        healthy = await db.create_run(new_run(status="running"))
        for status in RunStatus:
            if status not in (RunStatus.PENDING, RunStatus.RUNNING):
                await db.create_run(new_run(status=status))
    edits = list(zip(strange, STRANGE_STATUSES, strict=True))
    for run, status in edits:
        _edit(db_path, "UPDATE runs SET status = ? WHERE id = ?", status, run.id)
    expected = sorted((run.id, "status", status) for run, status in edits)

    async with DB.open(db_path, owner="next") as db:
        found = await db.resumable_runs()
        assert [item.run.id for item in found] == [healthy.id]
        assert sorted((e.record_id, e.column, e.value) for e in found.damaged) == expected
        claimed = await db.claim_resumable_runs()
        assert [item.run.id for item in claimed.resumed] == [healthy.id]
        assert sorted((e.record_id, e.column, e.value) for e in claimed.damaged) == expected
        with contextlib.closing(sqlite3.connect(db_path)) as conn:  # left where they are
            held = conn.execute("SELECT id FROM runs WHERE owner_id IS NOT NULL").fetchall()
        assert held == [(healthy.id,)]

    # The command line lists the healthy run, and names each run left out apart.
    result = await _cli(db_path, "resumable", "--json")
    assert result.returncode == 1
    assert [item["id"] for item in json.loads(result.stdout)] == [healthy.id]
    left_out = result.stderr.splitlines()
    assert len(left_out) == len(strange)
    for run in strange:
        assert sum(run.id in line and "status" in line for line in left_out) == 1, left_out


@pytest.mark.parametrize("value", ["two", 1.5], ids=["text", "real"])
async def test_attempts_another_tool_wrote_stop_no_claim(db_path: Path, value: object) -> None:
    # Text passes the column's CHECK (attempts >= 0): in SQLite text sorts after numbers.
    with contextlib.suppress(RuntimeError):
        async with DB.open(db_path, owner="dead") as dead:
            damaged = await dead.create_run(new_run(status="running"))
            healthy = await dead.create_run(new_run(status="running"))
            raise RuntimeError("the daemon died")
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE runs SET attempts = ? WHERE id = ?", (value, damaged.id))

    async with DB.open(db_path, owner="next") as db:
        found = await db.resumable_runs()
        assert [item.run.id for item in found] == [healthy.id]
        assert [(e.table, e.record_id, e.column) for e in found.damaged] == [
            ("runs", damaged.id, "attempts")
        ]
        claimed = await db.claim_resumable_runs()
        assert [(item.run.id, item.attempt) for item in claimed.resumed] == [(healthy.id, 1)]
        assert [(e.table, e.record_id, e.column) for e in claimed.damaged] == [
            ("runs", damaged.id, "attempts")
        ]


@pytest.mark.parametrize(
    ("stored", "value"),
    [
        ("'two'", "two"),
        ("2.5", 2.5),
        (str(2**63 - 1), 2**63 - 1),
        ("CAST(X'FF' AS TEXT)", b"\xff"),  # stopped every start-up
    ],
    ids=["text", "real", "the largest integer", "not UTF-8"],
)
async def test_a_largest_sequence_another_tool_wrote_is_reported_at_start_up(
    db_path: Path, stored: str, value: object
) -> None:
    # SQLite's MAX(sequence) + 1 had made them 1 (text sorts after numbers), 3.5
    # and a float: handed to the daemon as the next sequence, whose first
    # append then refused.
    with contextlib.suppress(RuntimeError):
        async with DB.open(db_path, owner="dead") as dead:
            damaged = await dead.create_run(new_run(status="running"))
            healthy = await dead.create_run(new_run(status="running"))
            for run in (damaged, healthy):
                for _ in range(2):
                    await dead.append_event(run.id, "tick")
            raise RuntimeError("the daemon died")
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        (event_id,) = conn.execute(
            "SELECT id FROM events WHERE run_id = ? AND sequence = 2", (damaged.id,)
        ).fetchone()
        conn.execute(f"UPDATE events SET sequence = {stored} WHERE id = ?", (event_id,))

    async with DB.open(db_path, owner="next") as db:
        expected = [("events", event_id, "sequence", value)]
        found = await db.resumable_runs()
        assert [(item.run.id, item.next_sequence) for item in found] == [(healthy.id, 3)]
        assert [(e.table, e.record_id, e.column, e.value) for e in found.damaged] == expected
        claimed = await db.claim_resumable_runs()
        assert [(item.run.id, item.next_sequence) for item in claimed.resumed] == [(healthy.id, 3)]
        assert [(e.table, e.record_id, e.column, e.value) for e in claimed.damaged] == expected


@pytest.mark.parametrize("pid", ["abc", 2**62], ids=["text", "past a pid_t"])
async def test_an_owner_pid_another_tool_wrote_stops_no_start_up(
    db_path: Path, pid: object
) -> None:
    with contextlib.suppress(RuntimeError):
        async with DB.open(db_path, owner="dead") as dead:
            held = await dead.create_run(new_run(status="running"))
            raise RuntimeError("the daemon died")
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute(
            "UPDATE owners SET pid = ?, lease_until = '2999-01-01T00:00:00.000000Z'", (pid,)
        )

    async with DB.open(db_path, owner="next") as db:
        # Its process cannot be asked about: the lease alone tells, as for an
        # owner on another machine (it raised TypeError or OverflowError).
        [found] = await db.resumable_runs()
        assert (found.run.id, found.owner, found.owner_alive) == (held.id, "dead", True)
        assert (await db.claim_resumable_runs()).resumed == []


@pytest.mark.parametrize("max_attempts", [None, 3])
async def test_the_largest_attempts_stops_no_claim(db_path: Path, max_attempts: int | None) -> None:
    # 2**63 - 1 is an integer SQLite stores (check() finds nothing wrong), but one
    # attempt more is not: the claim raised OverflowError, and nothing resumed.
    with contextlib.suppress(RuntimeError):
        async with DB.open(db_path, owner="dead") as dead:
            run = await dead.create_run(new_run(status="running"))
            raise RuntimeError("the daemon died")
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE runs SET attempts = ?", (2**63 - 1,))

    async with DB.open(db_path, owner="next") as db:
        assert await db.check() == []
        claimed = await db.claim_resumable_runs(max_attempts=max_attempts)
        taken = [item.run.id for item in claimed.resumed] + [r.id for r in claimed.abandoned]
        assert taken == [run.id]
        assert await db.check() == []


async def test_a_run_id_another_tool_wrote_as_a_blob_stops_no_start_up(db_path: Path) -> None:
    # Listings do not check ids' types (check() does); start-up sorts and writes
    # run ids back, and a blob failed both for every run (TypeError).
    with contextlib.suppress(RuntimeError):
        async with DB.open(db_path, owner="dead") as dead:
            healthy = await dead.create_run(new_run(status="running"))
            raise RuntimeError("the daemon died")
    blob = b"\x01\x02"
    _edit(
        db_path,
        "INSERT INTO runs (id, repo_path, target_branch, tasks_dir, status)"
        " VALUES (?, '/srv/app', 'main', 'tasks', 'pending')",
        blob,
    )

    async with DB.open(db_path, owner="next") as db:
        found = await db.resumable_runs()
        assert [item.run.id for item in found] == [healthy.id]
        assert [(e.record_id, e.column) for e in found.damaged] == [(blob, "id")]
        claimed = await db.claim_resumable_runs()
        assert [item.run.id for item in claimed.resumed] == [healthy.id]
        assert [(e.record_id, e.column) for e in claimed.damaged] == [(blob, "id")]


async def test_a_dead_owner_whose_id_is_a_blob_stops_no_claim(db_path: Path) -> None:
    # A claim named the dead owners in JSON, which has no form for a blob: every
    # claim raised TypeError. They are named by rowid now, and forgotten as others are.
    async with DB.open(db_path, owner="daemon") as db:
        made = await db.create_run(new_run(status="running"))
    _edit(
        db_path,
        "INSERT INTO owners (id, name, host, machine, pid, started, lease_until)"
        " VALUES (?, 'other', 'host', 'machine', 1, NULL, '2000-01-01T00:00:00.000000Z')",
        b"\x01\x02",
    )

    async with DB.open(db_path, owner="next") as db:
        claimed = await db.claim_resumable_runs()
        assert [item.run.id for item in claimed.resumed] == [made.id]
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("SELECT count(*) FROM owners WHERE typeof(id) = 'blob'").fetchone() == (
            0,
        )


async def test_a_table_stopped_by_its_first_row_does_not_say_none(db_path: Path) -> None:
    async with DB.open(db_path) as db:
        runs = [await db.create_run(new_run()) for _ in range(2)]
    _edit(db_path, "UPDATE runs SET started_at = 'yesterday' WHERE id = ?", runs[0].id)
    result = await _cli(db_path, "runs")
    assert result.returncode == 1
    assert runs[0].id in result.stderr
    assert "(none)" not in result.stdout  # the store is not empty: a row stopped the listing
    healthy = await _cli(db_path, "runs", "--after", runs[0].id)
    assert healthy.returncode == 0
    assert runs[1].id in healthy.stdout


# (table, column): sqlite3 raises reading text that is not UTF-8, whichever
# column it is in, before the row reaches the store's own checks.
NOT_UTF8 = [
    ("runs", "feature_branch"),
    ("runs", "status"),
    ("runs", "started_at"),
    ("runs", "parallelism"),
    ("runs", "config_json"),
    ("units", "unit_id"),
    ("units", "status"),
    ("units", "branch"),
    ("units", "error"),
    ("events", "event_type"),
    ("events", "payload_json"),
]


def _rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every row of the store's tables, text as bytes (sqlite3 would refuse to decode it)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.text_factory = bytes
        return {
            table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
            for table in ("runs", "units", "events", "owners", "counts")
        }


@pytest.mark.parametrize(("table", "column"), NOT_UTF8)
async def test_text_that_is_not_utf8_is_named_and_stops_no_start_up(
    db_path: Path, table: str, column: str
) -> None:
    # It had raised a DatabaseError naming neither the row nor the table, from
    # start-up too: one such run stopped every other from resuming.
    async with DB.open(db_path) as db:
        damaged = await db.create_run(new_run(status="running"))
        unit = await db.create_unit(new_unit(damaged, "u1", status="running"))
        event = await db.append_event(damaged.id, "e", payload={"a": 1})
        healthy = await db.create_run(new_run(status="running"))
        await db.create_unit(new_unit(healthy, "u1"))
    record_id = {"runs": damaged.id, "units": unit.id, "events": event.id}[table]
    raw = b"not \xff UTF-8"
    _edit(db_path, f"UPDATE {table} SET {column} = CAST(? AS TEXT) WHERE id = ?", raw, record_id)
    expected = (table, record_id, column, raw)

    async with DB.open(db_path) as db:
        # A status is counted under its own name, which stats() must not read.
        assert (await db.stats()).runs["running"] == 2 - (column == "status" and table == "runs")
        reads: dict[str, list[Callable[[], Awaitable[object]]]] = {
            "runs": [partial(db.get_run, damaged.id), db.list_runs],
            "units": [partial(db.get_unit, unit.id), partial(db.list_units_by_run, damaged.id)],
            "events": [partial(db.list_events, damaged.id)],
        }
        for read in reads[table]:
            with pytest.raises(DamagedRecordError) as raised:
                await read()
            error = raised.value
            assert (error.table, error.record_id, error.column, error.value) == expected
            assert "is not UTF-8 text" in str(error)
        if (table, column) == ("runs", "status"):  # a follower reads the status alone
            with pytest.raises(DamagedRecordError, match=r"status=b'not .* is not UTF-8"):
                await anext(aiter(db.follow_events(damaged.id)))

        # Start-up reads no event row whole: only runs and units stop a run resuming.
        resumed = [healthy.id] if table != "events" else sorted([damaged.id, healthy.id])
        reported = [expected] if table != "events" else []
        found = await db.resumable_runs()
        assert sorted(item.run.id for item in found) == resumed
        assert [(e.table, e.record_id, e.column, e.value) for e in found.damaged] == reported
        claimed = await db.claim_resumable_runs()
        assert sorted(item.run.id for item in claimed.resumed) == resumed
        assert [(e.table, e.record_id, e.column, e.value) for e in claimed.damaged] == reported

        problems = await db.check()
        assert any(
            f"{table} row {record_id!r}: {column}=" in p and "not UTF-8" in p for p in problems
        ), problems

        before = _rows(db_path)
        if table == "runs":
            with pytest.raises(DamagedRecordError):
                await db.update_run_status(damaged.id, RunStatus.FAILED)
        elif table == "units":
            with pytest.raises(DamagedRecordError):
                await db.update_unit_status(unit.id, UnitStatus.FAILED)
        assert _rows(db_path) == before
        await db.append_event(healthy.id, "next")  # the other runs go on

        if table == "runs":
            listed = await _cli(db_path, "runs", "--nl")
            assert listed.returncode == 1
            assert listed.stderr.count("\n") == 1, listed.stderr  # one line, no traceback
            assert f"{column}=b'not \\xff UTF-8' is not UTF-8 text" in listed.stderr

        assert await db.delete_run(damaged.id)  # the way out: the run can still be removed
        assert await db.check() == []
        assert (await db.stats()).runs["running"] == 1


async def test_attempts_that_are_not_utf8_are_named_where_they_are_read(db_path: Path) -> None:
    # Only start-up, claims and who-holds-what read a run's attempts.
    async with DB.open(db_path) as db:
        damaged = await db.create_run(new_run(status="running"))
        healthy = await db.create_run(new_run(status="running"))
    _edit(db_path, "UPDATE runs SET attempts = CAST(X'FF' AS TEXT) WHERE id = ?", damaged.id)
    async with DB.open(db_path) as db:
        assert await db.get_run(damaged.id) == damaged
        found = await db.resumable_runs()
        assert [item.run.id for item in found] == [healthy.id]
        assert [(e.record_id, e.column, e.value) for e in found.damaged] == [
            (damaged.id, "attempts", b"\xff")
        ]
        assert any(f"{damaged.id!r}: attempts=b'\\xff' is not UTF-8" in p for p in await db.check())
    for command in (["show", damaged.id], ["runs"]):
        result = await _cli(db_path, *command)
        assert result.returncode == 1, command
        assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
        assert "attempts=b'\\xff' is not UTF-8 text" in result.stderr


async def test_a_run_id_that_is_not_utf8_does_not_hide_the_run_it_begins_with(
    db_path: Path,
) -> None:
    async with DB.open(db_path) as db:
        healthy = await db.create_run(new_run())
        others = [await db.create_run(new_run()) for _ in range(6)]
    # One id that begins with the healthy one, and six more matches of its start
    # that sort before it (more than a lookup reads).
    start = healthy.id[:20]
    broken = [healthy.id.encode() + b"\xff"]
    broken += [f"{start}!{n}".encode() + b"\xff" for n in range(5)]
    for new_id, other in zip(broken, others, strict=True):
        _edit(db_path, "UPDATE runs SET id = CAST(? AS TEXT) WHERE id = ?", new_id, other.id)
    for typed in (healthy.id, start):
        shown = await _cli(db_path, "show", typed, "--json")
        assert shown.returncode == 0, (typed, shown.stderr)
        assert json.loads(shown.stdout)["run"]["id"] == healthy.id


async def test_an_append_after_a_sequence_that_is_not_utf8_names_it(db_path: Path) -> None:
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run())
        events = [await db.append_event(run.id, "e") for _ in range(2)]
    _edit(db_path, "UPDATE events SET sequence = CAST(X'FF' AS TEXT) WHERE id = ?", events[1].id)
    before = _rows(db_path)
    async with DB.open(db_path) as db:
        with pytest.raises(DamagedRecordError) as raised:
            await db.append_event(run.id, "next")
        error = raised.value
        assert (error.table, error.record_id, error.column, error.value) == (
            "events",
            events[1].id,
            "sequence",
            b"\xff",
        )
        assert "is not UTF-8 text" in str(error)  # as a read of the event says
    assert _rows(db_path) == before


async def test_a_blob_status_is_counted_where_the_triggers_count_it(db_path: Path) -> None:
    # The triggers name a count 'runs:' || status, which reads a blob as text;
    # check() named the rows it counted with Python's bytes repr, and reported
    # two wrong counts that were not.
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run(status="running"))
        await db.create_run(new_run(status="running"))
    _edit(db_path, "UPDATE runs SET status = CAST('running' AS BLOB) WHERE id = ?", run.id)
    async with DB.open(db_path, readonly=True) as db:
        problems = await db.check()
    assert [p for p in problems if p.startswith("counts")] == []
    assert any(f"runs row {run.id!r}: status=b'running'" in p for p in problems), problems


# (column, what another tool set it to): each a run a prune must not delete unseen.
_PRUNE_DAMAGE = [
    ("started_at", "'yesterday'"),
    ("feature_branch", "CAST(X'ff' AS TEXT) || feature_branch"),  # not UTF-8
    ("parallelism", "'four'"),
    ("id", "CAST(X'ff' AS TEXT) || id"),  # then the row is named by its bytes
    ("repo_path", "CAST(repo_path AS BLOB)"),  # a blob the command line cannot show
    # Completion times Python reads but daemon_db never writes, whose order in
    # the index is not their moments' (a run 05:00 UTC sorts before 01:00 UTC).
    ("completed_at", "substr(completed_at, 1, 19) || 'Z'"),
    ("completed_at", "substr(completed_at, 1, 19) || '-05:00'"),
    ("completed_at", "completed_at || char(0) || 'x'"),  # Python reads up to the NUL
]


@pytest.mark.parametrize("page", [1, 2, 500])
async def test_a_prune_passes_over_damaged_runs_and_names_them(
    db_path: Path, monkeypatch: pytest.MonkeyPatch, page: int
) -> None:
    # One damaged run made every prune raise, for good: a daemon pruning each
    # night would never prune again. Damage of each kind, ahead of the healthy
    # runs (more than a batch reads ahead) and among them: pages and batches of
    # damaged runs alone must not end the prune, and no run is read twice (a
    # prune that read the damaged ones again each batch took minutes).
    monkeypatch.setattr(daemon_db._sqlite.db, "PAGE_SIZE", page)
    ahead = maintenance._PRUNE_LOOKAHEAD + 2
    async with DB.open(db_path) as db:
        made = [
            await db.create_run(new_run(status="completed", completed_at=OLD + timedelta(n)))
            for n in range(ahead + 8)
        ]
        active = await db.create_run(new_run(status="running"))
    named = set()
    damaged = [*range(ahead), ahead + 3]
    for n in damaged:
        column, value = _PRUNE_DAMAGE[n % len(_PRUNE_DAMAGE)]
        _edit(db_path, f"UPDATE runs SET {column} = {value} WHERE id = ?", made[n].id)
        named.add((b"\xff" + made[n].id.encode() if column == "id" else made[n].id, column))
    healthy = [run for n, run in enumerate(made) if n not in damaged]
    before = _rows(db_path)["runs"]
    read = _counting_reads(monkeypatch)

    async with DB.open(db_path) as db:
        found = await db.prune_runs(datetime.now(UTC), dry_run=True)
        assert found == healthy
        assert {(e.table, e.record_id, e.column) for e in found.damaged} == {
            ("runs", *key) for key in named
        }
        assert len(found.damaged) == len(named)
        assert set(read.values()) == {1}  # each run read once, on its page
        assert _rows(db_path)["runs"] == before  # a dry run deletes nothing
        for removed in (healthy, []):  # the next prune finds them again, and nothing else
            read.clear()
            found = await db.prune_runs(datetime.now(UTC))
            assert found == removed
            assert {(e.table, e.record_id, e.column) for e in found.damaged} == {
                ("runs", *key) for key in named
            }
            assert len(found.damaged) == len(named)
            # Once a sweep, however many batches: a prune sweeps twice (the second
            # takes what finished behind the first meanwhile).
            assert {read[key] for key, _ in named} == {2}
        assert await db.list_runs(status=RunStatus.RUNNING) == [active]
    left = {row[0] for row in _rows(db_path)["runs"]}
    assert left == {active.id.encode()} | {_bytes(key) for key, _ in named}


def _bytes(key: object) -> bytes:
    return key if isinstance(key, bytes) else str(key).encode()


def _counting_reads(monkeypatch: pytest.MonkeyPatch) -> Counter[object]:
    """How many times a prune read each run (by the id its row, or its damage, names)."""
    read: Counter[object] = Counter()
    real = maintenance.finished_before

    def counting(conn: sqlite3.Connection, **kwargs: Any) -> list[maintenance.Prunable]:
        found = real(conn, **kwargs)
        read.update(run.id if isinstance(run, Run) else run.record_id for _, run, _ in found)
        return found

    monkeypatch.setattr(maintenance, "finished_before", counting)
    return read


async def test_prune_names_the_runs_it_passed_over_and_exits_1(db_path: Path) -> None:
    async with DB.open(db_path) as db:
        gone = await db.create_run(new_run(status="completed", completed_at=OLD))
        kept = await db.create_run(new_run(status="failed", completed_at=OLD))
    _edit(db_path, "UPDATE runs SET started_at = 'yesterday' WHERE id = ?", kept.id)
    for dry_run in (["--dry-run"], []):
        done = await _cli(db_path, "prune", "--older-than", "1d", *dry_run)
        assert done.returncode == 1, done.stderr
        assert gone.id in done.stdout
        assert kept.id not in done.stdout
        assert f"left: {db_path}: damaged runs row {kept.id!r}" in done.stderr, done.stderr
    async with DB.open(db_path) as db:
        assert await db.get_run(gone.id) is None
        _edit(db_path, "UPDATE runs SET started_at = NULL WHERE id = ?", kept.id)  # mended
        assert [run.id for run in await db.prune_runs(datetime.now(UTC))] == [kept.id]


@pytest.mark.parametrize("column", ["started_at", "completed_at"])
async def test_check_names_a_timestamp_with_a_nul_after_it(db_path: Path, column: str) -> None:
    # GLOB stops at a NUL, and so does Python's fromisoformat: reads take the
    # text before it, and check() had found nothing.
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run(status="completed", started_at=OLD, completed_at=OLD))
    _edit(db_path, f"UPDATE runs SET {column} = {column} || char(0) || 'x' WHERE id = ?", run.id)
    async with DB.open(db_path) as db:
        problems = await db.check()
        assert [p.split("=")[0] for p in problems] == [
            f"damaged value: runs row {run.id!r}: {column}"
        ]
        assert await db.check(quick=True) == problems
