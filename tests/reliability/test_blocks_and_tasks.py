"""Transaction blocks and the tasks around them: never a hang, never a lock left held.

Tasks started inside a block (by ``gather``, by ``create_task``, or by
``wait_for`` on Python 3.11) are in the block: their calls join it instead of
waiting for it to end, which would wait forever. A block whose task ends
inside it, or whose event loop is closed under it, is rolled back.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon_db import DB, DaemonDBError, RunStatus
from tests.helpers import new_run, report


async def test_wait_for_inside_a_block_joins_it(db: DB) -> None:
    run = await db.create_run(new_run())
    async with asyncio.timeout(10), db.transaction() as tx:
        event = await asyncio.wait_for(db.append_event(run.id, "in block"), 2)
        assert event.sequence == 1
        assert await asyncio.wait_for(tx.get_next_sequence(run.id), 2) == 2
    assert [e.event_type for e in await db.list_events(run.id)] == ["in block"]


async def test_gather_and_tasks_started_inside_a_block_join_it(db: DB) -> None:
    run = await db.create_run(new_run())
    with pytest.raises(KeyError):
        async with asyncio.timeout(10), db.transaction():
            await asyncio.gather(
                db.append_event(run.id, "a"),
                db.append_event(run.id, "b"),
                db.update_run_status(run.id, RunStatus.RUNNING),
            )
            await asyncio.create_task(db.append_event(run.id, "c"))
            assert len(await db.list_events(run.id)) == 3
            raise KeyError("roll it all back")
    assert await db.list_events(run.id) == []
    assert (await db.get_run(run.id)) == run


async def test_a_task_started_in_a_block_writes_outside_it_once_the_block_ends(db: DB) -> None:
    run = await db.create_run(new_run())
    go_on = asyncio.Event()

    async def later() -> int:
        await go_on.wait()
        return (await db.append_event(run.id, "later")).sequence

    with pytest.raises(KeyError):
        async with db.transaction() as tx:
            await tx.append_event(run.id, "rolled back")
            task = asyncio.create_task(later())
            raise KeyError
    go_on.set()
    assert await task == 1  # not in the block that was rolled back
    assert [e.event_type for e in await db.list_events(run.id)] == ["later"]


async def _events_in_one_snapshot(db: DB, run_id: str) -> AsyncIterator[str]:
    """A helper as a user writes one: it yields inside its block."""
    async with db.transaction() as tx:
        for event in await tx.list_events(run_id):
            yield event.event_type


async def test_a_call_outside_a_generator_suspended_in_its_block_is_refused(db: DB) -> None:
    # The generator runs in its caller's context: after a break, the caller's
    # writes joined the block the generator left open, returned, and were
    # rolled back when it was finalized (adversary pass).
    run = await db.create_run(new_run(status="running"))
    await db.append_event(run.id, "first")
    events = _events_in_one_snapshot(db, run.id)
    async for _ in events:
        break
    for call in (db.create_run(new_run()), db.append_event(run.id, "lost"), db.list_runs()):
        with pytest.raises(DaemonDBError, match=r"await gen\.aclose\(\)"):
            await call
    await events.aclose()
    second = await db.create_run(new_run())
    await db.append_event(run.id, "kept")
    assert [r.id for r in await db.list_runs()] == [run.id, second.id]
    assert [e.event_type for e in await db.list_events(run.id)] == ["first", "kept"]
    async with contextlib.aclosing(_events_in_one_snapshot(db, run.id)) as closing:
        async for _ in closing:
            break
    assert (await db.append_event(run.id, "after aclosing")).sequence == 3
    assert [t async for t in _events_in_one_snapshot(db, run.id)][-1] == "after aclosing"


async def test_calls_in_a_context_manager_s_block_join_it(db: DB) -> None:
    # Its generator yields inside the block on purpose: the code in its
    # 'async with' is in the block, commits with it, and is rolled back with it.
    @contextlib.asynccontextmanager
    async def unit_of_work(db: DB) -> AsyncIterator[None]:
        async with db.transaction():
            yield

    class HandRolled:  # another library's decorator, of the same shape
        def __init__(self, db: DB) -> None:
            self._gen = unit_of_work.__wrapped__(db)  # type: ignore[attr-defined]

        async def __aenter__(self) -> None:
            await anext(self._gen)

        async def __aexit__(self, *exc_info: object) -> None:
            with contextlib.suppress(StopAsyncIteration):
                await anext(self._gen)

    run = await db.create_run(new_run(status="running"))
    async with unit_of_work(db):
        await db.append_event(run.id, "committed")
    with contextlib.suppress(ZeroDivisionError):
        async with unit_of_work(db):
            await db.append_event(run.id, "rolled back")
            raise ZeroDivisionError
    async with HandRolled(db):
        await db.append_event(run.id, "committed too")
    assert [e.event_type for e in await db.list_events(run.id)] == ["committed", "committed too"]


async def test_a_block_whose_task_ends_inside_it_is_rolled_back(db: DB) -> None:
    run = await db.create_run(new_run())

    async def abandon() -> None:
        tx = await db.transaction().__aenter__()
        await tx.append_event(run.id, "never committed")

    with pytest.warns(ResourceWarning, match="never left"):
        await _ended(asyncio.create_task(abandon()))
    async with asyncio.timeout(10):  # later writes and close() used to wait forever
        assert (await db.append_event(run.id, "next")).sequence == 1
        async with db.transaction() as tx:
            await tx.append_event(run.id, "block")
    assert [e.event_type for e in await db.list_events(run.id)] == ["next", "block"]


async def test_a_read_only_block_whose_task_ends_inside_it_is_let_go(where: str | Path) -> None:
    async with DB.open(where) as daemon:
        run = await daemon.create_run(new_run())
    inspector = await DB.open(where, readonly=True)

    async def abandon() -> None:
        tx = await inspector.transaction().__aenter__()
        await tx.get_run(run.id)

    with pytest.warns(ResourceWarning, match="never left"):
        await _ended(asyncio.create_task(abandon()))
    async with asyncio.timeout(10):  # close() waits for blocks under way: not for this one
        async with inspector.transaction() as tx:
            assert await tx.get_run(run.id) == run
        await inspector.close()


async def _ended(task: asyncio.Task[None]) -> None:
    """Wait for a task, then for the callbacks its end runs."""
    await task
    await asyncio.sleep(0)


CLOSED_LOOP = textwrap.dedent(
    """
    import asyncio, sys, time
    from daemon_db import DB
    from tests.helpers import new_run

    path = sys.argv[1]
    holding = None

    async def hold(db):
        async with db.transaction() as tx:
            await tx.create_run(new_run())
            started.set()
            await asyncio.Event().wait()

    async def start():
        global started, holding
        started = asyncio.Event()
        db = await DB.open(path)
        holding = asyncio.get_running_loop().create_task(hold(db))
        await started.wait()
        return db

    loop = asyncio.new_event_loop()
    db = loop.run_until_complete(start())
    loop.close()  # the block's task never finished: the loop is gone under it

    async def after():
        began = time.monotonic()
        async with DB.open(path, busy_timeout=20) as other:
            await other.create_run(new_run())
            runs = await other.list_runs()
        print(len(runs), round(time.monotonic() - began, 1))

    asyncio.run(after())
    """
)


def test_a_loop_closed_under_a_block_releases_the_write_lock(db_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", CLOSED_LOOP, str(db_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent.parent,
    )
    assert result.returncode == 0, result.stderr
    runs, waited = result.stdout.split()
    assert runs == "1"  # the block's run was rolled back; the new one is stored
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,)
    report(
        "blocks and tasks: wait_for, gather and tasks inside a block join it (no hang); a"
        f" block abandoned by its task is rolled back; a loop closed under a block frees the"
        f" write lock ({waited} s later)"
    )


async def test_a_destroyed_task_inside_a_block_rolls_it_back(db_path: Path) -> None:
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run())
        entered = asyncio.Event()

        async def hold() -> None:
            async with db.transaction() as tx:
                await tx.append_event(run.id, "never committed")
                entered.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(hold())
        await entered.wait()
        task.get_coro().close()  # what destroying a pending task does: GeneratorExit inside
        async with asyncio.timeout(10):
            assert (await db.append_event(run.id, "next")).sequence == 1
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, RuntimeError):  # its coroutine is gone
            await task
        assert [e.event_type for e in await db.list_events(run.id)] == ["next"]
