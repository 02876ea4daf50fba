"""The event log: appends, gap-free sequences, listings, payloads, following."""

from __future__ import annotations

import asyncio
import enum
import json
import sys
from pathlib import Path

import pytest

import daemon_db._sqlite.db
from daemon_db import DB, EventRecord, RunNotFoundError, RunStatus, new_run_id
from tests.helpers import new_run, new_unit

CHILD = Path(__file__).parent / "children" / "append_events.py"


def _sequences(events: list[EventRecord]) -> list[int]:
    return [event.sequence for event in events]


async def test_event_append_and_list(db: DB) -> None:
    run = await db.create_run(new_run())
    first = await db.append_event(run.id, "run_started")
    second = await db.append_event(run.id, "unit_progress", unit_id="u1", payload={"pct": 50})
    assert (first.sequence, second.sequence) == (1, 2)
    assert first.payload_json is None
    assert first.payload is None
    assert second.payload_json == '{"pct":50}'
    assert second.payload == {"pct": 50}
    assert second.unit_id == "u1"
    assert second.id > first.id
    assert first.created_at <= second.created_at
    assert first.created_at.tzinfo is not None
    assert await db.list_events(run.id) == [first, second]
    assert await db.get_next_sequence(run.id) == 3


async def test_event_sequences_are_per_run(db: DB) -> None:
    a = await db.create_run(new_run())
    b = await db.create_run(new_run())
    for _ in range(3):
        await db.append_event(a.id, "tick")
    assert (await db.append_event(b.id, "tick")).sequence == 1
    assert await db.get_next_sequence(a.id) == 4
    assert await db.get_next_sequence(b.id) == 2


async def test_event_payload_is_compact_json(db: DB) -> None:
    run = await db.create_run(new_run())
    payload = {"b": [1, 2.5, None, True], "a": {"nested": "é"}, "s": "x y"}
    event = await db.append_event(run.id, "t", payload=payload)
    assert event.payload_json == json.dumps(payload, separators=(",", ":"))
    assert (await db.list_events(run.id))[0].payload == payload
    for scalar in [0, "", [], False, 1.5]:
        appended = await db.append_event(run.id, "scalar", payload=scalar)
        assert appended.payload == scalar


async def test_event_unit_id_is_free_text(db: DB) -> None:
    run = await db.create_run(new_run())
    event = await db.append_event(run.id, "note", unit_id="no-such-unit")
    assert event.unit_id == "no-such-unit"


class EventType(enum.StrEnum):
    """How a daemon may name its event types."""

    STARTED = "started"


class Branch(str):
    """A str subclass, as a caller's own type for names may be."""


async def test_text_given_as_a_str_enum_or_subclass_is_returned_as_a_read_returns_it(
    db: DB,
) -> None:
    # A write's record is the record a read gives: plain str, not the caller's
    # enum member (equal, but with another type and repr).
    run = await db.create_run(new_run(feature_branch=Branch("feature/enum"), status="running"))
    event = await db.append_event(Branch(run.id), EventType.STARTED, unit_id=Branch("u1"))
    unit = await db.create_unit(new_unit(run, Branch("u2"), branch=Branch("b")))
    finished = await db.update_run_status(run.id, RunStatus.FAILED, error=Branch("boom"))
    assert finished is not None
    read = await db.list_events(run.id)
    assert [event] == read[:1]
    assert repr(event) == repr(read[0])
    assert await db.get_unit(unit.id) == unit
    assert await db.get_run(run.id) == finished
    texts = [
        run.feature_branch,
        event.run_id,
        event.event_type,
        event.unit_id,
        unit.unit_id,
        unit.id,
        unit.branch,
        finished.error,
    ]
    assert [type(text) for text in texts] == [str] * len(texts)


async def test_events_can_be_appended_in_any_run_status(db: DB) -> None:
    for status in RunStatus:
        run = await db.create_run(new_run(status=status))
        assert (await db.append_event(run.id, "late")).sequence == 1


async def test_event_on_unknown_run(db: DB) -> None:
    missing = new_run_id()
    with pytest.raises(RunNotFoundError):
        await db.append_event(missing, "x")
    with pytest.raises(RunNotFoundError):
        await db.get_next_sequence(missing)
    assert await db.list_events(missing) == []
    assert await db.list_events_since(missing, 0) == []


async def test_events_since(db: DB) -> None:
    run = await db.create_run(new_run())
    appended = [await db.append_event(run.id, "tick", payload=i) for i in range(5)]
    assert await db.list_events_since(run.id, 0) == appended
    assert await db.list_events_since(run.id, 3) == appended[3:]
    assert await db.list_events_since(run.id, 5) == []
    assert await db.list_events_since(run.id, 99) == []


async def test_event_sequences_gap_free_under_100_concurrent_tasks(db: DB) -> None:
    run = await db.create_run(new_run())

    async def append(task: int) -> list[EventRecord]:
        return [await db.append_event(run.id, "tick", payload=[task, i]) for i in range(10)]

    results = await asyncio.gather(*(append(task) for task in range(100)))
    returned = sorted(_sequences([event for events in results for event in events]))
    assert returned == list(range(1, 1001))
    stored = await db.list_events(run.id)
    assert _sequences(stored) == list(range(1, 1001))
    assert sorted(event.id for event in stored) == [event.id for event in stored]
    # What each caller was told is what was stored.
    by_sequence = {event.sequence: event for event in stored}
    assert all(by_sequence[e.sequence] == e for events in results for e in events)


