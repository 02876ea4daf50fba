"""Checkpoints off the commit path: the writer never checkpoints; a thread of its own does."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import daemon_db._sqlite.db
from daemon_db import DB, Run, RunStatus
from daemon_db._sqlite import checkpointer, maintenance
from tests.helpers import new_run

# What these check is the SQLite engine's own (its file, writer, thread or
# limits); the PostgreSQL engine is checked by the contract tests and test_hosts.py.
pytestmark = pytest.mark.sqlite_only


def wal_size(path: Path) -> int:
    try:
        return os.path.getsize(f"{path}-wal")
    except FileNotFoundError:
        return 0


async def eventually(condition: object, seconds: float = 20.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def test_the_writer_never_checkpoints_in_a_commit(file_db: DB) -> None:
    assert file_db._writer is not None
    rows = await file_db._writer.connection.execute_fetchall("PRAGMA wal_autocheckpoint")
    assert list(rows) == [(0,)]


async def test_an_idle_wal_is_truncated(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(checkpointer, "IDLE_SECONDS", 0.05)
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run())
        for _ in range(50):
            await db.append_event(run.id, "tick")
        assert wal_size(db_path) > 0
        assert db._checkpointer is not None
        counts = db._checkpointer.checkpoints
        await eventually(lambda: wal_size(db_path) == 0 and counts["TRUNCATE"] >= 1)
        assert len(await db.list_events(run.id)) == 50


@contextlib.contextmanager
def readers_in_turn(path: Path) -> Iterator[list[int]]:
    """Two connections whose read transactions overlap, so that one is always open."""
    stop = threading.Event()
    reads: list[int] = [0]

    def read() -> None:
        first, second = (sqlite3.connect(path, isolation_level=None) for _ in range(2))
        try:
            first.execute("BEGIN")
            first.execute("SELECT COUNT(*) FROM runs").fetchall()
            while not stop.is_set():
                second.execute("BEGIN")
                second.execute("SELECT COUNT(*) FROM runs").fetchall()
                first.execute("COMMIT")
                first, second = second, first
                reads[0] += 1
                stop.wait(0.001)
            first.execute("COMMIT")
        finally:
            first.close()
            second.close()

    thread = threading.Thread(target=read)
    thread.start()
    try:
        yield reads
    finally:
        stop.set()
        thread.join()


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checkpointer's limits scaled down, so that a few thousand writes cross them."""
    monkeypatch.setattr(checkpointer, "RESTART_BYTES", 256 * 1024)
    monkeypatch.setattr(checkpointer, "INTERVAL_SECONDS", 0.01)
    monkeypatch.setattr(checkpointer, "WAL_LIMIT_BYTES", 4 * 1024 * 1024)


@pytest.mark.parametrize("pinned", [False, True], ids=["alone", "readers always open"])
async def test_the_wal_stays_bounded_while_writes_go_on(
    db_path: Path, small_limits: None, pinned: bool
) -> None:
    payload = {"text": "x" * 1000}
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run())
        largest = 0
        with readers_in_turn(db_path) if pinned else contextlib.nullcontext([1]) as reads:
            for n in range(3000):
                await db.append_event(run.id, "tick", payload=payload)
                if n % 50 == 0:
                    largest = max(largest, wal_size(db_path))
        assert reads[0] > 0
        assert db._checkpointer is not None
        assert db._checkpointer.checkpoints["RESTART"] >= 1
        assert await db.check() == []
    # Without checkpoints the WAL would hold every page written: over 20 MB here.
    assert largest < 8 * 1024 * 1024


async def test_close_stops_the_checkpointer_and_removes_the_wal(db_path: Path) -> None:
    db = await DB.open(db_path)
    run = await db.create_run(new_run())
    await db.append_event(run.id, "tick")
    assert db._checkpointer is not None
    thread = db._checkpointer._thread
    assert thread.is_alive()
    await db.close()
    assert not thread.is_alive()
    assert not os.path.exists(f"{db_path}-wal")  # the writer, closing last, checkpointed


async def test_no_checkpointer_in_memory_or_read_only(db_path: Path) -> None:
    async with DB.open(":memory:") as db:
        assert db._checkpointer is None
    async with DB.open(db_path):
        pass
    async with DB.open(db_path, readonly=True) as db:
        assert db._checkpointer is None


