"""iter_runs and iter_events: the listings of list_runs and list_events_since, a page at a time."""

from __future__ import annotations

import gc
import itertools
from typing import Any

import pytest

import daemon_db._operations
from daemon_db import DB, ClosedError, EventRecord, InvalidRecordError, Run, RunStatus
from tests.helpers import new_run


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_db._operations, "ITER_PAGE_SIZE", 3)


async def collected(rows: Any) -> list[Any]:
    return [row async for row in rows]


async def test_iter_runs_yields_what_list_runs_returns_for_every_filter(db: DB) -> None:
    for n in range(8):
        status = [RunStatus.PENDING, RunStatus.COMPLETED][n % 2]
        await db.create_run(new_run(status=status, repo_path=f"/srv/{n % 3}"))
    some = (await db.list_runs())[4].id
    filters: list[dict[str, Any]] = [
        {},
        {"status": "completed"},
        {"status": ["pending", RunStatus.COMPLETED]},
        {"status": []},
        {"repo_path": "/srv/1"},
        {"repo_path": "/srv/1", "status": "pending"},
        {"newest_first": True},
        {"after": some},
        {"after": some, "newest_first": True},
        *({"limit": n} for n in range(10)),
        {"limit": 4, "newest_first": True, "status": "pending"},
    ]
    for chosen in filters:
        assert await collected(db.iter_runs(**chosen)) == await db.list_runs(**chosen), chosen
    run = (await db.list_runs())[0]
    assert await collected(db.iter_runs(feature_branch=run.feature_branch)) == [run]


async def test_iter_events_yields_what_list_events_since_returns(db: DB) -> None:
    run = await db.create_run(new_run())
    for n in range(10):
        await db.append_event(run.id, "tick", payload=n)
    for since in (0, 1, 3, 6, 9, 10, 99):
        assert await collected(db.iter_events(run.id, since)) == await db.list_events_since(
            run.id, since
        )
    assert await collected(db.iter_events("no such run")) == []


async def test_arguments_are_checked_by_the_call_itself(db: DB) -> None:
    with pytest.raises(InvalidRecordError):
        db.iter_events("run", -1)
    with pytest.raises(InvalidRecordError):
        db.iter_events("")
    with pytest.raises(InvalidRecordError):
        db.iter_runs(status="RUNNING")
    with pytest.raises(InvalidRecordError):
        db.iter_runs(limit=-1)
    with pytest.raises(InvalidRecordError):
        db.iter_runs(newest_first=1)  # type: ignore[arg-type]


async def test_an_iteration_holds_one_page_at_a_time(db: DB) -> None:
    run = await db.create_run(new_run())
    for _ in range(12):
        await db.append_event(run.id, "tick")
    alive: list[int] = []
    async for _event in db.iter_events(run.id):
        gc.collect()
        alive.append(sum(isinstance(o, EventRecord) for o in gc.get_objects()))
    assert max(alive) <= 2 * 3  # this page, and at most the next one being built


async def test_the_next_step_after_close_raises(db_path: Any) -> None:
    db = await DB.open(db_path)
    for _ in range(5):
        await db.create_run(new_run())
    runs = db.iter_runs()
    first = await anext(runs)
    assert isinstance(first, Run)
    await db.close()
    with pytest.raises(ClosedError):  # the rest of the page is read, but not handed out
        await anext(runs)


async def test_iteration_inside_a_transaction_block_sees_its_writes(db: DB) -> None:
    async with db.transaction() as tx:
        created = [await tx.create_run(new_run()) for _ in range(4)]
        assert await collected(tx.iter_runs()) == created
        assert await collected(db.iter_runs()) == created  # the block's task joins it
    assert list(itertools.islice(await db.list_runs(), 4)) == created