async def test_event_sequences_gap_free_across_processes(file_db: DB, db_path: Path) -> None:
    run = await file_db.create_run(new_run())
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(CHILD), str(db_path), run.id, "200", "4"
        )
        for _ in range(4)
    ]
    for i in range(200):
        await file_db.append_event(run.id, "parent", payload=i)
    assert [await process.wait() for process in processes] == [0, 0, 0, 0]

    stored = await file_db.list_events(run.id)
    assert _sequences(stored) == list(range(1, 1001))
    assert sum(event.event_type == "child" for event in stored) == 800
    assert await file_db.get_next_sequence(run.id) == 1001


async def test_event_listing_over_many_pages(db: DB) -> None:
    run = await db.create_run(new_run())
    async with db.transaction() as tx:
        for _ in range(2500):
            await tx.append_event(run.id, "tick")
    assert _sequences(await db.list_events(run.id)) == list(range(1, 2501))
    assert _sequences(await db.list_events_since(run.id, 1200)) == list(range(1201, 2501))


# follow_events


async def _collect(iterator: object) -> list[EventRecord]:
    return [event async for event in iterator]  # type: ignore[attr-defined]


async def test_follow_yields_the_past_then_live_events_and_ends_with_the_run(
    db: DB, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Appends through the same DB wake the follower at once: with polling made
    # far too slow to matter, the test still finishes promptly.
    monkeypatch.setattr(daemon_db._sqlite.db, "FOLLOW_POLL_SECONDS", 3600)
    run = await db.create_run(new_run(status="running"))
    await db.append_event(run.id, "before")
    follower = asyncio.create_task(_collect(db.follow_events(run.id)))
    await asyncio.sleep(0.01)
    for i in range(3):
        await db.append_event(run.id, "live", payload=i)
        await asyncio.sleep(0)
    await db.complete_run(run.id, RunStatus.COMPLETED)
    async with asyncio.timeout(10):
        followed = await follower
    assert followed == await db.list_events(run.id)
    assert [event.event_type for event in followed] == [
        "before",
        "live",
        "live",
        "live",
        "run_completed",
    ]


async def test_follow_since(db: DB) -> None:
    run = await db.create_run(new_run())
    for i in range(5):
        await db.append_event(run.id, "tick", payload=i)
    await db.update_run_status(run.id, RunStatus.CANCELLED)
    followed = await _collect(db.follow_events(run.id, since=3))
    assert _sequences(followed) == [4, 5]


async def test_follow_a_finished_run_yields_its_log_and_ends(db: DB) -> None:
    run = await db.create_run(new_run())
    async with db.transaction() as tx:
        for _ in range(2100):
            await tx.append_event(run.id, "tick")
    await db.complete_run(run.id, RunStatus.FAILED, error="boom")
    followed = await _collect(db.follow_events(run.id))
    assert _sequences(followed) == list(range(1, 2102))
    assert followed[-1].payload == {"status": "failed", "error": "boom"}


async def test_follow_ends_when_the_run_is_deleted(db: DB) -> None:
    run = await db.create_run(new_run())
    await db.append_event(run.id, "tick")
    follower = asyncio.create_task(_collect(db.follow_events(run.id)))
    await asyncio.sleep(0.01)
    await db.delete_run(run.id)
    async with asyncio.timeout(10):
        assert _sequences(await follower) == [1]


async def test_follow_an_unknown_run(db: DB) -> None:
    with pytest.raises(RunNotFoundError):
        await _collect(db.follow_events(new_run_id()))


async def test_follow_sees_appends_by_another_connection(file_db: DB, db_path: Path) -> None:
    # A read-only DB object has no writer of its own: it sees the other's appends
    # only by polling, as a follower in another process would.
    run = await file_db.create_run(new_run(status="running"))
    async with DB.open(db_path, readonly=True) as inspector:
        follower = asyncio.create_task(_collect(inspector.follow_events(run.id)))
        for i in range(3):
            await file_db.append_event(run.id, "tick", payload=i)
            await asyncio.sleep(0.02)
        await file_db.complete_run(run.id, RunStatus.COMPLETED)
        async with asyncio.timeout(10):
            followed = await follower
    assert _sequences(followed) == [1, 2, 3, 4]


async def test_follow_sees_appends_by_another_process(file_db: DB, db_path: Path) -> None:
    run = await file_db.create_run(new_run(status="running"))
    seen: list[EventRecord] = []

    async def follow() -> None:
        async for event in file_db.follow_events(run.id):
            seen.append(event)

    follower = asyncio.create_task(follow())
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), str(db_path), run.id, "50", "2"
    )
    assert await child.wait() == 0
    async with asyncio.timeout(10):
        while len(seen) < 50:  # the child's events arrive by polling
            await asyncio.sleep(0.01)
    assert not follower.done()
    await file_db.complete_run(run.id, RunStatus.COMPLETED)
    async with asyncio.timeout(10):
        await follower
    assert _sequences(seen) == list(range(1, 52))