async def test_two_writers_on_one_file_checkpoint_side_by_side(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpointer, "RESTART_BYTES", 64 * 1024)
    monkeypatch.setattr(checkpointer, "INTERVAL_SECONDS", 0.005)
    async with DB.open(db_path) as first, DB.open(db_path) as second:
        run = await first.create_run(new_run())

        async def append(db: DB) -> None:
            for _ in range(500):
                await db.append_event(run.id, "tick", payload={"text": "x" * 500})

        await asyncio.gather(append(first), append(second))
        events = await first.list_events(run.id)
        assert [event.sequence for event in events] == list(range(1, 1001))
        assert await first.check() == []


async def test_the_writer_truncates_the_wal_itself_when_the_checkpointer_stalls(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checkpointer, "WAL_LIMIT_BYTES", 1024 * 1024)
    monkeypatch.setattr(checkpointer, "STALLED_SECONDS", 0.0)
    monkeypatch.setattr(checkpointer, "LIMIT_CHECKED_EVERY", 1)
    async with DB.open(db_path) as db:
        assert db._checkpointer is not None
        stalled = db._checkpointer
        await asyncio.to_thread(stalled._stopping.set)  # its thread stops, as if stuck
        stalled._committed.set()
        await asyncio.to_thread(stalled._thread.join)
        run = await db.create_run(new_run())
        largest = 0
        for _ in range(300):
            await db.append_event(run.id, "tick", payload={"text": "x" * 2000})
            largest = max(largest, wal_size(db_path))
        assert stalled.checkpoints["TRUNCATE"] >= 1
        assert largest < 2 * 1024 * 1024
        assert len(await db.list_events(run.id)) == 300


@contextlib.asynccontextmanager
async def finished_runs(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[DB, checkpointer.Checkpointer]]:
    """A file with two finished runs to prune, where a pause between batches is a timeout."""
    monkeypatch.setattr(daemon_db._sqlite.db, "PRUNE_PAUSE_SECONDS", 60.0)
    monkeypatch.setattr(checkpointer, "IDLE_SECONDS", 60.0)
    async with DB.open(db_path) as db:
        for _ in range(2):
            await db.create_run(new_run(status="completed"))
        assert db._checkpointer is not None
        yield db, db._checkpointer


async def prune_all(db: DB) -> list[Run]:
    return await asyncio.wait_for(db.prune_runs(datetime.now(UTC) + timedelta(days=1)), timeout=10)


