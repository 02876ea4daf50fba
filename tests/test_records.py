"""Records, statuses and ids as values, before any database is involved."""

from __future__ import annotations

import dataclasses
import pickle
import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon_db import (
    EventRecord,
    InvalidRecordError,
    ResumableRun,
    Run,
    RunStatus,
    UnitRecord,
    UnitStatus,
    make_unit_record_id,
    new_run_id,
)
from daemon_db._ids import new_run_id as ids_new_run_id
from daemon_db._records import loader, unchecked_replace
from daemon_db._timestamps import from_text, to_text
from tests.helpers import new_run


def test_statuses_are_str_enums() -> None:
    assert [s.value for s in RunStatus] == [
        "pending",
        "running",
        "completed",
        "failed",
        "cancelled",
    ]
    assert [s.value for s in UnitStatus] == [
        "pending",
        "ready",
        "blocked",
        "running",
        "completed",
        "failed",
        "cancelled",
    ]
    assert RunStatus.RUNNING == "running"
    assert f"{UnitStatus.FAILED}" == "failed"


def test_records_are_frozen_slotted_keyword_only() -> None:
    for record in (Run, UnitRecord, EventRecord, ResumableRun):
        params = record.__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen
        assert hasattr(record, "__slots__")
    with pytest.raises(TypeError):
        Run("id", "branch")  # type: ignore[misc]


@pytest.mark.parametrize("twin", [True, False])
def test_a_loaded_record_is_the_record_its_constructor_makes(twin: bool) -> None:
    # Listings build records through loader(), which on CPython makes them as
    # instances of an unfrozen twin class and then gives them their own (and
    # elsewhere sets each slot): nothing of that may show.
    run = new_run(status="running", started_at=datetime.now(UTC))
    unit = UnitRecord(run_id=run.id, unit_id="u", status=UnitStatus.RUNNING)
    event = EventRecord(
        id=1,
        run_id=run.id,
        sequence=1,
        event_type="t",
        unit_id=None,
        payload_json="{}",
        created_at=datetime.now(UTC),
    )
    resumable = ResumableRun(run=run, units=[unit], next_sequence=2, owner="d")
    for record in (run, unit, event, resumable):
        cls = type(record)
        load = loader(cls, twin=twin)
        loaded = load(*(getattr(record, f.name) for f in dataclasses.fields(record)))
        assert type(loaded) is cls
        assert loaded == record
        assert pickle.loads(pickle.dumps(loaded)) == record
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(loaded, dataclasses.fields(record)[0].name, None)
        assert not hasattr(loaded, "__dict__")


