"""transaction(), complete_run and resumable_runs: all or nothing, isolation, snapshots."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

import daemon_db._sqlite.events
from daemon_db import (
    DB,
    DaemonDBError,
    InvalidRecordError,
    ReadOnlyError,
    RunExistsError,
    RunNotFoundError,
    RunStatus,
    UnitStatus,
    new_run_id,
)
from daemon_db._operations import Operations
from tests.helpers import dump, new_run, new_unit, outside_blocks


class Boom(Exception):
    pass


async def test_transaction_commits_everything_in_the_block(db: DB) -> None:
    async with db.transaction() as tx:
        run = await tx.create_run(new_run(status="running"))
        unit = await tx.create_unit(new_unit(run, "u1"))
        await tx.update_unit_status(unit.id, UnitStatus.RUNNING)
        await tx.append_event(run.id, "unit_started", unit_id="u1")
        assert await tx.get_run(run.id) == run  # the block sees its own writes
    assert await db.get_run(run.id) == run
    assert [u.status for u in await db.list_units_by_run(run.id)] == [UnitStatus.RUNNING]
    assert len(await db.list_events(run.id)) == 1


async def test_transaction_rolls_back_on_exception_and_propagates_it(db: DB) -> None:
    kept = await db.create_run(new_run())
    with pytest.raises(Boom):
        async with db.transaction() as tx:
            run = await tx.create_run(new_run())
            await tx.append_event(kept.id, "lost")
            await tx.update_run_status(kept.id, RunStatus.RUNNING)
            raise Boom
    assert await db.get_run(run.id) is None
    assert await db.get_run(kept.id) == kept
    assert await db.list_events(kept.id) == []
    assert await db.get_next_sequence(kept.id) == 1


async def test_a_failing_call_undoes_only_itself_and_the_block_goes_on(db: DB) -> None:
    branch = {"feature_branch": "feature/tx", "repo_path": "/srv/app"}
    async with db.transaction() as tx:
        first = await tx.create_run(new_run(**branch))
        await tx.append_event(first.id, "one")
        with pytest.raises(RunExistsError):
            await tx.create_run(new_run(**branch))
        with pytest.raises(RunNotFoundError):
            await tx.append_event(new_run_id(), "nowhere")
        with pytest.raises(InvalidRecordError):
            await tx.append_event(first.id, "bad", payload=float("nan"))
        second = await tx.append_event(first.id, "two")
    assert second.sequence == 2
    assert await db.list_runs() == [first]
    assert [e.event_type for e in await db.list_events(first.id)] == ["one", "two"]


async def test_calls_on_the_db_by_the_same_task_join_the_block(db: DB) -> None:
    with pytest.raises(Boom):
        async with db.transaction():
            run = await db.create_run(new_run())  # no deadlock: it joins
            await db.append_event(run.id, "joined")
            assert await db.get_run(run.id) == run
            assert len(await db.list_events(run.id)) == 1
            raise Boom
    assert await db.get_run(run.id) is None


async def test_transactions_do_not_nest(db: DB) -> None:
    async with db.transaction() as tx:
        run = await tx.create_run(new_run())
        with pytest.raises(DaemonDBError, match="nest"):
            async with db.transaction():
                pass
        await tx.append_event(run.id, "still usable")
    assert len(await db.list_events(run.id)) == 1


async def test_tx_is_unusable_after_its_block(db: DB) -> None:
    async with db.transaction() as tx:
        pass
    with pytest.raises(DaemonDBError):
        await tx.create_run(new_run())
    assert await db.list_runs() == []


async def test_other_tasks_do_not_see_uncommitted_writes_and_their_reads_do_not_wait(
    file_db: DB,
) -> None:
    db = file_db
    existing = await db.create_run(new_run())
    async with db.transaction() as tx:
        run = await tx.create_run(new_run())
        await tx.update_run_status(existing.id, RunStatus.RUNNING)
        async with asyncio.timeout(10):  # would hang if reads waited for the block
            assert await outside_blocks(db.get_run(run.id)) is None
            assert await outside_blocks(db.get_run(existing.id)) == existing
            assert await outside_blocks(db.list_runs()) == [existing]
    assert await asyncio.create_task(db.get_run(run.id)) == run


async def test_other_tasks_writes_wait_until_the_block_ends(db: DB) -> None:
    run = await db.create_run(new_run())
    async with db.transaction() as tx:
        await tx.append_event(run.id, "in block")
        outsider = outside_blocks(db.append_event(run.id, "outside"))
        await asyncio.sleep(0.05)
        assert not outsider.done()
        await tx.append_event(run.id, "in block again")
    outside = await outsider
    assert outside.sequence == 3
    assert [e.event_type for e in await db.list_events(run.id)] == [
        "in block",
        "in block again",
        "outside",
    ]


@pytest.mark.parametrize("turns", [0, 1, 2, 3, 5])
async def test_a_call_under_way_by_a_task_started_inside_the_block_ends_in_it(
    db: DB, turns: int
) -> None:
    # On PostgreSQL the block's COMMIT ran beside the call: the block said the
    # connection was lost, or it committed, and the task was told that nothing
    # it did was (adversary pass). However far the call got, both are stored.
    run = await db.create_run(new_run())
    async with db.transaction() as tx:
        await tx.append_event(run.id, "in the block")
        started = asyncio.create_task(db.append_event(run.id, "by a task started in it"))
        for _ in range(turns):
            await asyncio.sleep(0)
    assert (await started).sequence == 2
    assert [e.event_type for e in await db.list_events(run.id)] == [
        "in the block",
        "by a task started in it",
    ]


async def test_in_memory_reads_by_other_tasks_wait_for_the_block() -> None:
    async with DB.open(":memory:") as db:
        async with db.transaction() as tx:
            run = await tx.create_run(new_run())
            reader = outside_blocks(db.get_run(run.id))
            await asyncio.sleep(0.05)
            assert not reader.done()
        assert await reader == run


# SQLite has one writer, so blocks run one after another; PostgreSQL runs them
# side by side, and only writes to the same rows wait for each other.
@pytest.mark.sqlite_only
async def test_other_tasks_blocks_wait_their_turn(db: DB) -> None:
    run = await db.create_run(new_run())
    order: list[str] = []

    async def block(name: str) -> None:
        async with db.transaction() as tx:
            order.append(f"{name} begins")
            await tx.append_event(run.id, name)
            await asyncio.sleep(0.01)
            order.append(f"{name} ends")

    await asyncio.gather(block("a"), block("b"), block("c"))
    assert order == ["a begins", "a ends", "b begins", "b ends", "c begins", "c ends"]
    assert [e.sequence for e in await db.list_events(run.id)] == [1, 2, 3]


async def test_cancelling_the_task_inside_a_block_rolls_it_back(db: DB) -> None:
    run = await db.create_run(new_run())
    inside = asyncio.Event()

    async def work() -> None:
        async with db.transaction() as tx:
            await tx.append_event(run.id, "doomed")
            await tx.update_run_status(run.id, RunStatus.RUNNING)
            inside.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(work())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await db.list_events(run.id) == []
    assert await db.get_run(run.id) == run
    # Nothing is left open: the next block and plain writes work.
    async with db.transaction() as tx:
        await tx.append_event(run.id, "next")
    assert (await db.append_event(run.id, "after")).sequence == 2


async def test_a_read_only_db_s_block_reads_one_snapshot_and_refuses_writes(
    where: str | Path,
) -> None:
    # It raised ReadOnlyError on entering: an inspector could not read a run,
    # its units and its events as they stood together.
    async with DB.open(where) as daemon, DB.open(where, readonly=True) as inspector:
        run = await daemon.create_run(new_run(status="running"))
        await daemon.append_event(run.id, "first")
        asked = asyncio.Event()
        other = asyncio.create_task(_events_when(asked, inspector, run.id))  # outside the block
        async with inspector.transaction() as tx:
            await daemon.append_event(run.id, "meanwhile")
            assert len(await tx.list_events(run.id)) == 1  # as when the block began
            assert len(await inspector.list_events(run.id)) == 1  # the task's calls join it
            asked.set()
            assert await other == 2  # another task's do not, nor wait for it
            for write in (
                lambda: tx.append_event(run.id, "refused"),
                lambda: inspector.update_run_status(run.id, RunStatus.FAILED),
                lambda: inspector.prune_runs(datetime.now(UTC)),
            ):
                with pytest.raises(ReadOnlyError):
                    await write()
            assert await tx.get_next_sequence(run.id) == 2  # the block goes on
        assert len(await inspector.list_events(run.id)) == 2
        closing = asyncio.create_task(_close_during_a_block(inspector))
        assert await closing == ["in the block", "closed"]


async def _events_when(asked: asyncio.Event, db: DB, run_id: str) -> int:
    await asked.wait()
    return len(await db.list_events(run_id))


async def _close_during_a_block(db: DB) -> list[str]:
    """close() waits for a read-only DB's block under way, as for a writer's."""
    said: list[str] = []
    inside = asyncio.Event()

    async def block() -> None:
        async with db.transaction() as tx:
            inside.set()
            await asyncio.sleep(0.05)
            await tx.list_runs()
            said.append("in the block")

    task = asyncio.create_task(block())
    await inside.wait()
    await db.close()
    said.append("closed")
    await task
    return said


# complete_run


async def test_complete_run_sets_the_status_and_logs_the_event(db: DB) -> None:
    run = await db.create_run(new_run(status="running"))
    await db.append_event(run.id, "work")
    done = await db.complete_run(run.id, RunStatus.FAILED, error="unit u2 failed")
    assert done.status is RunStatus.FAILED
    assert done.error == "unit u2 failed"
    assert done.completed_at is not None
    last = (await db.list_events(run.id))[-1]
    assert (last.sequence, last.event_type) == (2, "run_completed")
    assert last.payload == {"status": "failed", "error": "unit u2 failed"}
    assert last.payload_json == '{"status":"failed","error":"unit u2 failed"}'

    ok = await db.create_run(new_run())
    await db.complete_run(ok.id, "completed")  # type: ignore[arg-type]
    assert (await db.list_events(ok.id))[-1].payload == {"status": "completed", "error": None}


async def test_complete_run_needs_a_finished_status(db: DB) -> None:
    run = await db.create_run(new_run())
    for status in ["pending", "running", "paused"]:
        with pytest.raises(InvalidRecordError):
            await db.complete_run(run.id, status)  # type: ignore[arg-type]
    assert await db.get_run(run.id) == run
    assert await db.list_events(run.id) == []


async def test_complete_run_of_an_unknown_run(db: DB) -> None:
    with pytest.raises(RunNotFoundError):
        await db.complete_run(new_run_id(), RunStatus.COMPLETED)


async def test_complete_run_is_all_or_nothing(
    file_db: DB, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = await file_db.create_run(new_run(status="running"))
    before = dump(db_path)

    def fail(*args: object, **kwargs: object) -> None:
        raise Boom("the event could not be written")

    # The status update succeeds, then the event append fails: both must be undone.
    monkeypatch.setattr(daemon_db._sqlite.events, "append", fail)
    with pytest.raises(Boom):
        await file_db.complete_run(run.id, RunStatus.COMPLETED)
    assert await file_db.get_run(run.id) == run
    assert dump(db_path) == before


async def test_complete_run_inside_a_block(db: DB) -> None:
    run = await db.create_run(new_run(status="running"))
    with pytest.raises(Boom):
        async with db.transaction() as tx:
            await tx.complete_run(run.id, RunStatus.COMPLETED)
            raise Boom
    assert await db.get_run(run.id) == run
    assert await db.list_events(run.id) == []


# resumable_runs


async def test_resumable_runs_lists_active_runs_with_units_and_next_sequence(db: DB) -> None:
    running = await db.create_run(new_run(status="running"))
    await db.create_unit(new_unit(running, "b", status="completed"))
    await db.create_unit(new_unit(running, "a", status="running"))
    for _ in range(4):
        await db.append_event(running.id, "tick")
    pending = await db.create_run(new_run())
    done = await db.create_run(new_run(status="running"))
    await db.complete_run(done.id, RunStatus.COMPLETED)

    resumable = await db.resumable_runs()
    assert [r.run for r in resumable] == [running, pending]
    assert [u.unit_id for u in resumable[0].units] == ["a", "b"]
    assert resumable[0].units == await db.list_units_by_run(running.id)
    assert resumable[0].next_sequence == 5
    assert (resumable[1].units, resumable[1].next_sequence) == ([], 1)

    async with db.transaction() as tx:
        assert [r.run.id for r in await tx.resumable_runs()] == [running.id, pending.id]


async def test_resumable_runs_reads_one_consistent_snapshot(db: DB) -> None:
    # Each block adds a unit to a run and logs an event for it, so in any one
    # state of the database a run has exactly next_sequence - 1 units. Reads
    # made at different moments would see a unit without its event, or the
    # reverse, as blocks commit between them.
    runs = [await db.create_run(new_run(status="running")) for _ in range(3)]

    async def write(n: int) -> None:
        for i in range(n):
            run = runs[i % len(runs)]
            async with db.transaction() as tx:
                await tx.create_unit(new_unit(run, f"u{i:04d}"))
                await tx.append_event(run.id, "unit_added")

    async def check(until: asyncio.Task[None]) -> int:
        snapshots = 0
        while not until.done():
            for resumable in await db.resumable_runs():
                assert len(resumable.units) == resumable.next_sequence - 1
            snapshots += 1
            await asyncio.sleep(0)
        return snapshots

    writer = asyncio.create_task(write(300))
    assert await check(writer) > 0
    await writer
    assert [r.next_sequence for r in await db.resumable_runs()] == [101, 101, 101]


async def test_a_block_shows_only_the_operations_and_its_state(db: DB) -> None:
    # The engine's connection and the block's own bookkeeping are not for callers:
    # a statement on that connection would bypass every check and error mapping.
    async with db.transaction() as tx:
        public = {name for name in dir(tx) if not name.startswith("_")}
    operations = {name for name in dir(Operations) if not name.startswith("_")}
    assert public == operations | {"ended", "lost"}


async def test_a_block_used_without_async_with_says_what_is_missing(db: DB) -> None:
    block = db.transaction()
    with pytest.raises(AttributeError, match=r"'async with db.transaction\(\) as tx'"):
        block.get_run  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        block.nothing  # type: ignore[attr-defined]  # noqa: B018
    plain_with = r"write 'async with db.transaction\(\) as tx', not 'with'"
    with pytest.raises(TypeError, match=plain_with), block:
        pass
    async with block as tx:  # and it still works
        assert await tx.list_runs() == []
