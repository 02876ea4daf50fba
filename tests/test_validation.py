"""Bad input: InvalidRecordError naming the field and value, and the database unchanged."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

import pytest

from daemon_db import DB, EventRecord, InvalidRecordError, RunStatus, UnitRecord, UnitStatus
from tests.helpers import dump, new_run, new_unit

HUGE = "x" * (1 << 20)
HUGE_OBJECT = '{"k": "' + HUGE + '"}'
NAIVE = datetime(2026, 1, 1, 12, 0)


class _BrokenZone(tzinfo):
    """A time zone of one's own whose offset is no offset."""

    def __init__(self, offset: object) -> None:
        self.offset = offset

    def utcoffset(self, dt: datetime | None) -> Any:
        return self.offset

    def __repr__(self) -> str:
        return "broken"


BEYOND_A_DAY = datetime(2026, 1, 1, 12, 0, tzinfo=_BrokenZone(timedelta(days=2)))
NOT_A_DELTA = datetime(2026, 1, 1, 12, 0, tzinfo=_BrokenZone(5))
circular: list[object] = []
circular.append(circular)

# (field named in the error, value shown in the error, Run fields)
BAD_RUNS: list[tuple[str, object, dict[str, Any]]] = [
    ("Run.id", "", {"id": ""}),
    ("Run.id", "  ", {"id": "  "}),
    ("Run.feature_branch", "", {"feature_branch": ""}),
    ("Run.feature_branch", " \t", {"feature_branch": " \t"}),
    ("Run.feature_branch", 42, {"feature_branch": 42}),
    ("Run.feature_branch", "a\x00b", {"feature_branch": "a\x00b"}),
    ("Run.feature_branch", "\ud800", {"feature_branch": "\ud800"}),
    ("Run.feature_branch", "b" * 5000, {"feature_branch": "b" * 5000}),
    ("Run.repo_path", "", {"repo_path": ""}),
    ("Run.target_branch", "", {"target_branch": ""}),
    ("Run.tasks_dir", " ", {"tasks_dir": " "}),
    ("Run.parallelism", 0, {"parallelism": 0}),
    ("Run.parallelism", -3, {"parallelism": -3}),
    ("Run.parallelism", True, {"parallelism": True}),
    ("Run.parallelism", 1.5, {"parallelism": 1.5}),
    ("Run.parallelism", "2", {"parallelism": "2"}),
    ("Run.status", "paused", {"status": "paused"}),
    ("Run.status", "RUNNING", {"status": "RUNNING"}),
    ("Run.status", 1, {"status": 1}),
    ("Run.started_at", NAIVE, {"started_at": NAIVE}),
    ("Run.started_at", BEYOND_A_DAY, {"started_at": BEYOND_A_DAY}),
    ("Run.completed_at", NOT_A_DELTA, {"completed_at": NOT_A_DELTA}),
    ("Run.completed_at", "2026-01-01", {"completed_at": "2026-01-01"}),
    ("Run.config_json", "[1, 2]", {"config_json": "[1, 2]"}),
    ("Run.config_json", "not json", {"config_json": "not json"}),
    ("Run.config_json", '{"a": NaN}', {"config_json": '{"a": NaN}'}),
    ("Run.config_json", '{"a": 1e999}', {"config_json": '{"a": 1e999}'}),  # infinity
    ("Run.config_json", "", {"config_json": ""}),
    ("Run.config_json", {"a": 1}, {"config_json": {"a": 1}}),
    ("Run.config_json", HUGE_OBJECT, {"config_json": HUGE_OBJECT}),
    ("Run.error", 5, {"error": 5}),
    ("Run.daemon_version", None, {"daemon_version": None}),
]

BAD_UNITS: list[tuple[str, object, dict[str, Any]]] = [
    ("UnitRecord.run_id", "", {"run_id": "", "unit_id": "u"}),
    ("UnitRecord.unit_id", " ", {"run_id": "r", "unit_id": " "}),
    ("UnitRecord.id", "", {"id": "", "run_id": "r", "unit_id": "u"}),
    ("UnitRecord.status", "done", {"run_id": "r", "unit_id": "u", "status": "done"}),
    ("UnitRecord.branch", "", {"run_id": "r", "unit_id": "u", "branch": ""}),
    ("UnitRecord.worktree_path", 3, {"run_id": "r", "unit_id": "u", "worktree_path": 3}),
    ("UnitRecord.started_at", NAIVE, {"run_id": "r", "unit_id": "u", "started_at": NAIVE}),
]


@pytest.mark.parametrize(("field", "value", "fields"), BAD_RUNS)
def test_a_bad_run_is_refused_when_made(field: str, value: object, fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidRecordError) as raised:
        new_run(**fields)
    _names(raised.value, field, value)