def test_new_run_ids_are_ulids_that_sort_in_the_order_made() -> None:
    ids = [new_run_id() for _ in range(10_000)]
    assert all(len(i) == 26 and i.isalnum() and i.isupper() for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert new_run_id is ids_new_run_id


def test_new_run_ids_stay_ordered_across_threads() -> None:
    made: list[str] = []
    lock = threading.Lock()

    def make() -> None:
        for _ in range(2000):
            with lock:  # the order in which ids are made is the order they are recorded
                made.append(new_run_id())

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert made == sorted(made)
    assert len(set(made)) == 8000


def test_unit_record_id_defaults_to_run_and_unit() -> None:
    unit = UnitRecord(run_id="R", unit_id="u-7")
    assert unit.id == "R_u-7" == make_unit_record_id("R", "u-7")
    assert UnitRecord(id="mine", run_id="R", unit_id="u").id == "mine"
    with pytest.raises(InvalidRecordError):
        make_unit_record_id("", "u")


def test_timestamps_are_kept_in_utc() -> None:
    moment = datetime(2026, 3, 1, 9, 30, 0, 250, tzinfo=timezone(timedelta(hours=-5)))
    run = new_run(status="running", started_at=moment)
    assert run.started_at == moment
    assert run.started_at is not None
    assert run.started_at.tzinfo is UTC
    assert run.started_at.hour == 14


@given(st.datetimes(timezones=st.just(UTC)), st.datetimes(timezones=st.just(UTC)))
def test_stored_timestamps_are_fixed_width_utc_text_in_time_order(
    one: datetime, other: datetime
) -> None:
    text = to_text(one)
    assert text == one.isoformat(timespec="microseconds").replace("+00:00", "Z")
    assert len(text) == 27
    assert from_text(text) == one
    assert (text < to_text(other)) == (one < other)


def test_status_strings_become_members() -> None:
    assert new_run(status="failed").status is RunStatus.FAILED
    assert UnitRecord(run_id="r", unit_id="u", status="completed").status is UnitStatus.COMPLETED  # type: ignore[arg-type]


def test_event_payload_is_decoded() -> None:
    event = EventRecord(
        id=1,
        run_id="r",
        sequence=1,
        event_type="t",
        unit_id=None,
        payload_json='{"a":[1,2]}',
        created_at=datetime.now(UTC),
    )
    assert event.payload == {"a": [1, 2]}


@pytest.mark.parametrize("text", ["not json", '{"a":NaN}', "[1,", "", "[-1e400]"])
def test_an_event_s_payload_json_must_be_json(text: str) -> None:
    # Accepted, it made .payload raise json's own error, or hand back a NaN.
    fields: dict[str, Any] = {
        "id": 1,
        "run_id": "r",
        "sequence": 1,
        "event_type": "t",
        "unit_id": None,
        "created_at": datetime.now(UTC),
    }
    with pytest.raises(InvalidRecordError) as raised:
        EventRecord(**fields, payload_json=text)
    assert (raised.value.field, raised.value.value) == ("EventRecord.payload_json", text)
    # One read from a file another tool wrote is not checked when read (that
    # would decode every payload of a listing): .payload names it instead.
    damaged = unchecked_replace(EventRecord(**fields, payload_json="1"), payload_json=text)
    with pytest.raises(InvalidRecordError) as raised:
        _ = damaged.payload
    assert raised.value.field == "EventRecord.payload_json"
    assert "in event 1 (run r, sequence 1)" in str(raised.value)


def test_only_a_finished_record_has_completed_at() -> None:
    # Created pending or running with one, a run kept it: a finish that never was.
    moment = datetime.now(UTC)
    for status in ("pending", "running"):
        with pytest.raises(InvalidRecordError) as raised:
            new_run(status=status, completed_at=moment)
        assert (raised.value.field, raised.value.value) == ("Run.completed_at", moment)
    for unit_status in ("pending", "ready", "blocked", "running"):
        with pytest.raises(InvalidRecordError) as raised:
            UnitRecord(run_id="r", unit_id="u", status=unit_status, completed_at=moment)  # type: ignore[arg-type]
        assert raised.value.field == "UnitRecord.completed_at"
    assert new_run(status="failed", completed_at=moment).completed_at == moment
    assert UnitRecord(run_id="r", unit_id="u", status="cancelled", completed_at=moment)  # type: ignore[arg-type]


def test_a_resumable_run_checks_itself() -> None:
    run = new_run()
    unit = UnitRecord(run_id=run.id, unit_id="u1")
    assert ResumableRun(run=run, units=[unit], next_sequence=1).units == [unit]
    other = UnitRecord(run_id=new_run().id, unit_id="u1")
    for fields, field in [
        ({"run": "x", "units": [], "next_sequence": 1}, "run"),
        ({"run": run, "units": None, "next_sequence": 1}, "units"),
        ({"run": run, "units": ["u1"], "next_sequence": 1}, "units"),
        ({"run": run, "units": [other], "next_sequence": 1}, "units"),  # another run's
        ({"run": run, "units": [], "next_sequence": 0}, "next_sequence"),
        ({"run": run, "units": [], "next_sequence": True}, "next_sequence"),
        ({"run": run, "units": [], "next_sequence": 1, "attempt": -1}, "attempt"),
        ({"run": run, "units": [], "next_sequence": 1, "owner": " "}, "owner"),
        ({"run": run, "units": [], "next_sequence": 1, "owner_alive": 1}, "owner_alive"),
    ]:
        with pytest.raises(InvalidRecordError) as raised:
            ResumableRun(**fields)
        assert raised.value.field == f"ResumableRun.{field}"


def test_error_messages_shorten_huge_values() -> None:
    with pytest.raises(InvalidRecordError) as raised:
        new_run(feature_branch="x" * 10_000)
    assert len(str(raised.value)) < 300
    assert "10000 characters" in str(raised.value)
