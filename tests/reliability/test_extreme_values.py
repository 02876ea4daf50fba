"""Absurd values get a typed error naming the field, and the message itself never fails."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from daemon_db import DB, InvalidRecordError, RunStatus, UnitRecord
from daemon_db._sqlite.db import MAX_BUSY_TIMEOUT
from tests.helpers import dump, new_run, report

HUGE = [2**63, 2**64, 10**30]
UTC_MINUS_5 = timezone(timedelta(hours=-5))
UTC_PLUS_5 = timezone(timedelta(hours=5))
EXTREME_MOMENTS = [
    datetime.max.replace(tzinfo=UTC_MINUS_5),
    datetime.min.replace(tzinfo=UTC_PLUS_5),
]


def _deep(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


Call = Callable[[DB, str], Awaitable[object]]
CALLS: dict[str, tuple[str, Call]] = {
    "list_events_since": ("sequence", lambda db, run_id: db.list_events_since(run_id, 2**63)),
    "list_runs limit": ("limit", lambda db, run_id: db.list_runs(limit=2**64)),
    "prune_runs": (
        "completed_before",
        lambda db, run_id: db.prune_runs(datetime.max.replace(tzinfo=UTC_MINUS_5)),
    ),
    "prune_runs min": (
        "completed_before",
        lambda db, run_id: db.prune_runs(datetime.min.replace(tzinfo=UTC_PLUS_5)),
    ),
    "append_event deep": (
        "payload",
        lambda db, run_id: db.append_event(run_id, "e", None, _deep(1100)),
    ),
    "append_event big int": (
        "payload",
        lambda db, run_id: db.append_event(run_id, "e", None, 10**5000),
    ),
    "get_run big int": ("run_id", lambda db, run_id: db.get_run(10**5000)),  # type: ignore[arg-type]
    "complete_run escaped error": (
        "error",
        lambda db, run_id: db.complete_run(run_id, RunStatus.FAILED, error="é" * 500_000),
    ),
}


@pytest.mark.parametrize("name", CALLS)
async def test_an_absurd_argument_gets_a_typed_error_naming_its_field(
    db_path: Path, name: str
) -> None:
    field, call = CALLS[name]
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run(status="running"))
        before = dump(db_path)
        with pytest.raises(InvalidRecordError) as raised:
            await call(db, run.id)
        assert raised.value.field == field
        assert len(str(raised.value)) < 500
        assert dump(db_path) == before


async def test_follow_events_refuses_a_sequence_sqlite_cannot_hold(db: DB) -> None:
    run = await db.create_run(new_run())
    with pytest.raises(InvalidRecordError) as raised:
        db.follow_events(run.id, since=2**64)
    assert raised.value.field == "since"


@pytest.mark.parametrize("value", HUGE)
def test_records_refuse_integers_sqlite_cannot_hold(value: int) -> None:
    with pytest.raises(InvalidRecordError) as raised:
        new_run(parallelism=value)
    assert raised.value.field == "Run.parallelism"
    assert "64-bit" in str(raised.value)


@pytest.mark.parametrize("moment", EXTREME_MOMENTS)
@pytest.mark.parametrize("field", ["started_at", "completed_at"])
def test_records_refuse_moments_that_overflow_in_utc(moment: datetime, field: str) -> None:
    with pytest.raises(InvalidRecordError) as raised:
        new_run(**{field: moment})
    assert raised.value.field == f"Run.{field}"
    with pytest.raises(InvalidRecordError) as raised:
        UnitRecord(run_id="r", unit_id="u", **{field: moment})
    assert raised.value.field == f"UnitRecord.{field}"


def test_the_largest_moments_that_fit_are_kept() -> None:
    latest = datetime.max.replace(tzinfo=UTC)
    assert new_run(started_at=latest).started_at == latest


def test_an_error_message_never_fails_whatever_the_value() -> None:
    class Hostile:
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

    for value in (_deep(5000), 10**100_000, Hostile(), {"k": _deep(3000)}, "x" * 10**6):
        error = InvalidRecordError("field", value, "is refused")
        assert "is refused" in str(error)
        assert len(str(error)) < 400
    assert sys.get_int_max_str_digits() < 100_000  # the limit the big int would have hit


async def test_a_huge_busy_timeout_waits_instead_of_not_waiting(db_path: Path) -> None:
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run(status="running"))
    for timeout in (10**7, float("inf")):
        async with DB.open(db_path, busy_timeout=timeout) as db:
            blocker = sqlite3.connect(db_path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            try:
                append = asyncio.create_task(db.append_event(run.id, "waits"))
                await asyncio.sleep(0.3)
                # SQLite's wait would have overflowed: SQLITE_BUSY at once, not a wait.
                assert not append.done(), append
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            assert (await append).event_type == "waits"
    assert MAX_BUSY_TIMEOUT * 1000 == 2**31 - 1


async def test_a_busy_timeout_that_is_not_a_number_of_seconds_is_refused(db_path: Path) -> None:
    for value in (float("nan"), -1, "5", True):
        with pytest.raises(InvalidRecordError) as raised:
            await DB.open(db_path, busy_timeout=value)  # type: ignore[arg-type]
        assert raised.value.field == "busy_timeout"
    assert not db_path.exists()
    report(
        f"absurd values: {len(CALLS) + len(HUGE) + 2 * len(EXTREME_MOMENTS) + 4} integers past"
        " 64 bits, moments past datetime's range in UTC, 1,100-deep payloads, 5,000-digit"
        " numbers: each InvalidRecordError naming the field, database unchanged; busy_timeout"
        " past 24.8 days waits 24.8 days (it used to not wait at all)"
    )


async def test_the_largest_values_that_fit_are_stored_and_read_back(db: DB) -> None:
    latest = datetime.max.replace(tzinfo=UTC)
    run = await db.create_run(new_run(parallelism=2**63 - 1, started_at=latest))
    assert await db.get_run(run.id) == run
    await db.append_event(run.id, "e")
    assert await db.list_events_since(run.id, 2**63 - 1) == []
