"""Bad input, field by field: every public method and record field, against a table of bad values.

Each bad value must raise InvalidRecordError naming the field and showing the
value, and leave the database exactly as it was (a dump compared before and
after). Unknown ids get their not-found error, or None and [] from reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from daemon_db import (
    DB,
    InvalidRecordError,
    Run,
    RunNotFoundError,
    RunStatus,
    UnitNotFoundError,
    UnitRecord,
    UnitStatus,
)
from daemon_db._errors import show
from tests.helpers import dump, new_run, report

MIB = 1 << 20
circular: list[object] = []
circular.append(circular)

# Bad values by the kind of value a parameter takes.
NAME = [None, 5, 1.5, b"bytes", ["list"], "", " ", "\t\n ", "a\x00b", "\udc80", "x" * 4097]
TEXT = [5, b"bytes", ["list"], "a\x00b", "\udc80", "x" * 4097]
ERROR = [5, b"bytes", ["list"], "a\x00b", "\udc80", "e" * (MIB + 1)]
RUN_STATUS = [None, "", "paused", "Running", 7, True, ["pending"]]
UNIT_STATUS = [*RUN_STATUS, "done"]
COUNT = [None, "1", 1.0, True, -1]
LIMIT = ["1", 1.5, True, -1]
FLAG = [None, 1, "yes"]
MOMENT = [datetime(2026, 1, 1, 12, 0), "2026-01-01T12:00:00Z", 1767268800]
CONFIG = [
    None,
    {},
    "",
    "[]",
    '"text"',
    "{",
    '{"a": NaN}',
    '{"a": Infinity}',
    "\udc80",
    "{}" + " " * MIB,
]
PAYLOAD = [
    float("nan"),
    float("inf"),
    {"a": float("-inf")},
    {1, 2},
    object(),
    b"bytes",
    1j,
    circular,
    "p" * MIB,
]
STATUSES = ["paused", ["pending", "paused"], 5, [None]]

UNKNOWN = "01ZZZZZZZZZZZZZZZZZZZZZZZZ"


class Rollback(Exception):
    pass


def _calls(run_id: str) -> list[tuple[str, str, dict[str, Any], list[object]]]:
    """(method, parameter, valid arguments, bad values) for every method parameter."""
    unit_id = f"{run_id}_u1"
    return [
        ("get_run", "run_id", {"run_id": run_id}, NAME),
        ("get_run_by_branch", "feature_branch", {"feature_branch": "f", "repo_path": "/r"}, NAME),
        ("get_run_by_branch", "repo_path", {"feature_branch": "f", "repo_path": "/r"}, NAME),
        ("update_run_status", "run_id", {"run_id": run_id, "status": "running"}, NAME),
        ("update_run_status", "status", {"run_id": run_id, "status": "running"}, RUN_STATUS),
        ("update_run_status", "error", {"run_id": run_id, "status": "running"}, ERROR),
        ("list_runs_by_status", "status", {"status": "pending"}, RUN_STATUS),
        ("delete_run", "run_id", {"run_id": run_id}, NAME),
        ("list_runs", "status", {}, STATUSES),
        ("list_runs", "feature_branch", {}, NAME[1:]),
        ("list_runs", "repo_path", {}, NAME[1:]),
        ("list_runs", "limit", {}, LIMIT),
        ("list_runs", "after", {}, NAME[1:]),
        ("list_runs", "newest_first", {}, FLAG),
        ("get_unit", "unit_record_id", {"unit_record_id": unit_id}, NAME),
        (
            "update_unit_status",
            "unit_record_id",
            {"unit_record_id": unit_id, "status": "running"},
            NAME,
        ),
        (
            "update_unit_status",
            "status",
            {"unit_record_id": unit_id, "status": "running"},
            UNIT_STATUS,
        ),
        ("update_unit_status", "error", {"unit_record_id": unit_id, "status": "running"}, ERROR),
        *(
            (
                "update_unit_branch",
                name,
                {"unit_record_id": unit_id, "branch": "b", "worktree_path": "/w"},
                NAME,
            )
            for name in ("unit_record_id", "branch", "worktree_path")
        ),
        ("list_units_by_run", "run_id", {"run_id": run_id}, NAME),
        ("list_units_by_status", "run_id", {"run_id": run_id, "status": "pending"}, NAME),
        ("list_units_by_status", "status", {"run_id": run_id, "status": "pending"}, UNIT_STATUS),
        (
            "update_run_status",
            "expected",
            {"run_id": run_id, "status": "running"},
            [[], "paused", ["pending", "paused"], 5],
        ),
        (
            "update_unit_status",
            "expected",
            {"unit_record_id": unit_id, "status": "running"},
            [[], "paused", 5],
        ),
        ("claim_resumable_runs", "max_attempts", {}, [-1, "3", 1.5, True]),
        ("release_run", "run_id", {"run_id": run_id}, NAME),
        ("holds", "run_id", {"run_id": run_id}, NAME),
        ("append_event", "run_id", {"run_id": run_id, "event_type": "t"}, NAME),
        ("append_event", "event_type", {"run_id": run_id, "event_type": "t"}, NAME),
        ("append_event", "unit_id", {"run_id": run_id, "event_type": "t"}, TEXT),
        ("append_event", "payload", {"run_id": run_id, "event_type": "t"}, PAYLOAD),
        ("get_next_sequence", "run_id", {"run_id": run_id}, NAME),
        ("list_events", "run_id", {"run_id": run_id}, NAME),
        ("list_events_since", "run_id", {"run_id": run_id, "sequence": 0}, NAME),
        ("list_events_since", "sequence", {"run_id": run_id, "sequence": 0}, COUNT),
        ("complete_run", "run_id", {"run_id": run_id, "status": "completed"}, NAME),
        (
            "complete_run",
            "status",
            {"run_id": run_id, "status": "completed"},
            [*RUN_STATUS, "running"],
        ),
        ("complete_run", "error", {"run_id": run_id, "status": "completed"}, ERROR),
        ("follow_events", "run_id", {"run_id": run_id}, NAME),
        ("follow_events", "since", {"run_id": run_id}, COUNT),
    ]


RUN_FIELDS: dict[str, list[object]] = {
    "id": NAME,
    "feature_branch": NAME[1:],  # None: a run without a branch
    "repo_path": NAME,
    "target_branch": NAME,
    "tasks_dir": NAME,
    "parallelism": [*COUNT[1:], 0],  # None: the daemon's default
    "status": RUN_STATUS,
    "daemon_version": [None, *TEXT],
    "started_at": MOMENT,
    "completed_at": MOMENT,
    "error": ERROR,
    "config_json": CONFIG,
}
UNIT_FIELDS: dict[str, list[object]] = {
    "id": NAME,
    "run_id": NAME,
    "unit_id": NAME,
    "status": UNIT_STATUS,
    "branch": NAME[1:],
    "worktree_path": NAME[1:],
    "started_at": MOMENT,
    "completed_at": MOMENT,
    "error": ERROR,
}


async def _call(db: DB, method: str, arguments: dict[str, Any]) -> object:
    if method == "follow_events":
        return await anext(db.follow_events(**arguments))
    call: Callable[..., Awaitable[object]] = getattr(db, method)
    return await call(**arguments)


def _tampered(record: Any, field: str, value: object) -> Any:
    """A copy of a valid record with one field set behind validation's back."""
    copy = dataclasses.replace(record)
    object.__setattr__(copy, field, value)
    return copy


