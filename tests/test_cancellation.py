"""Cancelling tasks at random points never leaves the store half-written or locked."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from pathlib import Path

import pytest

from daemon_db import DB
from tests.helpers import new_run, outside_blocks


async def test_a_cancelled_call_returns_only_once_its_work_is_settled(db_path: Path) -> None:
    # Reads go to another connection than writes: if a cancelled write were
    # still in flight when CancelledError reached the caller, a read right
    # after could miss it and a later read see it.
    rng = random.Random(7)
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run())
        cancelled = 0
        for _ in range(300):
            task = asyncio.create_task(db.append_event(run.id, "tick"))
            await asyncio.sleep(rng.random() * 0.0003)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            cancelled += task.cancelled()
            now = len(await db.list_events(run.id))
            await asyncio.sleep(0.001)
            assert len(await db.list_events(run.id)) == now
        assert cancelled > 0
        events = await db.list_events(run.id)
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))


@pytest.mark.parametrize("location", ["file", "memory"])
async def test_cancelling_a_task_waiting_behind_a_block(db_path: Path, location: str) -> None:
    async with DB.open(db_path if location == "file" else ":memory:") as db:
        run = await db.create_run(new_run())
        async with db.transaction() as tx:
            await tx.append_event(run.id, "in block")
            waiting = outside_blocks(db.append_event(run.id, "never"))
            await asyncio.sleep(0.01)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
        # The write was still queued when cancelled: it never ran.
        assert [e.event_type for e in await db.list_events(run.id)] == ["in block"]
        assert (await db.append_event(run.id, "next")).sequence == 2


async def test_a_cancelled_open_closes_what_it_opened_before_it_raises(tmp_path: Path) -> None:
    # aiosqlite left a connection opening on its thread when the open was
    # cancelled: the file was made and migrated after the caller heard
    # CancelledError, and stayed open until garbage collection.
    rng = random.Random(11)
    for warm in ("first", "timed"):  # the first open of a process takes longer
        started = time.perf_counter()
        db = await DB.open(tmp_path / f"{warm}.db")
        takes = time.perf_counter() - started  # cancel within it: this machine's pace
        await db.close()
    cancelled = 0
    for n in range(40):
        path = tmp_path / f"{n}.db"
        task = asyncio.create_task(DB.open(path))
        await asyncio.sleep(rng.random() * takes)
        task.cancel()
        try:
            db = await task
        except asyncio.CancelledError:
            cancelled += 1
            assert _open_on(path) == []
        else:
            await db.close()
    assert cancelled > 10


def _open_on(path: Path) -> list[str]:
    """This process's descriptors on the database file or its -wal and -shm."""
    names = {str(path), f"{path}-wal", f"{path}-shm"}
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        with contextlib.suppress(OSError):
            if (target := os.readlink(fd)) in names:
                found.append(target)
    return found
