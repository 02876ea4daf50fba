"""Cancellation fuzzing: thousands of calls cancelled at random points, inside blocks too."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import Awaitable
from pathlib import Path

from daemon_db import DB, EventRecord, Run, RunStatus
from tests.helpers import new_run, new_unit, report

ROUNDS, CALLS = 120, 25


CANCELLED = object()


async def _cancel_at_random(rng: random.Random, work: Awaitable[object]) -> object:
    """Run ``work`` as a task, maybe cancel it after a random short delay; return its outcome."""
    task = asyncio.ensure_future(work)
    if rng.random() < 0.6:
        await asyncio.sleep(rng.random() * 0.002)
        task.cancel()
    try:
        return await task
    except asyncio.CancelledError:
        return CANCELLED


async def test_cancelled_calls_happen_completely_or_not_at_all(db_path: Path) -> None:
    rng = random.Random(20261127)
    async with DB.open(db_path) as db:
        logs = [await db.create_run(new_run(status="running")) for _ in range(4)]
        acknowledged: list[EventRecord] = []

        async def append(run: Run) -> None:
            acknowledged.append(await db.append_event(run.id, "tick", payload=rng.random()))

        async def block() -> None:
            async with db.transaction() as tx:
                run = await tx.create_run(new_run(status="running", tasks_dir="block"))
                await tx.create_unit(new_unit(run, "u1"))
                await asyncio.sleep(rng.random() * 0.001)
                await tx.append_event(run.id, "a")
                await db.append_event(run.id, "b")  # joins the block

        async def create_and_complete() -> None:
            run = await db.create_run(new_run(status="running", tasks_dir="solo"))
            await db.complete_run(run.id, rng.choice(list(RunStatus)[2:]))

        operations = [
            *(lambda run=run: append(run) for run in logs),
            block,
            create_and_complete,
        ]
        cancelled = 0
        for _ in range(ROUNDS):
            outcomes = await asyncio.gather(
                *(_cancel_at_random(rng, rng.choice(operations)()) for _ in range(CALLS))
            )
            cancelled += sum(outcome is CANCELLED for outcome in outcomes)

        # Every acknowledged event is stored as acknowledged; sequences have no gaps.
        for run in await db.list_runs():
            events = await db.list_events(run.id)
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        stored = {e.id: e for run in logs for e in await db.list_events(run.id)}
        assert all(stored[event.id] == event for event in acknowledged)

        # Blocks are all or nothing; a finished run has its run_completed event.
        for run in await db.list_runs():
            if run in logs:
                continue
            events = [e.event_type for e in await db.list_events(run.id)]
            units = await db.list_units_by_run(run.id)
            if run.tasks_dir == "block":
                assert (run.status, len(units), events) == (RunStatus.RUNNING, 1, ["a", "b"])
            elif run.status is RunStatus.RUNNING:  # complete_run was cancelled before it ran
                assert (units, events) == ([], [])
            else:
                assert (units, events) == ([], ["run_completed"])

        # Nothing is left open: a block and a plain write still go through.
        async with asyncio.timeout(10), db.transaction() as tx:
            await tx.append_event(logs[0].id, "after")
        await db.append_event(logs[0].id, "after")

    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    report(
        f"cancellation fuzzing: {ROUNDS * CALLS:,} calls, {cancelled:,} cancelled at random"
        " points (inside transaction blocks and complete_run too); store consistent, 0 lost"
    )


async def test_blocks_cancelled_as_they_begin_leave_nothing_open(where: str | Path) -> None:
    # On PostgreSQL each took a pooled connection with it, idle in transaction:
    # after ten (the pool's size) every call waited for ever, close() too.
    async with DB.open(where) as db:
        run = await db.create_run(new_run(status="running"))

        async def block() -> None:
            async with db.transaction() as tx:
                await tx.append_event(run.id, "in a block")

        for _ in range(15):
            task = asyncio.create_task(block())
            await asyncio.sleep(0)  # it is beginning
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        appended = await asyncio.wait_for(db.append_event(run.id, "after"), 30)
        assert [e.sequence for e in await db.list_events(run.id)] == list(
            range(1, appended.sequence + 1)
        )
        await asyncio.wait_for(db.close(), 30)


async def test_close_of_a_read_only_db_waits_for_the_calls_under_way(where: str | Path) -> None:
    async with DB.open(where) as db:
        run = await db.create_run(new_run(status="running"))
    reader = await DB.open(where, readonly=True)

    async def block() -> int:
        async with reader.transaction() as tx:
            return await tx.get_next_sequence(run.id)

    calls = [asyncio.create_task(reader.get_run(run.id)) for _ in range(15)]
    blocks = [asyncio.create_task(block()) for _ in range(15)]
    await asyncio.sleep(0)  # all of them under way
    await reader.close()
    assert await asyncio.gather(*calls) == [run] * 15  # on PostgreSQL: 'pool is closing'
    assert await asyncio.gather(*blocks) == [1] * 15


async def test_a_call_whose_cancel_was_accepted_always_ends_cancelled(where: str | Path) -> None:
    # Cancelled at each moment of its way, a call either had finished (cancel()
    # returns False) or raises CancelledError: never does it go on as if not
    # cancelled (a read-only block's exit swallowed a cancellation arriving
    # while it closed its connection, and its task ran on past the block).
    async with DB.open(where) as db:
        run = await db.create_run(new_run(status="running"))
    async with DB.open(where) as db, DB.open(where, readonly=True) as reader:
        went_on: list[str] = []

        async def in_a_block(of: DB, name: str) -> None:
            async with of.transaction() as tx:
                await tx.get_run(run.id)
            went_on.append(name)

        calls = {
            "get_run": lambda: db.get_run(run.id),
            "append_event": lambda: db.append_event(run.id, "tick"),
            "resumable_runs": lambda: reader.resumable_runs(),
            "block": lambda: in_a_block(db, "block"),
            "read-only block": lambda: in_a_block(reader, "read-only block"),
        }
        for name, call in calls.items():
            for step in range(200):  # 0 to 6 ms, past the end of each call
                task = asyncio.ensure_future(call())
                await asyncio.sleep(step * 0.00003)
                went_on.clear()
                if task.cancel():
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    assert task.cancelled(), f"{name}, cancelled at step {step}, went on"
                    assert went_on == [], (name, step)
                else:
                    await task