async def test_a_prune_alone_runs_the_restart_itself(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The RESTART runs on the writer's thread before its next batch. When the
    # prune is the only writer, pausing until the checkpointer is no longer
    # behind waits for a RESTART that nothing will run: every such pause lasted
    # PRUNE_PAUSE_SECONDS in full (or until the idle TRUNCATE).
    async with finished_runs(db_path, monkeypatch) as (db, cp):
        # Where the checkpointer is once the WAL passed RESTART_BYTES and it caught up.
        cp.behind = True
        cp._restart_wanted = True
        await eventually(lambda: not cp.checkpointing.locked())  # a pass begun before ends
        restarts = cp.checkpoints["RESTART"]
        removed = await prune_all(db)
        assert len(removed) == 2
        assert (cp.checkpoints["RESTART"], cp.restart_pending) == (restarts + 1, False)


async def test_no_restart_starts_while_a_prune_reads_ahead(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A RESTART waits for readers of older snapshots while holding every write
    # up; a prune's read of its next batch's pages is such a reader, so the
    # RESTART waits for a later batch rather than for that read.
    monkeypatch.setattr(checkpointer, "IDLE_SECONDS", 60.0)
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run())
        cp = db._checkpointer
        assert cp is not None
        restarts = cp.checkpoints["RESTART"]
        with cp.reading_ahead:
            cp._restart_wanted = True
            await db.append_event(run.id, "while reading ahead")
            assert (cp.checkpoints["RESTART"], cp.restart_pending) == (restarts, True)
        for _ in range(100):  # a later batch runs it (unless a PASSIVE is copying then)
            await db.append_event(run.id, "after")
            if not cp.restart_pending:
                break
            await asyncio.sleep(0.01)
        assert (cp.checkpoints["RESTART"], cp.restart_pending) == (restarts + 1, False)

        # The prune's reads hold it, and its batches run the RESTART after them.
        held: list[bool] = []
        warm = maintenance.warm_finished

        def watched(conn: sqlite3.Connection, **kwargs: Any) -> None:
            held.append(cp.reading_ahead.locked())
            warm(conn, **kwargs)

        monkeypatch.setattr(maintenance, "warm_finished", watched)
        await db.update_run_status(run.id, RunStatus.COMPLETED)
        assert len(await db.prune_runs(datetime.now(UTC) + timedelta(days=1))) == 1
        assert held
        assert all(held)
        assert not cp.reading_ahead.locked()


async def test_a_restart_asked_for_during_a_prune_batch_is_asked_for_again_after_it(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run by the next write, it would copy and sync the whole batch while every
    # write waited (the slowest appends beside a prune). It is dropped instead,
    # and the checkpointer asks again once it has copied the batch.
    monkeypatch.setattr(checkpointer, "IDLE_SECONDS", 60.0)
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run())
        await db.create_run(new_run(status="completed"))
        cp = db._checkpointer
        assert cp is not None
        restarts = cp.checkpoints["RESTART"]
        delete = maintenance.delete_finished

        def asked_meanwhile(conn: sqlite3.Connection, **kwargs: Any) -> Any:
            cp._restart_after = cp._bulk_done  # as the checkpointer does when caught up
            cp._restart_wanted = True
            return delete(conn, **kwargs)

        monkeypatch.setattr(maintenance, "delete_finished", asked_meanwhile)
        assert len(await db.prune_runs(datetime.now(UTC) + timedelta(days=1))) == 1
        await db.append_event(run.id, "after the prune")
        assert (cp.checkpoints["RESTART"], cp.restart_pending) == (restarts, False)

        # Asked for once the batch has ended, it runs before a later write (the
        # next, unless a PASSIVE is copying then).
        cp._restart_after = cp._bulk_done
        cp._restart_wanted = True
        for _ in range(100):
            await db.append_event(run.id, "later")
            if not cp.restart_pending:
                break
            await asyncio.sleep(0.01)
        assert (cp.checkpoints["RESTART"], cp.restart_pending) == (restarts + 1, False)


async def test_the_wal_stays_bounded_while_a_prune_runs_beside_an_appender(
    db_path: Path, small_limits: None
) -> None:
    # RESTARTs dropped for the prune's batches must not starve the WAL of them.
    payload = {"text": "x" * 1000}
    async with DB.open(db_path) as db:
        for _ in range(60):
            async with db.transaction() as tx:
                finished = await tx.create_run(new_run(status="completed"))
                for _ in range(100):
                    await tx.append_event(finished.id, "old", payload=payload)
        run = await db.create_run(new_run())
        cp = db._checkpointer
        assert cp is not None
        restarts = cp.checkpoints["RESTART"]
        largest = 0
        pruning = asyncio.create_task(db.prune_runs(datetime.now(UTC) + timedelta(days=1)))
        while not pruning.done():
            await db.append_event(run.id, "beside", payload=payload)
            largest = max(largest, wal_size(db_path))
        assert len(await pruning) == 60
        assert cp.checkpoints["RESTART"] > restarts
        assert await db.check() == []
    assert largest < 8 * 1024 * 1024


async def test_the_database_file_is_flushed_before_each_restart_is_asked_for(
    db_path: Path, small_limits: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A PASSIVE that a steady writer keeps from reaching the WAL's end never
    # syncs the file; the RESTART then synced all it had copied, holding every
    # write up (20 to 70 ms beside a prune on a large file).
    synced: list[tuple[int, int]] = []
    sync = checkpointer._sync

    def watched(fd: int) -> None:
        synced.append((os.fstat(fd).st_ino, cp.checkpoints["RESTART"]))
        sync(fd)

    monkeypatch.setattr(checkpointer, "_sync", watched)
    async with DB.open(db_path) as db:
        cp = db._checkpointer
        assert cp is not None
        run = await db.create_run(new_run())
        for _ in range(2000):
            await db.append_event(run.id, "tick", payload={"text": "x" * 1000})
        restarts = cp.checkpoints["RESTART"]
    assert restarts >= 1
    assert {inode for inode, _ in synced} == {os.stat(db_path).st_ino}
    # Each RESTART comes after a flush, and after the last one before it.
    assert {before for _, before in synced} >= set(range(restarts))


async def test_a_flush_the_disk_fails_leaves_the_restart_to_sync(
    db_path: Path, small_limits: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The flush only moves work off the write path; were a failed one to hold
    # the RESTART back, a disk that fails it every time would grow the WAL forever.
    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(checkpointer, "_sync", failing)
    async with DB.open(db_path) as db:
        cp = db._checkpointer
        assert cp is not None
        run = await db.create_run(new_run())
        largest = 0
        for n in range(3000):
            await db.append_event(run.id, "tick", payload={"text": "x" * 1000})
            if n % 50 == 0:
                largest = max(largest, wal_size(db_path))
        assert cp.checkpoints["RESTART"] >= 1
        assert await db.check() == []
    assert largest < 8 * 1024 * 1024


async def test_a_prune_does_not_pause_for_a_wal_that_started_over_by_itself(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A write that finds the WAL all copied starts it over without a RESTART;
    # "behind" stayed set, and each batch paused PRUNE_PAUSE_SECONDS in full.
    async with finished_runs(db_path, monkeypatch) as (db, cp):
        cp.behind = True  # the WAL was large; now it is not, and no RESTART is wanted
        removed = await prune_all(db)
        assert len(removed) == 2
        assert not cp.behind


async def test_a_prune_inside_a_transaction_block_does_not_pause_for_checkpoints(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nothing it deletes commits before the block ends: pausing could only wait.
    async with finished_runs(db_path, monkeypatch) as (db, cp):
        cp.stop()  # it would not catch up: as if readers pinned the WAL
        cp.behind = True
        async with db.transaction():
            removed = await prune_all(db)
        assert len(removed) == 2
        assert await db.list_runs() == []


def test_the_flush_keeps_the_locks_of_this_process_on_the_file(db_path: Path) -> None:
    # Closing any descriptor of a file drops every POSIX lock the process holds
    # on it: a descriptor of our own, opened to sync and closed, would let
    # another process write under a transaction of this one.
    sqlite3.connect(db_path).execute("CREATE TABLE t (x)").connection.close()
    holder = sqlite3.connect(db_path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        assert checkpointer._descriptor_of(str(db_path)) is not None  # a flush to make
        cp = checkpointer.Checkpointer(str(db_path))
        try:
            cp._flush_database()
        finally:
            cp.stop()
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=0);"
                " c.execute('BEGIN IMMEDIATE')",
                str(db_path),
            ],
            capture_output=True,
            text=True,
        )
        assert other.returncode != 0
        assert "database is locked" in other.stderr
    finally:
        holder.close()


async def test_a_prune_cancelled_anywhere_leaves_no_read_ahead_held(db_path: Path) -> None:
    # Were the lock left held, no RESTART would ever run again and the WAL would grow.
    async with DB.open(db_path) as db:
        for _ in range(60):
            await db.create_run(new_run(status="completed"))
        cp = db._checkpointer
        assert cp is not None
        cutoff = datetime.now(UTC) + timedelta(days=1)
        for delay in (0, 0.0005, 0.001, 0.002, 0.005):
            task = asyncio.create_task(db.prune_runs(cutoff))
            await asyncio.sleep(delay)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await eventually(lambda: not cp.reading_ahead.locked(), seconds=5)
        assert await db.check() == []
        await db.prune_runs(cutoff)  # whatever the cancelled ones left
        assert await db.list_runs() == []


async def test_the_wal_stays_bounded_when_every_write_is_a_transaction_block(
    db_path: Path, small_limits: None
) -> None:
    # The RESTART the checkpointer asks for (and the writer's own truncation)
    # runs before a batch of the writer; a block is no batch, and meanwhile the
    # checkpointer stays out of the way: a daemon writing in blocks saw no
    # checkpoint at all past RESTART_BYTES, and its WAL held every page written.
    payload = {"text": "x" * 1000}
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run())
        largest = 0
        for n in range(3000):
            async with db.transaction() as tx:
                await tx.append_event(run.id, "tick", payload=payload)
            if n % 50 == 0:
                largest = max(largest, wal_size(db_path))
        assert db._checkpointer is not None
        assert db._checkpointer.checkpoints["RESTART"] >= 1
        assert await db.check() == []
    assert largest < 8 * 1024 * 1024


async def test_a_file_opened_through_a_symbolic_link_has_its_wal_measured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SQLite keeps the WAL beside the file the link points to, not beside the link:
    # stats() said 0 bytes, and the writer's WAL_LIMIT_BYTES safety net never fired.
    monkeypatch.setattr(checkpointer, "IDLE_SECONDS", 60.0)
    (tmp_path / "real").mkdir()
    real = tmp_path / "real" / "state.db"
    link = tmp_path / "state.db"
    link.symlink_to(real)
    async with DB.open(link) as db:
        run = await db.create_run(new_run())
        async with db.transaction() as tx:
            for _ in range(100):
                await tx.append_event(run.id, "tick", payload={"text": "x" * 1000})
        assert db._checkpointer is not None
        assert wal_size(real) > 0
        assert (await db.stats()).wal_bytes == wal_size(real)
        assert db._checkpointer._wal_bytes() == wal_size(real)
