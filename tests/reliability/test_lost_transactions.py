"""When SQLite ends a transaction by itself, nothing may look committed.

On some errors (a full disk, an I/O error, out of memory, an interrupt) SQLite
rolls the *whole* transaction back, not just the failing statement. A block
whose caller catches that error and carries on must not then end as if its
earlier writes were stored. The disk fills here through ``max_page_count`` with
a small page cache: the transaction's pages spill, the spill fails with
SQLITE_FULL, and SQLite gives the transaction up (as on a full tmpfs).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from daemon_db import DB, DatabaseError, EventRecord, Run, RunStatus
from daemon_db._sqlite import bridge
from tests.helpers import new_run, report

# What these check is the SQLite engine's own (its file, writer, thread or
# limits); the PostgreSQL engine is checked by the contract tests and test_hosts.py.
pytestmark = pytest.mark.sqlite_only

BIG = "x" * 300_000


async def _nearly_full(db: DB) -> Run:
    """A run in a database that holds ~1 MiB more, with a page cache too small to hold it."""
    run = await db.create_run(new_run(status="running"))
    assert db._writer is not None

    def limit(conn: sqlite3.Connection) -> None:
        # An append that fires a trigger (the kept event count) runs with a
        # statement journal, and SQLite then undoes only that statement when
        # the disk fills. Without it, SQLite gives the whole transaction up,
        # which is the case these tests are about.
        conn.execute("DROP TRIGGER events_counted_in")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute("PRAGMA cache_size = 10")
        conn.execute(f"PRAGMA max_page_count = {pages + 300}")

    await bridge.submit(db._writer.connection, limit)
    return run


async def _room_again(db: DB) -> None:
    assert db._writer is not None
    await bridge.submit(
        db._writer.connection, lambda conn: conn.execute("PRAGMA max_page_count = 1000000")
    )


async def test_a_block_that_sqlite_rolled_back_never_ends_as_committed(db_path: Path) -> None:
    async with DB.open(db_path) as db:
        run = await _nearly_full(db)
        acknowledged: list[EventRecord] = []
        with pytest.raises(DatabaseError, match="nothing done in this transaction block") as left:
            async with db.transaction() as tx:
                for n in range(3):
                    acknowledged.append(await tx.append_event(run.id, "big", payload=[n, BIG]))
                with pytest.raises(DatabaseError, match="full") as full:
                    await tx.append_event(run.id, "too big", payload="y" * 1_000_000)
                assert "rolled the whole transaction back" in str(full.value)
                # The block is dead: every later call raises, reads included.
                with pytest.raises(DatabaseError, match="nothing done"):
                    await tx.append_event(run.id, "small")
                with pytest.raises(DatabaseError, match="nothing done"):
                    await tx.get_run(run.id)
                with pytest.raises(DatabaseError, match="nothing done"):
                    await db.complete_run(run.id, RunStatus.COMPLETED)  # joins the block
                # ...and the caller leaves the block normally, as the contract allows.
        assert left.value.path == str(db_path)
        assert len(acknowledged) == 3
        assert await db.list_events(run.id) == []  # nothing was committed, and it said so
        assert (await db.get_run(run.id)) == run
        await _room_again(db)
        async with db.transaction() as tx:  # the writer is free again
            await tx.append_event(run.id, "after")
        assert [e.event_type for e in await db.list_events(run.id)] == ["after"]


async def test_leaving_a_dead_block_with_an_error_also_says_nothing_was_committed(
    db_path: Path,
) -> None:
    async with DB.open(db_path) as db:
        run = await _nearly_full(db)
        with pytest.raises(DatabaseError, match="nothing done") as left:
            async with db.transaction() as tx:
                await tx.append_event(run.id, "big", payload=BIG)
                try:
                    await tx.append_event(run.id, "too big", payload="y" * 1_000_000)
                except DatabaseError:
                    raise KeyError("the caller's own error") from None
        assert isinstance(left.value.__context__, KeyError)
        assert await db.list_events(run.id) == []


async def test_cancelling_a_dead_block_still_raises_cancelled_error(db_path: Path) -> None:
    async with DB.open(db_path) as db:
        run = await _nearly_full(db)
        dead = asyncio.Event()

        async def work() -> None:
            async with db.transaction() as tx:
                await tx.append_event(run.id, "big", payload=BIG)
                with pytest.raises(DatabaseError):
                    await tx.append_event(run.id, "too big", payload="y" * 1_000_000)
                dead.set()
                await asyncio.sleep(3600)

        task = asyncio.create_task(work())
        await dead.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await db.list_events(run.id) == []


async def test_complete_run_that_fills_the_disk_stores_nothing(db_path: Path) -> None:
    async with DB.open(db_path) as db:
        run = await _nearly_full(db)
        await db.append_event(run.id, "big", payload=BIG)
        with pytest.raises(DatabaseError, match="full"):
            await db.complete_run(run.id, RunStatus.FAILED, error="e" * 700_000)
        assert (await db.get_run(run.id)) == run  # still running: status and event, or neither
        assert [e.event_type for e in await db.list_events(run.id)] == ["big"]


async def test_a_group_commit_batch_that_fills_the_disk_acknowledges_only_what_it_stored(
    db_path: Path,
) -> None:
    async with DB.open(db_path) as db:
        run = await _nearly_full(db)
        outcomes = await asyncio.gather(
            *(db.append_event(run.id, f"w{n}", payload=[n, BIG]) for n in range(8)),
            return_exceptions=True,
        )
        stored = {e.event_type for e in await db.list_events(run.id)}
        acknowledged = {o.event_type for o in outcomes if isinstance(o, EventRecord)}
        failed = [o for o in outcomes if not isinstance(o, EventRecord)]
        assert all(isinstance(o, DatabaseError) for o in failed), failed
        assert failed, "the disk never filled"
        assert acknowledged == stored  # every acknowledged write stored, no failed one
        events = await db.list_events(run.id)
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    report(
        "lost transactions: a block, complete_run and a group-commit batch that SQLite rolled"
        " back (full disk) each raise; nothing unstored was acknowledged"
    )
