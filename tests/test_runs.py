"""Runs: the seed's must-pass tests (``pytest -k test_run``) and the rest of the run API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from daemon_db import (
    DB,
    InvalidRecordError,
    Run,
    RunExistsError,
    RunNotFoundError,
    RunStatus,
    new_run_id,
)
from tests.helpers import new_run, new_unit


def _between(moment: datetime | None, start: datetime, end: datetime) -> bool:
    return moment is not None and start <= moment <= end


# The seed's must-pass tests


async def test_run_create(db: DB) -> None:
    run = new_run(daemon_version="1.4.0", config_json='{"retries": 3}', parallelism=4)
    stored = await db.create_run(run)
    assert stored == run
    assert await db.get_run(run.id) == run


async def test_run_create_duplicate(db: DB) -> None:
    first = await db.create_run(new_run(feature_branch="feature/x", repo_path="/srv/a"))
    with pytest.raises(RunExistsError) as raised:
        await db.create_run(new_run(feature_branch="feature/x", repo_path="/srv/a"))
    assert raised.value.existing_run_id == first.id
    assert raised.value.feature_branch == "feature/x"
    assert raised.value.repo_path == "/srv/a"
    assert str(raised.value) == (
        f"run {first.id!r} is already active (branch 'feature/x' in repo '/srv/a')"
    )
    assert await db.list_runs() == [first]


async def test_run_get_by_branch(db: DB) -> None:
    run = await db.create_run(new_run(feature_branch="feature/login", repo_path="/srv/app"))
    await db.create_run(new_run(feature_branch="feature/login", repo_path="/srv/other"))
    assert await db.get_run_by_branch("feature/login", "/srv/app") == run
    # Exact match on both: no prefix match, no case folding.
    assert await db.get_run_by_branch("feature/log", "/srv/app") is None
    assert await db.get_run_by_branch("Feature/Login", "/srv/app") is None
    assert await db.get_run_by_branch("feature/login", "/srv/ap") is None


async def test_run_get_not_found(db: DB) -> None:
    assert await db.get_run(new_run_id()) is None


async def test_run_update_status(db: DB) -> None:
    run = await db.create_run(new_run())
    assert run.started_at is None
    assert run.completed_at is None

    before = datetime.now(UTC)
    running = await db.update_run_status(run.id, RunStatus.RUNNING)
    after = datetime.now(UTC)
    assert running.status is RunStatus.RUNNING
    assert _between(running.started_at, before, after)
    assert running.completed_at is None

    completed = await db.update_run_status(run.id, RunStatus.COMPLETED)
    assert completed.status is RunStatus.COMPLETED
    assert completed.started_at == running.started_at
    assert _between(completed.completed_at, after, datetime.now(UTC))
    assert await db.get_run(run.id) == completed


async def test_run_update_status_with_error(db: DB) -> None:
    run = await db.create_run(new_run(status=RunStatus.RUNNING))
    failed = await db.update_run_status(run.id, RunStatus.FAILED, error="unit 3 failed: exit 1")
    assert failed.error == "unit 3 failed: exit 1"
    assert (await db.get_run(run.id)) == failed
    cleared = await db.update_run_status(run.id, RunStatus.FAILED, error=None)
    assert cleared.error is None
    assert cleared.completed_at == failed.completed_at


async def test_run_list_by_status(db: DB) -> None:
    pending = [await db.create_run(new_run()) for _ in range(3)]
    running = [await db.create_run(new_run(status="running")) for _ in range(2)]
    failed = await db.create_run(new_run(status=RunStatus.FAILED))
    assert await db.list_runs_by_status(RunStatus.PENDING) == pending
    assert await db.list_runs_by_status(RunStatus.RUNNING) == running
    assert await db.list_runs_by_status(RunStatus.FAILED) == [failed]
    assert await db.list_runs_by_status(RunStatus.CANCELLED) == []


async def test_run_list_incomplete(db: DB) -> None:
    created = [
        await db.create_run(new_run(status=status))
        for status in ["pending", "completed", "running", "failed", "cancelled", "pending"]
    ]
    incomplete = await db.list_incomplete_runs()
    assert incomplete == [run for run in created if run.status in ("pending", "running")]
    assert [run.id for run in incomplete] == sorted(run.id for run in incomplete)


async def test_run_delete(db: DB) -> None:
    run = await db.create_run(new_run())
    kept = await db.create_run(new_run())
    assert await db.delete_run(run.id) is True
    assert await db.get_run(run.id) is None
    assert await db.delete_run(run.id) is False
    assert await db.list_runs() == [kept]


# The rest of the run API


async def test_run_delete_cascades_to_units_and_events(db: DB) -> None:
    run = await db.create_run(new_run())
    unit = await db.create_unit(new_unit(run, "u1"))
    await db.append_event(run.id, "started", unit_id="u1")
    other = await db.create_run(new_run())
    await db.create_unit(new_unit(other, "u1"))
    await db.append_event(other.id, "started")

    assert await db.delete_run(run.id)
    assert await db.get_unit(unit.id) is None
    assert await db.list_units_by_run(run.id) == []
    assert await db.list_events(run.id) == []
    assert len(await db.list_units_by_run(other.id)) == 1
    assert len(await db.list_events(other.id)) == 1


async def test_run_gets_a_fresh_ulid_by_default() -> None:
    first, second = new_run(), new_run()
    assert len(first.id) == 26
    assert first.id < second.id


async def test_run_created_running_gets_started_at(db: DB) -> None:
    before = datetime.now(UTC)
    run = await db.create_run(new_run(status=RunStatus.RUNNING))
    assert _between(run.started_at, before, datetime.now(UTC))
    assert await db.get_run(run.id) == run


async def test_run_created_with_its_own_timestamps_keeps_them(db: DB) -> None:
    started = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    run = await db.create_run(new_run(status="running", started_at=started))
    assert run.started_at == started


async def test_run_created_finished_gets_completed_at(db: DB) -> None:
    before = datetime.now(UTC)
    run = await db.create_run(new_run(status=RunStatus.CANCELLED))
    assert _between(run.completed_at, before, datetime.now(UTC))
    assert run.started_at is None


async def test_run_with_the_same_id_is_refused(db: DB) -> None:
    first = await db.create_run(new_run(feature_branch="feature/a", repo_path="/srv/a"))
    with pytest.raises(RunExistsError) as raised:
        await db.create_run(new_run(id=first.id, feature_branch="feature/b", status="completed"))
    assert raised.value.existing_run_id == first.id
    assert raised.value.feature_branch == "feature/a"
    assert raised.value.repo_path == "/srv/a"
    assert str(raised.value) == (
        f"a run with id {first.id!r} already exists (branch 'feature/a' in repo '/srv/a')"
    )
    assert await db.list_runs() == [first]


async def test_run_finished_runs_stay_as_history_and_do_not_block(db: DB) -> None:
    branch = {"feature_branch": "feature/retry", "repo_path": "/srv/app"}
    first = await db.create_run(new_run(**branch))
    await db.update_run_status(first.id, RunStatus.FAILED, error="boom")
    second = await db.create_run(new_run(**branch))
    assert await db.get_run_by_branch(**branch) == second
    await db.update_run_status(second.id, RunStatus.COMPLETED)
    third = await db.create_run(new_run(**branch, status=RunStatus.RUNNING))
    assert [run.id for run in await db.list_runs(**branch)] == [first.id, second.id, third.id]


async def test_run_one_active_run_per_branch_and_repo(db: DB) -> None:
    branch = {"feature_branch": "feature/one", "repo_path": "/srv/app"}
    await db.create_run(new_run(**branch, status=RunStatus.RUNNING))
    # Same branch in another repo, or another branch in the same repo: allowed.
    await db.create_run(new_run(feature_branch="feature/one", repo_path="/srv/other"))
    await db.create_run(new_run(feature_branch="feature/two", repo_path="/srv/app"))
    for status in (RunStatus.PENDING, RunStatus.RUNNING):
        with pytest.raises(RunExistsError):
            await db.create_run(new_run(**branch, status=status))
    # A finished run of a busy branch can be recorded: it is history.
    await db.create_run(new_run(**branch, status=RunStatus.COMPLETED))


async def test_run_moving_back_to_active_while_another_is_active_is_refused(db: DB) -> None:
    branch = {"feature_branch": "feature/back", "repo_path": "/srv/app"}
    old = await db.create_run(new_run(**branch))
    old = await db.update_run_status(old.id, RunStatus.CANCELLED)
    current = await db.create_run(new_run(**branch))
    for status in (RunStatus.PENDING, RunStatus.RUNNING):
        with pytest.raises(RunExistsError) as raised:
            await db.update_run_status(old.id, status)
        assert raised.value.existing_run_id == current.id
    assert await db.get_run(old.id) == old
    await db.update_run_status(current.id, RunStatus.COMPLETED)
    reopened = await db.update_run_status(old.id, RunStatus.PENDING)
    assert reopened.completed_at is None


async def test_run_get_by_branch_prefers_the_active_run_else_the_newest(db: DB) -> None:
    branch = {"feature_branch": "feature/pick", "repo_path": "/srv/app"}
    first = await db.create_run(new_run(**branch, status="completed"))
    active = await db.create_run(new_run(**branch))
    newest = await db.create_run(new_run(**branch, status="failed"))
    assert await db.get_run_by_branch(**branch) == active
    await db.update_run_status(active.id, RunStatus.CANCELLED)
    assert (await db.get_run_by_branch(**branch)) == newest
    assert first.id < newest.id


async def test_run_update_status_timestamp_rules(db: DB) -> None:
    run = await db.create_run(new_run(status=RunStatus.RUNNING))
    started = run.started_at

    again = await db.update_run_status(run.id, RunStatus.RUNNING, error="note")
    assert (again.started_at, again.completed_at) == (started, None)

    done = await db.update_run_status(run.id, RunStatus.COMPLETED)
    assert done.completed_at is not None
    same = await db.update_run_status(run.id, RunStatus.COMPLETED)
    assert same.completed_at == done.completed_at  # same status: no timestamp changes

    failed = await db.update_run_status(run.id, RunStatus.FAILED)
    assert failed.completed_at is not None
    assert failed.completed_at >= done.completed_at

    back = await db.update_run_status(run.id, RunStatus.PENDING)
    assert back.completed_at is None  # leaving the finished states clears it
    assert back.started_at == started  # started once, kept
    assert await db.get_run(run.id) == back


async def test_run_update_status_of_unknown_run(db: DB) -> None:
    missing = new_run_id()
    with pytest.raises(RunNotFoundError) as raised:
        await db.update_run_status(missing, RunStatus.RUNNING)
    assert raised.value.run_id == missing
    assert isinstance(raised.value, LookupError)
    assert missing in str(raised.value)


async def test_run_status_accepts_strings(db: DB) -> None:
    run = await db.create_run(new_run(status="running"))
    assert run.status is RunStatus.RUNNING
    updated = await db.update_run_status(run.id, "completed")  # type: ignore[arg-type]
    assert updated.status is RunStatus.COMPLETED
    assert await db.list_runs_by_status("completed") == [updated]  # type: ignore[arg-type]


async def test_list_runs_filters(db: DB) -> None:
    a1 = await db.create_run(new_run(feature_branch="a", repo_path="/r1", status="completed"))
    a2 = await db.create_run(new_run(feature_branch="a", repo_path="/r1", status="running"))
    b1 = await db.create_run(new_run(feature_branch="b", repo_path="/r1", status="failed"))
    a3 = await db.create_run(new_run(feature_branch="a", repo_path="/r2"))
    assert await db.list_runs() == [a1, a2, b1, a3]
    assert await db.list_runs(feature_branch="a") == [a1, a2, a3]
    assert await db.list_runs(repo_path="/r1") == [a1, a2, b1]
    assert await db.list_runs(feature_branch="a", repo_path="/r1") == [a1, a2]
    assert await db.list_runs(status="running") == [a2]
    assert await db.list_runs(status=[RunStatus.COMPLETED, "failed"]) == [a1, b1]
    assert await db.list_runs(status=[]) == []
    assert await db.list_runs(status={"pending", "running"}, repo_path="/r2") == [a3]
    assert await db.list_runs(newest_first=True) == [a3, b1, a2, a1]
    assert await db.list_runs(feature_branch="nope") == []


async def test_list_runs_keyset_paging(db: DB) -> None:
    created = [await db.create_run(new_run()) for _ in range(7)]
    pages, after = [], None
    while page := await db.list_runs(limit=3, after=after):
        pages.append(page)
        after = page[-1].id
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [run for page in pages for run in page] == created

    newest = await db.list_runs(limit=2, newest_first=True)
    assert newest == created[:-3:-1]
    assert await db.list_runs(limit=2, newest_first=True, after=newest[-1].id) == [
        created[4],
        created[3],
    ]
    assert await db.list_runs(limit=0) == []
    # ``after`` need not be an existing id: it is a position in id order.
    assert await db.list_runs(after=created[2].id + "0") == created[3:]


async def test_list_runs_over_many_pages(db: DB) -> None:
    async with db.transaction() as tx:
        created = [await tx.create_run(new_run()) for _ in range(2345)]
    assert await db.list_runs() == created
    assert await db.list_runs(limit=1500) == created[:1500]
    assert await db.list_runs(newest_first=True, after=created[2000].id) == created[1999::-1]


async def test_list_runs_refuses_bad_filters(db: DB) -> None:
    with pytest.raises(InvalidRecordError):
        await db.list_runs(status="paused")
    with pytest.raises(InvalidRecordError):
        await db.list_runs(status=[RunStatus.PENDING, "paused"])
    with pytest.raises(InvalidRecordError):
        await db.list_runs(limit=-1)
    with pytest.raises(InvalidRecordError):
        await db.list_runs(after="")
    with pytest.raises(InvalidRecordError):
        await db.list_runs(feature_branch="  ")


async def test_run_timestamps_survive_in_utc(db: DB) -> None:
    local = datetime(2026, 5, 1, 12, 0, 0, 1, tzinfo=timezone(timedelta(hours=2)))
    run = await db.create_run(new_run(status="running", started_at=local))
    assert run.started_at == local
    assert run.started_at is not None
    assert run.started_at.tzinfo is UTC
    stored = await db.get_run(run.id)
    assert stored is not None
    assert stored.started_at == datetime(2026, 5, 1, 10, 0, 0, 1, tzinfo=UTC)


def test_run_records_are_frozen_values() -> None:
    run = new_run()
    with pytest.raises(AttributeError):
        run.status = RunStatus.RUNNING  # type: ignore[misc]
    assert run == Run(**{name: getattr(run, name) for name in run.__dataclass_fields__})


async def test_run_ids_as_people_type_them(db: DB) -> None:
    """The command line's lookup: a case-insensitive prefix or suffix, or the id itself."""
    ids = ["01AAAAXYZ", "01AAABXYZ", "01BBBB_Q%", "ABC", "abc", "ABCD"]
    for run_id in ids:
        await db.create_run(new_run(id=run_id))

    async def find(typed: str, limit: int = 3) -> tuple[list[str], int]:
        return await db._find_run_ids(typed, limit=limit)

    assert await find("01AAAA") == (["01AAAAXYZ"], 1)  # a prefix
    assert await find("bxyz") == (["01AAABXYZ"], 1)  # a suffix, in lower case
    assert await find("01aaabxyz") == (["01AAABXYZ"], 1)  # the id, in lower case
    assert await find("xyz") == (["01AAAAXYZ", "01AAABXYZ"], 2)  # ambiguous
    assert await find("01", limit=1) == (["01AAAAXYZ"], 3)  # the first few, and how many
    assert await find("nothing") == ([], 0)
    # LIKE's wildcards are matched as themselves.
    assert await find("_q%") == (["01BBBB_Q%"], 1)
    assert await find("01_") == ([], 0)
    # An exact id wins over ids it is a prefix of; equal but for case, when only one is.
    assert await find("abc") == (["abc"], 1)
    assert await find("ABC") == (["ABC"], 1)
    assert await find("Abc") == (["ABC", "abc", "ABCD"], 3)
    assert await find("abcd") == (["ABCD"], 1)
