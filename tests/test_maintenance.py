"""The maintenance calls behind the command line: prune_runs, stats, check, backup."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sqlite3
import sys
import threading
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

import daemon_db._sqlite.db
from daemon_db import (
    DB,
    DaemonDBError,
    DatabaseError,
    InvalidRecordError,
    ReadOnlyError,
    Run,
    RunNotFoundError,
    RunStatus,
    UnitRecord,
    UnitStatus,
)
from daemon_db import _timestamps as timestamps
from daemon_db._sqlite import maintenance
from daemon_db._sqlite.rows import NotUTF8
from daemon_db._timestamps import to_text
from tests.helpers import dump, new_run

OLD = datetime.now(UTC) - timedelta(days=10)


async def test_prune_runs_in_small_transactions(db: DB, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_db._sqlite.db, "PRUNE_BATCH_EVENTS", 5)
    finished = []
    for n in range(4):
        run = await db.create_run(new_run(status="completed", completed_at=OLD + timedelta(n)))
        for _ in range(3):
            await db.append_event(run.id, "tick")
        finished.append(run)
    active = await db.create_run(new_run(status="running", started_at=OLD))
    cutoff = datetime.now(UTC) - timedelta(days=1)

    assert await db.prune_runs(cutoff, dry_run=True) == finished
    assert len(await db.list_runs()) == 5
    assert await db.prune_runs(cutoff) == finished  # oldest first, over several batches
    assert await db.list_runs() == [active]
    assert await db.prune_runs(cutoff) == []
    assert await db.check() == []


@pytest.mark.parametrize("flag", [None, 0, "", "no", 1])
async def test_dry_run_is_a_bool_not_anything_falsy(db: DB, flag: object) -> None:
    # check(quick=...) and iter_runs(newest_first=...) refuse what is not a bool;
    # prune_runs(dry_run=None) (an unset option, say) deleted the runs for real.
    run = await db.create_run(new_run(status="completed", completed_at=OLD))
    with pytest.raises(InvalidRecordError, match="dry_run"):
        await db.prune_runs(datetime.now(UTC), dry_run=flag)  # type: ignore[arg-type]
    assert await db.list_runs() == [run]


async def test_prune_runs_needs_an_aware_moment(db: DB) -> None:
    with pytest.raises(InvalidRecordError):
        await db.prune_runs(datetime(2026, 1, 1))
    with pytest.raises(InvalidRecordError):
        await db.prune_runs(None)  # type: ignore[arg-type]


async def test_stats_and_check(db: DB) -> None:
    run = await db.create_run(new_run(status="running"))
    await db.append_event(run.id, "tick")
    await db.complete_run(run.id, RunStatus.FAILED)
    figures = await db.stats()
    assert figures.runs["failed"] == 1
    assert figures.events == 2
    assert await db.check() == []


# PostgreSQL's backup() says to use pg_dump (tests/test_postgres.py).
@pytest.mark.sqlite_only
async def test_backup_of_a_file_and_of_memory(db: DB, tmp_path: Path) -> None:
    run = await db.create_run(new_run())
    await db.append_event(run.id, "tick")
    seen: list[tuple[int, int, bool]] = []

    def progress(copied: int, total: int) -> None:
        seen.append((copied, total, threading.current_thread() is threading.main_thread()))

    copy = tmp_path / "copy.db"
    pages = await db.backup(copy, progress=progress)
    assert pages > 0
    await db.append_event(run.id, "after the copy")
    async with DB.open(copy, readonly=True) as restored:
        assert await restored.list_runs() == [run]
        assert len(await restored.list_events(run.id)) == 1
    assert seen
    assert seen[-1][0] == seen[-1][1] == pages
    assert all(on_loop for _, _, on_loop in seen)  # progress is reported on the event loop

    before = dump(copy)
    with pytest.raises(DatabaseError, match="exists"):
        await db.backup(copy)
    assert dump(copy) == before
    await db.backup(copy, overwrite=True)
    assert dump(copy) != before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".backup")] == []


async def _copied_in_many_steps(db: DB, monkeypatch: pytest.MonkeyPatch) -> Run:
    """A run with 40 events, and backups that copy 2 pages a step (a step is 4 MB)."""
    monkeypatch.setattr(maintenance, "backup", partial(maintenance.backup, pages_per_step=2))
    run = await db.create_run(new_run())
    for n in range(40):
        await db.append_event(run.id, "tick", payload={"n": n, "pad": "x" * 400})
    return run


@pytest.mark.sqlite_only
async def test_a_progress_that_raises_stops_the_backup(
    db: DB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's "stop" was logged by the loop, and the copy made all the same.
    run = await _copied_in_many_steps(db, monkeypatch)
    copy = tmp_path / "copy.db"

    class Stop(Exception):
        pass

    def stop_at_first_step(copied: int, total: int) -> None:
        raise Stop(copied)

    def stop_at_last_step(copied: int, total: int) -> None:
        if copied == total:
            raise Stop(copied)

    for progress in (stop_at_first_step, stop_at_last_step):
        with pytest.raises(Stop):
            await db.backup(copy, progress=progress)
        assert not copy.exists()
    with pytest.raises(TypeError):  # a callback of the wrong shape is a mistake, not a no-op
        await db.backup(copy, progress=lambda copied: None)  # type: ignore[arg-type,misc]

    async def awaited(copied: int, total: int) -> None:  # called, never awaited
        pass

    for bad in (5, "progress", awaited):
        with pytest.raises(InvalidRecordError) as raised:
            await db.backup(copy, progress=bad)  # type: ignore[arg-type]
        assert raised.value.field == "progress"
    assert [p.name for p in tmp_path.iterdir() if "copy" in p.name or "backup" in p.name] == []
    assert await db.backup(copy, progress=lambda copied, total: None) > 1
    assert await db.list_events(run.id) != []


@pytest.mark.sqlite_only
async def test_a_cancelled_backup_is_settled_before_it_raises(
    db: DB, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cancelled (a wait_for timeout), the copy went on in its thread and landed
    # later, and the caller's retry found the destination taken (adversary pass).
    await _copied_in_many_steps(db, monkeypatch)
    copy = tmp_path / "copy.db"
    task = asyncio.current_task()
    assert task is not None

    def cancel_once(copied: int, total: int) -> None:
        if not task.cancelling():
            task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await db.backup(copy, progress=cancel_once)
    assert task.uncancel() == 0
    for _ in range(10):  # nothing is still copying, to land later
        await asyncio.sleep(0.02)
        assert not copy.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".backup")] == []
    assert await db.backup(copy) > 1  # the retry is not refused


async def test_a_backup_is_one_file_that_stays_one_when_read(file_db: DB, tmp_path: Path) -> None:
    # Backup, check the backup, back up onto it again: a nightly job's habit.
    run = await file_db.create_run(new_run())
    (tmp_path / "backups").mkdir()
    copy = tmp_path / "backups" / "copy.db"
    await file_db.backup(copy)
    for _ in range(2):
        async with DB.open(copy, readonly=True) as restored:
            assert await restored.check() == []
            assert await restored.list_runs() == [run]
        assert [p.name for p in copy.parent.iterdir()] == ["copy.db"]
        await file_db.backup(copy, overwrite=True)
    async with DB.open(copy) as writer:  # written to, it is a WAL database again
        await writer.append_event(run.id, "restored")
        assert (copy.parent / "copy.db-wal").exists()


@pytest.mark.parametrize("log", ["-wal", "-shm", "-journal"])
async def test_a_backup_refuses_a_destination_with_a_log_beside_it(
    file_db: DB, tmp_path: Path, log: str
) -> None:
    # A -journal a killed writer left (the file itself since removed) was
    # rolled back into the copy at its first open: the backup said it
    # succeeded, and the copy was malformed (adversary pass).
    await file_db.create_run(new_run())
    left = tmp_path / f"copy.db{log}"
    left.write_bytes(b"a log of some other database")
    with pytest.raises(DatabaseError, match=f"has a {log} file beside it") as raised:
        await file_db.backup(tmp_path / "copy.db")
    assert str(left) in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("copy")) == [left.name]
    assert left.read_bytes() == b"a log of some other database"


@pytest.mark.sqlite_only
@pytest.mark.parametrize("flag", ["no", "false", 1])
async def test_overwrite_is_a_bool_not_anything_truthy(
    db: DB, tmp_path: Path, flag: object
) -> None:
    # overwrite="false" (a setting read as text) replaced the file.
    copy = tmp_path / "copy.db"
    copy.write_bytes(b"keep me")
    with pytest.raises(InvalidRecordError, match="overwrite"):
        await db.backup(copy, overwrite=flag)  # type: ignore[arg-type]
    assert copy.read_bytes() == b"keep me"


async def test_no_backup_inside_a_transaction_block(db: DB, tmp_path: Path) -> None:
    async with db.transaction():
        with pytest.raises(DaemonDBError):
            await db.backup(tmp_path / "copy.db")
    assert not (tmp_path / "copy.db").exists()


async def test_stats_counts_are_kept_through_every_kind_of_write(db: DB) -> None:
    kept = await db.create_run(new_run(status="running"))
    gone = await db.create_run(new_run(status="completed", completed_at=OLD))
    for run in (kept, gone):
        for n in range(3):
            await db.create_unit(UnitRecord(run_id=run.id, unit_id=f"u{n}"))
            await db.append_event(run.id, "tick")
    await db.update_unit_status(f"{kept.id}_u0", UnitStatus.RUNNING)
    await db.update_unit_status(f"{kept.id}_u0", UnitStatus.RUNNING)  # no change: counted once
    await db.update_run_status(kept.id, RunStatus.FAILED)
    async with db.transaction() as tx:
        await tx.append_event(kept.id, "rolled back")
        await tx.create_unit(UnitRecord(run_id=kept.id, unit_id="rolled back"))
        with pytest.raises(RunNotFoundError):
            await tx.append_event("no such run", "tick")
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await tx.append_event(kept.id, "undone")
            raise RuntimeError
    assert await db.delete_run(gone.id)  # its units and events go by cascade

    figures = await db.stats()
    assert figures.runs == {"pending": 0, "running": 0, "completed": 0, "failed": 1, "cancelled": 0}
    assert figures.units == {status.value: 0 for status in UnitStatus} | {
        "pending": 3,
        "running": 1,
    }
    assert figures.events == 4
    assert await db.check() == []


async def test_check_finds_kept_counts_that_drifted(file_db: DB, db_path: Path) -> None:
    run = await file_db.create_run(new_run())
    await file_db.append_event(run.id, "tick")
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE counts SET n = 7 WHERE name = 'events'")
    for quick in (False, True):
        assert await file_db.check(quick=quick) == [
            "counts: events is kept as 7 but 1 rows are stored"
        ]


async def test_check_quick_runs_every_check_of_the_store(file_db: DB, db_path: Path) -> None:
    run = await file_db.create_run(new_run())
    await file_db.append_event(run.id, "tick")
    assert await file_db.check(quick=True) == []
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE events SET sequence = 5")
    assert await file_db.check(quick=True) == [
        f"sequences: run {run.id} has 1 events up to sequence 5"
    ]
    with pytest.raises(InvalidRecordError):
        await file_db.check(quick=1)  # type: ignore[arg-type]


async def test_check_reports_a_sequence_that_is_not_a_whole_number(
    file_db: DB, db_path: Path
) -> None:
    # 1, 2.5, 3 has three events up to 3, starting at 1: only its type shows the gap.
    run = await file_db.create_run(new_run())
    for _ in range(3):
        await file_db.append_event(run.id, "tick")
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        (event_id,) = conn.execute("SELECT id FROM events WHERE sequence = 2").fetchone()
        conn.execute("UPDATE events SET sequence = 2.5 WHERE sequence = 2")
    for quick in (False, True):
        assert await file_db.check(quick=quick) == [
            f"damaged value: events row {event_id}: sequence=2.5 is not what daemon_db writes"
        ]


def test_check_finds_every_timestamp_that_cannot_be_read_back() -> None:
    # Of the stored form but no moment: 2024-02-30, month 13, hour 24, year 0.
    # check() said all was well while every read of such a row failed.
    rule = maintenance._timestamp("v")
    found = []
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        for year, month, day, hour in itertools.product(
            ("0000", "0001", "1900", "2000", "2023", "2024", "2100", "9999"),
            range(20),
            range(40),
            (0, 9, 19, 23, 24, 29),
        ):
            text = f"{year}-{month:02d}-{day:02d}T{hour:02d}:59:59.999999Z"
            (damaged,) = conn.execute(f"SELECT {rule} FROM (SELECT ? AS v)", (text,)).fetchone()
            found.append((text, bool(damaged), not _reads_back(text)))
    assert [(text, said) for text, said, unreadable in found if said != unreadable] == []
    assert sum(unreadable for _, _, unreadable in found) > len(found) / 2  # both kinds, many


def _reads_back(text: str) -> bool:
    try:
        timestamps.from_text(text)
    except ValueError:
        return False
    return True


async def test_check_reports_what_another_tool_dropped_from_the_schema(
    file_db: DB, db_path: Path
) -> None:
    await file_db.create_run(new_run())
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("DROP TRIGGER units_counted_in")  # counts would drift from the next write
        conn.execute("DROP INDEX runs_one_active")  # two active runs of a branch would be let in
    assert await file_db.check(quick=True) == [
        "schema: index runs_one_active is missing",
        "schema: trigger units_counted_in is missing",
    ]
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("DROP TABLE counts")
    problems = await file_db.check()
    assert "schema: table counts is missing" in problems
    assert problems[-1] == "the store's own checks need every table: not run"


async def test_check_reports_what_another_tool_made_again_otherwise(
    file_db: DB, db_path: Path
) -> None:
    await file_db.create_run(new_run())
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        # Same names, but two active runs of a branch are let in, and counts drift.
        conn.execute("DROP INDEX runs_one_active")
        conn.execute("CREATE INDEX runs_one_active ON runs (feature_branch, repo_path)")
        conn.execute("DROP TRIGGER units_counted_in")
        conn.execute("CREATE TRIGGER units_counted_in AFTER INSERT ON units BEGIN SELECT 1; END")
        # Its own index and table change no write; its trigger may.
        conn.execute("CREATE INDEX mine ON events (event_type)")
        conn.execute("CREATE TABLE notes (text TEXT)")
        conn.execute(
            "CREATE TRIGGER no_failures BEFORE UPDATE ON runs WHEN new.status = 'failed'"
            " BEGIN SELECT RAISE(ABORT, 'no'); END"
        )
    assert await file_db.check(quick=True) == [
        "schema: index runs_one_active is not as daemon_db makes it (another tool changed it)",
        "schema: trigger units_counted_in is not as daemon_db makes it (another tool changed it)",
        "schema: trigger no_failures is not daemon_db's (another tool added it)",
    ]


@pytest.mark.parametrize(
    ("query", "index"),
    [
        ("SELECT id FROM runs WHERE repo_path = ? ORDER BY id LIMIT 5", "runs_by_repo"),
        ("SELECT id FROM runs WHERE feature_branch = ? ORDER BY id LIMIT 5", "runs_by_branch"),
        ("SELECT id FROM runs WHERE status IN (?, ?) ORDER BY id LIMIT 5", "runs_by_status"),
    ],
)
async def test_the_queries_at_scale_use_their_index(
    file_db: DB, db_path: Path, query: str, index: str
) -> None:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        plan = " ".join(
            row[-1]
            for row in conn.execute(f"EXPLAIN QUERY PLAN {query}", ("x",) * query.count("?"))
        )
    assert index in plan
    if index == "runs_by_repo":  # a repo may have a million runs: pages come without a sort
        assert "TEMP B-TREE" not in plan


# A batch or page after the first starts after a key, which may hold text that is not UTF-8.
@pytest.mark.parametrize("after", [None, ("x", "y"), (NotUTF8(b"\xff"), "y"), ("x", b"y")])
async def test_prune_query_is_the_indexed_one(
    file_db: DB, db_path: Path, after: maintenance.Key | None
) -> None:
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        for query in (maintenance._PRUNABLE, maintenance._WARM):
            sql, params = maintenance._after(query, "x", after)
            found = conn.execute(f"EXPLAIN QUERY PLAN {sql} {maintenance._ORDER}", (*params, 5))
            plan = " ".join(row[-1] for row in found)
            seek = "(completed_at<?)" if after is None else "((completed_at,id)>(?,?) AND"
            assert f"runs_finished_by_completion {seek}" in plan, plan
            assert "TEMP B-TREE" not in plan


async def test_prune_reads_every_index_its_deletes_change_first(file_db: DB, db_path: Path) -> None:
    """The read before each batch (off the write lock) covers every index a delete changes."""
    from daemon_db._sqlite import maintenance

    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        plan = " ".join(
            row[-1]
            for row in conn.execute(
                f"EXPLAIN QUERY PLAN {maintenance._WARM} {maintenance._ORDER}", ("x", 5)
            )
        )
        indexes = {
            name
            for name, where in conn.execute(
                "SELECT name, sql LIKE '%WHERE%' FROM sqlite_master"
                " WHERE type = 'index' AND tbl_name IN ('runs', 'units', 'events')"
            )
            # finished runs are in no partial index but the one the batch reads by
            if not where or name == "runs_finished_by_completion"
        }
    assert indexes
    assert {name for name in indexes if name not in plan} == set()


async def test_prune_batches_stop_after_their_time(
    file_db: DB, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(daemon_db._sqlite.db, "PRUNE_BATCH_SECONDS", 0.0)  # one run per batch
    batches = []
    submit = file_db._sqlite_write

    async def counted(work: Any) -> Any:
        batches.append(work)
        return await submit(work)

    for n in range(3):
        await file_db.create_run(new_run(status="cancelled", completed_at=OLD + timedelta(n)))
    monkeypatch.setattr(file_db, "_sqlite_write", counted)
    assert len(await file_db.prune_runs(datetime.now(UTC))) == 3
    # One run each, then one that finds none, and a second sweep from the oldest.
    assert len(batches) == 5


async def test_a_prune_takes_a_run_that_finished_behind_it_meanwhile(
    file_db: DB, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each batch starts after the last run read: a run finished meanwhile with an
    # earlier completion time (another daemon's create_run of a finished run, say)
    # is found by the second sweep, from the oldest.
    monkeypatch.setattr(daemon_db._sqlite.db, "PRUNE_BATCH_SECONDS", 0.0)  # one run per batch
    for n in range(1, 4):
        await file_db.create_run(new_run(status="failed", completed_at=OLD + timedelta(n)))
    late = new_run(status="failed", completed_at=OLD)
    real = maintenance.delete_finished
    inserted = []

    def beside(conn: sqlite3.Connection, **kwargs: Any) -> maintenance.Batch:
        found = real(conn, **kwargs)
        if kwargs["after"] is not None and not inserted:
            conn.execute(  # committed with this batch, behind its key
                "INSERT INTO runs (id, repo_path, target_branch, tasks_dir, status, completed_at)"
                " VALUES (?, ?, ?, ?, 'failed', ?)",
                (late.id, late.repo_path, late.target_branch, late.tasks_dir, to_text(OLD)),
            )
            inserted.append(late.id)
        return found

    monkeypatch.setattr(maintenance, "delete_finished", beside)
    removed = await file_db.prune_runs(datetime.now(UTC))
    assert removed[0].id == late.id  # oldest first
    assert len(removed) == 4
    assert await file_db.list_runs() == []
    assert await file_db.check() == []


async def test_vacuum_gives_pruned_space_back(file_db: DB, db_path: Path) -> None:
    for _ in range(20):
        run = await file_db.create_run(new_run(status="completed", completed_at=OLD))
        for _ in range(100):
            await file_db.append_event(run.id, "tick", payload={"text": "x" * 200})
    await file_db.prune_runs(datetime.now(UTC))
    freed = await file_db.vacuum()
    assert freed > 20 * 100 * 200
    assert await file_db.check() == []
    async with DB.open(db_path, readonly=True) as reader:
        with pytest.raises(ReadOnlyError):
            await reader.vacuum()
    async with file_db.transaction():
        with pytest.raises(DaemonDBError):
            await file_db.vacuum()


async def test_vacuum_beside_a_reader_holds_no_write_up(db_path: Path) -> None:
    # A reader of an older snapshot (check, backup, another process) keeps the
    # old pages: VACUUM's checkpoint cannot finish. It used to wait for the
    # reader as long as the busy timeout (here an hour: a hang), holding every
    # write up, and then reported a shrink that had not happened.
    async with DB.open(db_path, busy_timeout=3600) as db:
        for _ in range(20):
            run = await db.create_run(new_run(status="completed", completed_at=OLD))
            for _ in range(50):
                await db.append_event(run.id, "tick", payload={"text": "x" * 200})
        await db.prune_runs(datetime.now(UTC))
        # Every page in the file first, so that its size is the whole database's
        # (the checkpointer may not have copied the last pages yet).
        with contextlib.closing(sqlite3.connect(db_path)) as conn:
            while conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:
                await asyncio.sleep(0.05)  # our checkpointer's turn
        # Another process: one of ours would share this process's file locks.
        reader = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None);"
            " c.execute('BEGIN'); c.execute('SELECT count(*) FROM events').fetchone();"
            " print('reading', flush=True); sys.stdin.read()",
            str(db_path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert reader.stdin is not None
        assert reader.stdout is not None
        assert await reader.stdout.readline() == b"reading\n"
        size = db_path.stat().st_size
        freed, _ = await asyncio.wait_for(asyncio.gather(db.vacuum(), db.create_run(new_run())), 60)
        assert freed == 0  # the reader still uses the old pages
        reader.stdin.close()
        await reader.wait()
        await db.vacuum()  # the reader gone, the file gives the space back
        assert db_path.stat().st_size < size - 20 * 50 * 200
        assert await db.check() == []


async def test_check_lets_several_active_runs_without_a_branch_share_a_repo(db: DB) -> None:
    for _ in range(3):
        await db.create_run(new_run(feature_branch=None, repo_path="/srv/app"))
    assert await db.check() == []
    assert await db.check(quick=True) == []
