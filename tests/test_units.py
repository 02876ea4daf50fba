"""Units: creation, lookups, status and branch updates, listings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from daemon_db import (
    DB,
    RunNotFoundError,
    UnitExistsError,
    UnitNotFoundError,
    UnitRecord,
    UnitStatus,
    make_unit_record_id,
    new_run_id,
)
from tests.helpers import new_run, new_unit


async def test_unit_create_and_get(db: DB) -> None:
    run = await db.create_run(new_run())
    unit = new_unit(run, "unit-01", branch="daemon/unit-01", worktree_path="/tmp/wt/01")
    assert unit.id == f"{run.id}_unit-01" == make_unit_record_id(run.id, "unit-01")
    assert await db.create_unit(unit) == unit
    assert await db.get_unit(unit.id) == unit


async def test_unit_with_an_id_of_its_own(db: DB) -> None:
    run = await db.create_run(new_run())
    unit = await db.create_unit(UnitRecord(id="custom-id", run_id=run.id, unit_id="u"))
    assert await db.get_unit("custom-id") == unit


async def test_unit_of_a_missing_run(db: DB) -> None:
    missing = new_run_id()
    with pytest.raises(RunNotFoundError) as raised:
        await db.create_unit(UnitRecord(run_id=missing, unit_id="u"))
    assert raised.value.run_id == missing
    assert await db.list_units_by_run(missing) == []


async def test_unit_created_twice(db: DB) -> None:
    run = await db.create_run(new_run())
    first = await db.create_unit(new_unit(run, "u"))
    with pytest.raises(UnitExistsError) as raised:
        await db.create_unit(new_unit(run, "u", status="running"))
    assert (raised.value.unit_record_id, raised.value.run_id, raised.value.unit_id) == (
        first.id,
        run.id,
        "u",
    )
    # The same (run_id, unit_id) under another record id is the same unit.
    with pytest.raises(UnitExistsError):
        await db.create_unit(UnitRecord(id="other", run_id=run.id, unit_id="u"))
    # The same record id for another unit is taken too.
    with pytest.raises(UnitExistsError):
        await db.create_unit(UnitRecord(id=first.id, run_id=run.id, unit_id="v"))
    assert await db.list_units_by_run(run.id) == [first]


async def test_unit_reads_never_raise_for_missing_things(db: DB) -> None:
    assert await db.get_unit("nope") is None
    assert await db.list_units_by_run(new_run_id()) == []
    assert await db.list_units_by_status(new_run_id(), UnitStatus.RUNNING) == []


async def test_unit_writes_to_a_missing_unit(db: DB) -> None:
    with pytest.raises(UnitNotFoundError) as raised:
        await db.update_unit_status("nope", UnitStatus.RUNNING)
    assert raised.value.unit_record_id == "nope"
    assert isinstance(raised.value, LookupError)
    with pytest.raises(UnitNotFoundError):
        await db.update_unit_branch("nope", "daemon/x", "/tmp/x")


async def test_a_unit_id_passed_for_a_record_id_is_named_in_the_error(db: DB) -> None:
    runs = [await db.create_run(new_run()) for _ in range(5)]
    only = await db.create_unit(new_unit(runs[0], "lonely"))
    for run in runs:
        await db.create_unit(new_unit(run, "u1"))

    with pytest.raises(UnitNotFoundError) as raised:
        await db.update_unit_status("lonely", UnitStatus.RUNNING)
    assert raised.value.record_ids == (only.id,)
    assert str(raised.value) == (
        f"no unit with record id 'lonely': that is a unit_id; its unit's record id is {only.id!r}"
    )

    with pytest.raises(UnitNotFoundError) as raised:
        await db.update_unit_branch("u1", "daemon/u1", "/w/u1")
    first = sorted(make_unit_record_id(run.id, "u1") for run in runs)[:3]
    assert raised.value.record_ids == tuple(first)
    assert "that is the unit_id of 5 units, record ids" in str(raised.value)
    assert str(raised.value).endswith(f"{first[2]!r} and 2 more")

    # Inside a transaction block too, and the failed call undoes nothing else.
    async with db.transaction() as tx:
        await tx.update_unit_status(only.id, UnitStatus.RUNNING)
        with pytest.raises(UnitNotFoundError, match="its unit's record id"):
            await tx.update_unit_status("lonely", UnitStatus.FAILED)
    assert (await db.get_unit(only.id)).status is UnitStatus.RUNNING  # type: ignore[union-attr]


async def test_an_unknown_unit_id_says_what_a_record_id_looks_like(db: DB) -> None:
    with pytest.raises(UnitNotFoundError, match=r"a record id is '<run_id>_<unit_id>'"):
        await db.update_unit_status("nope", UnitStatus.RUNNING)


async def test_unit_status_timestamps_follow_the_run_rules(db: DB) -> None:
    run = await db.create_run(new_run())
    unit = await db.create_unit(new_unit(run, "u"))
    assert (unit.started_at, unit.completed_at) == (None, None)

    before = datetime.now(UTC)
    running = await db.update_unit_status(unit.id, UnitStatus.RUNNING)
    assert running.started_at is not None
    assert before <= running.started_at <= datetime.now(UTC)
    assert running.completed_at is None
    same = await db.update_unit_status(unit.id, "running")  # type: ignore[arg-type]
    assert same.started_at == running.started_at

    failed = await db.update_unit_status(unit.id, UnitStatus.FAILED, error="exit 2")
    assert failed.error == "exit 2"
    assert failed.completed_at is not None
    assert failed.started_at == running.started_at

    retried = await db.update_unit_status(unit.id, UnitStatus.RUNNING)
    assert retried.completed_at is None
    assert retried.error is None
    assert retried.started_at == running.started_at
    done = await db.update_unit_status(unit.id, UnitStatus.COMPLETED)
    assert await db.get_unit(unit.id) == done


async def test_unit_created_running_or_finished_gets_its_timestamps(db: DB) -> None:
    run = await db.create_run(new_run())
    running = await db.create_unit(new_unit(run, "a", status=UnitStatus.RUNNING))
    assert running.started_at is not None
    assert running.completed_at is None
    completed = await db.create_unit(new_unit(run, "b", status="completed"))
    assert completed.completed_at is not None
    assert completed.started_at is None
    assert await db.list_units_by_run(run.id) == [running, completed]


async def test_unit_branch_update(db: DB) -> None:
    run = await db.create_run(new_run())
    unit = await db.create_unit(new_unit(run, "u", status="running"))
    updated = await db.update_unit_branch(unit.id, "daemon/run-1/u", "/srv/trees/u")
    assert (updated.branch, updated.worktree_path) == ("daemon/run-1/u", "/srv/trees/u")
    assert updated.status is UnitStatus.RUNNING
    assert updated.started_at == unit.started_at
    assert await db.get_unit(unit.id) == updated


async def test_unit_listings_are_ordered_by_unit_id(db: DB) -> None:
    run = await db.create_run(new_run())
    other = await db.create_run(new_run())
    for unit_id in ["c", "a", "d", "b"]:
        await db.create_unit(new_unit(run, unit_id))
    await db.create_unit(new_unit(other, "a"))
    await db.update_unit_status(make_unit_record_id(run.id, "d"), UnitStatus.RUNNING)
    await db.update_unit_status(make_unit_record_id(run.id, "a"), UnitStatus.RUNNING)

    assert [u.unit_id for u in await db.list_units_by_run(run.id)] == ["a", "b", "c", "d"]
    running = await db.list_units_by_status(run.id, UnitStatus.RUNNING)
    assert [u.unit_id for u in running] == ["a", "d"]
    pending = await db.list_units_by_status(run.id, "pending")  # type: ignore[arg-type]
    assert [u.unit_id for u in pending] == ["b", "c"]
    assert await db.list_units_by_status(run.id, UnitStatus.FAILED) == []


async def test_unit_listing_over_many_pages(db: DB) -> None:
    run = await db.create_run(new_run())
    async with db.transaction() as tx:
        created = [await tx.create_unit(new_unit(run, f"u{i:05d}")) for i in range(2100)]
    assert await db.list_units_by_run(run.id) == created