@pytest.fixture
async def populated(db_path: Path) -> Any:
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run(status="running"))
        await db.create_unit(UnitRecord(run_id=run.id, unit_id="u1"))
        await db.append_event(run.id, "tick", payload={"n": 1})
        yield db, run


async def test_every_bad_value_of_every_field_is_refused_and_changes_nothing(
    populated: tuple[DB, Run], db_path: Path
) -> None:
    db, run = populated
    before = dump(db_path)
    tried = 0

    def check(error: InvalidRecordError, field: str, value: object) -> None:
        assert error.field == field, (field, value)
        assert field in str(error)
        # A list of statuses is named by its offending member.
        listed = isinstance(value, list) and field in ("status", "expected")
        shown = [show(v) for v in value] if listed else []
        assert any(text in str(error) for text in [show(value), *shown]), (field, str(error))

    for method, parameter, valid, bad_values in _calls(run.id):
        if method != "follow_events":  # the valid call works: only the bad value is refused
            with contextlib.suppress(Rollback):
                async with db.transaction():
                    await _call(db, method, valid)
                    raise Rollback
        for value in bad_values:
            with pytest.raises(InvalidRecordError) as raised:
                await _call(db, method, valid | {parameter: value})
            check(raised.value, parameter, value)
            tried += 1

    for field, bad_values in RUN_FIELDS.items():
        for value in bad_values:
            with pytest.raises(InvalidRecordError) as raised:
                await db.create_run(_tampered(new_run(), field, value))
            check(raised.value, f"Run.{field}", value)
            tried += 1
    unit = UnitRecord(run_id=run.id, unit_id="u2")
    for field, bad_values in UNIT_FIELDS.items():
        for value in bad_values:
            with pytest.raises(InvalidRecordError) as raised:
                await db.create_unit(_tampered(unit, field, value))
            check(raised.value, f"UnitRecord.{field}", value)
            tried += 1
    for value in [None, "run", {"id": "x"}, unit]:
        with pytest.raises(InvalidRecordError):
            await db.create_run(value)  # type: ignore[arg-type]
        tried += 1

    assert dump(db_path) == before
    report(f"bad input: {tried} bad values over every method and record field, each refused")
    report("  with InvalidRecordError naming the field and value; database unchanged")


async def test_unknown_ids(populated: tuple[DB, Run], db_path: Path) -> None:
    db, run = populated
    before = dump(db_path)
    unit_id = f"{UNKNOWN}_u1"
    not_found: list[tuple[type[Exception], Awaitable[object]]] = [
        (RunNotFoundError, db.update_run_status(UNKNOWN, RunStatus.FAILED)),
        (RunNotFoundError, db.complete_run(UNKNOWN, RunStatus.FAILED)),
        (RunNotFoundError, db.append_event(UNKNOWN, "tick")),
        (RunNotFoundError, db.get_next_sequence(UNKNOWN)),
        (RunNotFoundError, db.create_unit(UnitRecord(run_id=UNKNOWN, unit_id="u1"))),
        (RunNotFoundError, anext(db.follow_events(UNKNOWN))),
        (UnitNotFoundError, db.update_unit_status(unit_id, UnitStatus.RUNNING)),
        (UnitNotFoundError, db.update_unit_branch(unit_id, "b", "/w")),
    ]
    for error, call in not_found:
        with pytest.raises(error, match=UNKNOWN):
            await call
    assert await db.get_run(UNKNOWN) is None
    assert await db.get_unit(unit_id) is None
    assert await db.get_run_by_branch("feature/none", "/srv/none") is None
    assert await db.delete_run(UNKNOWN) is False
    for listing in (db.list_units_by_run, db.list_events):
        assert await listing(UNKNOWN) == []
    assert await db.list_units_by_status(UNKNOWN, UnitStatus.PENDING) == []
    assert await db.list_events_since(UNKNOWN, 0) == []
    assert dump(db_path) == before
    assert await db.get_run(run.id) == run