@pytest.mark.parametrize(("field", "value", "fields"), BAD_UNITS)
def test_a_bad_unit_is_refused_when_made(field: str, value: object, fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidRecordError) as raised:
        UnitRecord(**fields)
    _names(raised.value, field, value)


def test_a_bad_event_record_is_refused_when_made() -> None:
    good: dict[str, Any] = {
        "id": 1,
        "run_id": "r",
        "sequence": 1,
        "event_type": "t",
        "unit_id": None,
        "payload_json": None,
        "created_at": datetime.now().astimezone(),
    }
    EventRecord(**good)
    for field, value in [
        ("sequence", 0),
        ("event_type", ""),
        ("created_at", NAIVE),
        ("created_at", None),
        ("id", "1"),
    ]:
        with pytest.raises(InvalidRecordError) as raised:
            EventRecord(**(good | {field: value}))
        _names(raised.value, f"EventRecord.{field}", value)


def _names(error: InvalidRecordError, field: str, value: object) -> None:
    assert isinstance(error, ValueError)
    assert error.field == field
    assert error.value is value or error.value == value
    message = str(error)
    assert field in message
    assert repr(value)[:40] in message


# Method arguments: each is refused before anything is written.

Bad = Callable[[DB, str], Awaitable[object]]
BAD_CALLS: dict[str, tuple[str, Bad]] = {
    "create_run with a unit": ("run", lambda db, r: db.create_run(new_unit(new_run(), "u"))),  # type: ignore[arg-type]
    "create_run with a dict": ("run", lambda db, r: db.create_run({"id": "x"})),  # type: ignore[arg-type]
    "get_run blank": ("run_id", lambda db, r: db.get_run(" ")),
    "get_run None": ("run_id", lambda db, r: db.get_run(None)),  # type: ignore[arg-type]
    "get_run_by_branch blank branch": (
        "feature_branch",
        lambda db, r: db.get_run_by_branch("", "/srv"),
    ),
    "get_run_by_branch blank repo": ("repo_path", lambda db, r: db.get_run_by_branch("f", "")),
    "update_run_status unknown status": (
        "status",
        lambda db, r: db.update_run_status(r, "paused"),  # type: ignore[arg-type]
    ),
    "update_run_status blank id": ("run_id", lambda db, r: db.update_run_status("", "running")),  # type: ignore[arg-type]
    "update_run_status bad error": (
        "error",
        lambda db, r: db.update_run_status(r, "failed", error=404),  # type: ignore[arg-type]
    ),
    "list_runs_by_status unknown": ("status", lambda db, r: db.list_runs_by_status("x")),  # type: ignore[arg-type]
    "delete_run blank": ("run_id", lambda db, r: db.delete_run("")),
    "list_runs status": ("status", lambda db, r: db.list_runs(status=["pending", "nope"])),
    "list_runs status type": ("status", lambda db, r: db.list_runs(status=5)),  # type: ignore[arg-type]
    "list_runs limit": ("limit", lambda db, r: db.list_runs(limit=-1)),
    "list_runs limit bool": ("limit", lambda db, r: db.list_runs(limit=True)),
    "list_runs after": ("after", lambda db, r: db.list_runs(after="")),
    "list_runs newest_first": ("newest_first", lambda db, r: db.list_runs(newest_first="y")),  # type: ignore[arg-type]
    "create_unit with a run": ("unit", lambda db, r: db.create_unit(new_run())),  # type: ignore[arg-type]
    "get_unit blank": ("unit_record_id", lambda db, r: db.get_unit("")),
    "update_unit_status unknown status": (
        "status",
        lambda db, r: db.update_unit_status(f"{r}_u", "done"),  # type: ignore[arg-type]
    ),
    "update_unit_status a run's status": (
        "status",  # its value fits a unit, but it says the caller mixed up the two
        lambda db, r: db.update_unit_status(f"{r}_u", RunStatus.RUNNING),  # type: ignore[arg-type]
    ),
    "update_run_status a unit's status": (
        "status",
        lambda db, r: db.update_run_status(r, UnitStatus.COMPLETED),  # type: ignore[arg-type]
    ),
    "list_units_by_status a run's status": (
        "status",
        lambda db, r: db.list_units_by_status(r, RunStatus.PENDING),  # type: ignore[arg-type]
    ),
    "update_unit_branch blank branch": (
        "branch",
        lambda db, r: db.update_unit_branch(f"{r}_u", "", "/wt"),
    ),
    "update_unit_branch blank worktree": (
        "worktree_path",
        lambda db, r: db.update_unit_branch(f"{r}_u", "b", " "),
    ),
    "list_units_by_run blank": ("run_id", lambda db, r: db.list_units_by_run("")),
    "list_units_by_status unknown": (
        "status",
        lambda db, r: db.list_units_by_status(r, "x"),  # type: ignore[arg-type]
    ),
    "append_event blank run": ("run_id", lambda db, r: db.append_event("", "t")),
    "append_event blank type": ("event_type", lambda db, r: db.append_event(r, " ")),
    "append_event unit_id type": ("unit_id", lambda db, r: db.append_event(r, "t", unit_id=7)),  # type: ignore[arg-type]
    "append_event payload object": (
        "payload",
        lambda db, r: db.append_event(r, "t", payload=object()),
    ),
    "append_event payload nan": (
        "payload",
        lambda db, r: db.append_event(r, "t", payload=float("nan")),
    ),
    "append_event payload inf": (
        "payload",
        lambda db, r: db.append_event(r, "t", payload={"x": float("-inf")}),
    ),
    "append_event payload set": ("payload", lambda db, r: db.append_event(r, "t", payload={1})),
    "append_event payload circular": (
        "payload",
        lambda db, r: db.append_event(r, "t", payload=circular),
    ),
    "append_event payload too large": (
        "payload",
        lambda db, r: db.append_event(r, "t", payload=HUGE),
    ),
    "get_next_sequence blank": ("run_id", lambda db, r: db.get_next_sequence("")),
    "list_events blank": ("run_id", lambda db, r: db.list_events("")),
    "list_events_since negative": ("sequence", lambda db, r: db.list_events_since(r, -1)),
    "list_events_since str": ("sequence", lambda db, r: db.list_events_since(r, "3")),  # type: ignore[arg-type]
    "complete_run active status": (
        "status",
        lambda db, r: db.complete_run(r, "running"),  # type: ignore[arg-type]
    ),
    "complete_run unknown status": (
        "status",
        lambda db, r: db.complete_run(r, "done"),  # type: ignore[arg-type]
    ),
    "complete_run bad error": (
        "error",
        lambda db, r: db.complete_run(r, "failed", error=["x"]),  # type: ignore[arg-type]
    ),
    "follow_events negative since": ("since", lambda db, r: _first(db, r, -1)),
}


