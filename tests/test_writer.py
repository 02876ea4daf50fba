"""The group-commit writer: batches, each write's own outcome, order around transaction blocks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import daemon_db._sqlite.events
import daemon_db._sqlite.work
from daemon_db import DB, RunExistsError, RunNotFoundError, RunStatus, new_run_id
from tests.helpers import new_run, outside_blocks

# What these check is the SQLite engine's own (its file, writer, thread or
# limits); the PostgreSQL engine is checked by the contract tests and test_hosts.py.
pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records the size of every batch the writer sends."""
    sizes: list[int] = []
    real = daemon_db._sqlite.work.write_batch

    def recording(conn: Any, works: Any, path: str) -> Any:
        sizes.append(len(works))
        return real(conn, works, path)

    monkeypatch.setattr(daemon_db._sqlite.writer, "write_batch", recording)
    monkeypatch.setattr(daemon_db._sqlite.work, "write_batch", recording)  # a write alone
    return sizes


async def test_concurrent_writes_share_commits(db: DB, batch_sizes: list[int]) -> None:
    run = await db.create_run(new_run())
    batch_sizes.clear()
    appended = await asyncio.gather(*(db.append_event(run.id, "tick") for _ in range(300)))
    assert sorted(e.sequence for e in appended) == list(range(1, 301))
    assert sum(batch_sizes) == 300
    assert len(batch_sizes) < 300  # grouped
    assert max(batch_sizes) > 1


async def test_each_write_of_a_batch_gets_its_own_outcome(db: DB) -> None:
    branch = {"feature_branch": "feature/busy", "repo_path": "/srv/app"}
    run = await db.create_run(new_run(**branch))
    calls = [
        db.append_event(run.id, "ok"),
        db.append_event(new_run_id(), "to nowhere"),
        db.create_run(new_run(**branch)),  # the branch already has an active run
        db.append_event(run.id, "ok"),
        db.update_run_status(run.id, RunStatus.RUNNING),
        db.append_event(run.id, "ok"),
    ]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(outcomes[1], RunNotFoundError)
    assert isinstance(outcomes[2], RunExistsError)
    assert [e.sequence for e in outcomes if hasattr(e, "sequence")] == [1, 2, 3]
    assert (await db.get_run(run.id)).status is RunStatus.RUNNING  # type: ignore[union-attr]
    assert len(await db.list_runs()) == 1


async def test_a_write_that_fails_half_way_is_undone_alone(
    db: DB, monkeypatch: pytest.MonkeyPatch
) -> None:
    # complete_run updates the run, then its event append fails: in a batch with
    # other writes, the update must be undone and the others kept.
    doomed = await db.create_run(new_run(status="running"))
    other = await db.create_run(new_run(status="running"))
    real = daemon_db._sqlite.events.append

    def append(conn: Any, **fields: Any) -> Any:
        if fields["event_type"] == "run_completed":
            raise RuntimeError("no room for the event")
        return real(conn, **fields)

    monkeypatch.setattr(daemon_db._sqlite.events, "append", append)
    outcomes = await asyncio.gather(
        db.append_event(other.id, "before"),
        db.complete_run(doomed.id, RunStatus.COMPLETED),
        db.append_event(other.id, "after"),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], RuntimeError)
    assert await db.get_run(doomed.id) == doomed
    assert [e.event_type for e in await db.list_events(other.id)] == ["before", "after"]


async def test_writes_queued_before_a_block_go_first_and_after_it_wait(db: DB) -> None:
    run = await db.create_run(new_run())
    before = [asyncio.create_task(db.append_event(run.id, "before")) for _ in range(5)]
    await asyncio.sleep(0)  # queued (one batch may be on the thread)
    async with db.transaction() as tx:
        assert all(task.done() for task in before)
        after = outside_blocks(db.append_event(run.id, "after"))
        await tx.append_event(run.id, "block")
        await asyncio.sleep(0.01)
        assert not after.done()
    await after
    assert [e.event_type for e in await db.list_events(run.id)] == [
        *["before"] * 5,
        "block",
        "after",
    ]


async def test_a_write_cancelled_while_queued_never_runs(db: DB, batch_sizes: list[int]) -> None:
    run = await db.create_run(new_run())
    async with db.transaction():  # holds the writer: the writes below stay queued
        queued = [outside_blocks(db.append_event(run.id, str(n))) for n in range(4)]
        await asyncio.sleep(0)
        queued[1].cancel()
        queued[2].cancel()
        batch_sizes.clear()
    done = await asyncio.gather(*queued, return_exceptions=True)
    assert [type(outcome).__name__ for outcome in done] == [
        "EventRecord",
        "CancelledError",
        "CancelledError",
        "EventRecord",
    ]
    assert batch_sizes[0] == 2  # the two left, in one batch
    assert [e.event_type for e in await db.list_events(run.id)] == ["0", "3"]
