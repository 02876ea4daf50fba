"""Cancelling tasks at random points never leaves the store half-written or locked."""

from __future__ import annotations

import asyncio
import contextlib
import random
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