async def _first(db: DB, run_id: str, since: int) -> object:
    iterator: AsyncIterator[object] = db.follow_events(run_id, since)
    return await anext(iterator)


@pytest.fixture
async def populated(db_path: Path) -> AsyncIterator[tuple[DB, str]]:
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run(status="running"))
        await db.create_unit(new_unit(run, "u"))
        await db.append_event(run.id, "tick", payload={"n": 1})
        yield db, run.id


@pytest.mark.parametrize("case", list(BAD_CALLS))
async def test_bad_arguments_are_refused_and_change_nothing(
    populated: tuple[DB, str], db_path: Path, case: str
) -> None:
    db, run_id = populated
    field, call = BAD_CALLS[case]
    before = dump(db_path)
    with pytest.raises(InvalidRecordError) as raised:
        await call(db, run_id)
    assert raised.value.field == field
    assert field in str(raised.value)
    assert dump(db_path) == before
    # The store is still fine afterwards.
    assert (await db.append_event(run_id, "after")).sequence == 2


async def test_bad_input_inside_a_transaction_leaves_the_block_usable(
    populated: tuple[DB, str],
) -> None:
    db, run_id = populated
    async with db.transaction() as tx:
        for case, (_, call) in BAD_CALLS.items():
            if case.startswith("follow_events"):
                continue  # not a method of tx
            with pytest.raises(InvalidRecordError):
                await call(tx, run_id)  # type: ignore[arg-type]
        await tx.append_event(run_id, "after")
    assert [e.sequence for e in await db.list_events(run_id)] == [1, 2]


def test_a_record_changed_behind_its_back_is_checked_again() -> None:
    run = new_run()
    object.__setattr__(run, "parallelism", 0)
    with pytest.raises(InvalidRecordError):
        run.__post_init__()


async def test_the_db_checks_a_record_again(db: DB) -> None:
    run = new_run()
    object.__setattr__(run, "feature_branch", "")
    with pytest.raises(InvalidRecordError, match=r"Run\.feature_branch"):
        await db.create_run(run)
    assert await db.list_runs() == []


class _Sneaky(str):
    """A str subclass whose own ``len()`` and ``in`` would hide what it holds."""

    def __len__(self) -> int:
        return 1

    def __contains__(self, part: object) -> bool:
        return False


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("id", _Sneaky("a\x00b"), "NUL"),
        ("repo_path", _Sneaky("x" * 5000), "longer than 4096"),
        ("config_json", _Sneaky('{"a": 1}'), None),
    ],
    ids=["nul", "long", "json"],
)
def test_a_str_subclass_is_checked_as_the_text_it_holds(
    field: str, value: str, reason: str | None
) -> None:
    if reason is None:  # valid: stored as a plain str
        assert type(getattr(new_run(**{field: value}), field)) is str
        return
    with pytest.raises(InvalidRecordError, match=reason):
        new_run(**{field: value})
