"""Model-based fuzzing: random sequences of every operation, checked against a plain model.

Each step calls the store and a small in-memory model of runs, units and
events; after every step the two must agree, and a call the model says is
invalid must have raised its documented error and changed nothing.

Ownership is in the model too: two DBs on the file, ``db`` and ``other``, each an
owner. ``db`` can be made to look dead (its lease expired, as a hung loop's
would) and ``other`` then claims, taking its runs over and counting attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import shutil
import sqlite3
import tempfile
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    multiple,
    precondition,
    rule,
)

from daemon_db import (
    DB,
    DaemonDBError,
    InvalidRecordError,
    Run,
    RunExistsError,
    RunNotFoundError,
    RunStatus,
    StatusConflictError,
    UnitExistsError,
    UnitNotFoundError,
    UnitRecord,
    UnitStatus,
    make_unit_record_id,
)
from tests.helpers import report

T = TypeVar("T")
ACTIVE = {RunStatus.PENDING, RunStatus.RUNNING}
FINISHED = {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}
UNKNOWN = "01ZZZZZZZZZZZZZZZZZZZZZZZZ"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
not_json = st.sampled_from([float("nan"), float("inf"), {1, 2}, object(), b"bytes", {"k": 1j}])


LEASE = 3600.0  # renewals never come during a test: only the rules below change liveness
MAX_ATTEMPTS = 2


@dataclass
class ModelRun:
    branch: str | None
    repo: str
    status: RunStatus
    error: str | None = None
    units: dict[str, UnitStatus] = field(default_factory=dict)
    events: list[tuple[str, str | None, Any]] = field(default_factory=list)
    owner: str | None = "db"  # "db", "other", or None (released, or its owner forgotten)
    attempts: int = 0


class StoreMachine(RuleBasedStateMachine):
    steps: ClassVar[int] = 0
    runs = Bundle("runs")

    def __init__(self) -> None:
        super().__init__()
        self.folder = tempfile.mkdtemp()
        self.path = Path(self.folder) / "state.db"
        self.loop = asyncio.new_event_loop()
        self.db: DB = self.call(DB.open(self.path, owner="db", lease=LEASE))
        self.other: DB = self.call(DB.open(self.path, owner="other", lease=LEASE))
        self.db_alive = True
        self.model: dict[str, ModelRun] = {}

    def call(self, awaitable: Awaitable[T]) -> T:
        StoreMachine.steps += 1
        return self.loop.run_until_complete(awaitable)

    def refused(self, error: type[Exception], awaitable: Awaitable[object]) -> Exception:
        with pytest.raises(error) as raised:
            self.call(awaitable)
        return raised.value

    def teardown(self) -> None:
        self.call(self.db.close())
        self.call(self.other.close())
        self.loop.close()
        shutil.rmtree(self.folder)

    def active_holder(
        self, branch: str | None, repo: str, other_than: str | None = None
    ) -> str | None:
        if branch is None:  # runs without a branch are never each other's rivals
            return None
        for run_id, run in self.model.items():
            same_branch = (run.branch, run.repo) == (branch, repo)
            if same_branch and run.status in ACTIVE and run_id != other_than:
                return run_id
        return None

    # Runs

    @rule(
        target=runs,
        branch=st.sampled_from(["feature/a", "feature/b", None]),
        repo=st.sampled_from(["/srv/one", "/srv/two"]),
        status=st.sampled_from(list(RunStatus)),
    )
    def create_run(self, branch: str | None, repo: str, status: RunStatus) -> object:
        run = Run(
            feature_branch=branch,
            repo_path=repo,
            target_branch="main",
            tasks_dir="tasks",
            parallelism=None if branch is None else 1,
            status=status,
        )
        holder = self.active_holder(branch, repo) if status in ACTIVE else None
        if holder is not None:
            error = self.refused(RunExistsError, self.db.create_run(run))
            assert error.existing_run_id == holder  # type: ignore[attr-defined]
            return multiple()
        assert self.call(self.db.create_run(run)).id == run.id
        held_by = None if status in FINISHED else "db"  # a finished run is held by nobody
        self.model[run.id] = ModelRun(branch, repo, status, owner=held_by)
        self.db_alive = True  # a write that creates a run renews its owner
        return run.id

    @rule(run_id=runs)
    def create_run_with_a_taken_id(self, run_id: str) -> None:
        run = Run(
            id=run_id,
            feature_branch="feature/c",
            repo_path="/srv/three",
            target_branch="main",
            tasks_dir="tasks",
            parallelism=1,
            status=RunStatus.COMPLETED,
        )
        if run_id in self.model:
            self.refused(RunExistsError, self.db.create_run(run))
        else:
            self.call(self.db.create_run(run))
            finished = ModelRun("feature/c", "/srv/three", RunStatus.COMPLETED, owner=None)
            self.model[run_id] = finished
            self.db_alive = True

    @rule(
        run_id=runs | st.just(UNKNOWN),
        status=st.sampled_from(list(RunStatus)),
        error=st.none() | st.text(st.characters(exclude_characters="\x00"), max_size=10),
        expected=st.none() | st.sets(st.sampled_from(list(RunStatus)), min_size=1),
    )
    def update_run_status(
        self, run_id: str, status: RunStatus, error: str | None, expected: set[RunStatus] | None
    ) -> None:
        run = self.model.get(run_id)
        update = self.db.update_run_status
        if run is None:
            self.refused(RunNotFoundError, update(run_id, status, error, expected=expected))
            return
        if expected is not None and run.status not in expected:
            conflict = self.refused(
                StatusConflictError, update(run_id, status, error, expected=expected)
            )
            assert conflict.current is run.status  # type: ignore[attr-defined]
            return
        if status in ACTIVE and self.active_holder(run.branch, run.repo, run_id):
            self.refused(RunExistsError, update(run_id, status, error, expected=expected))
            return
        updated = self.call(update(run_id, status, error, expected=expected))
        assert (updated.status, updated.error) == (status, error)
        if run.status in FINISHED and status in ACTIVE:  # reopened: held afresh, as if created
            run.owner, run.attempts = "db", 0
            self.db_alive = True
        run.status, run.error = status, error
        if status in FINISHED:  # a finished run is held by nobody
            run.owner = None

    @rule(run_id=consumes(runs) | st.just(UNKNOWN))
    def delete_run(self, run_id: str) -> None:
        assert self.call(self.db.delete_run(run_id)) is (run_id in self.model)
        self.model.pop(run_id, None)

    @rule(run_id=runs | st.just(UNKNOWN), status=st.sampled_from(list(RunStatus)))
    def complete_run(self, run_id: str, status: RunStatus) -> None:
        if status not in FINISHED:
            self.refused(InvalidRecordError, self.db.complete_run(run_id, status))
        elif run_id not in self.model:
            self.refused(RunNotFoundError, self.db.complete_run(run_id, status))
        elif self.model[run_id].status is status:  # done already: nothing changes
            run = self.model[run_id]
            assert self.call(self.db.complete_run(run_id, status, "again")).error == run.error
        elif self.model[run_id].status in FINISHED:  # finished otherwise: not overwritten
            self.refused(StatusConflictError, self.db.complete_run(run_id, status))
        else:
            self.call(self.db.complete_run(run_id, status, "done"))
            run = self.model[run_id]
            run.status, run.error, run.owner = status, "done", None
            run.events.append(("run_completed", None, {"status": status.value, "error": "done"}))

    # Units

    @rule(
        run_id=runs | st.just(UNKNOWN),
        unit_id=st.sampled_from(["u1", "u2", "u3"]),
        status=st.sampled_from(list(UnitStatus)),
    )
    def create_unit(self, run_id: str, unit_id: str, status: UnitStatus) -> None:
        unit = UnitRecord(run_id=run_id, unit_id=unit_id, status=status)
        run = self.model.get(run_id)
        if run is None:
            self.refused(RunNotFoundError, self.db.create_unit(unit))
        elif unit_id in run.units:
            self.refused(UnitExistsError, self.db.create_unit(unit))
        else:
            self.call(self.db.create_unit(unit))
            run.units[unit_id] = status

    @rule(
        run_id=runs | st.just(UNKNOWN),
        unit_id=st.sampled_from(["u1", "u2", "u3"]),
        status=st.sampled_from(list(UnitStatus)),
        expected=st.none() | st.sampled_from(list(UnitStatus)),
    )
    def update_unit_status(
        self, run_id: str, unit_id: str, status: UnitStatus, expected: UnitStatus | None
    ) -> None:
        record_id = make_unit_record_id(run_id, unit_id)
        run = self.model.get(run_id)
        update = self.db.update_unit_status
        if run is None or unit_id not in run.units:
            self.refused(UnitNotFoundError, update(record_id, status, expected=expected))
            self.refused(UnitNotFoundError, self.db.update_unit_branch(record_id, "b", "/wt"))
        elif expected is not None and run.units[unit_id] is not expected:
            self.refused(StatusConflictError, update(record_id, status, expected=expected))
        else:
            assert self.call(update(record_id, status, expected=expected)).status is status
            run.units[unit_id] = status

    # Events

    @rule(
        run_id=runs | st.just(UNKNOWN),
        event_type=st.sampled_from(["tick", "unit_started", "note"]),
        unit_id=st.none() | st.sampled_from(["u1", "anything"]),
        payload=json_values,
    )
    def append_event(self, run_id: str, event_type: str, unit_id: str | None, payload: Any) -> None:
        run = self.model.get(run_id)
        if run is None:
            self.refused(
                RunNotFoundError, self.db.append_event(run_id, event_type, unit_id, payload)
            )
            return
        event = self.call(self.db.append_event(run_id, event_type, unit_id, payload))
        run.events.append((event_type, unit_id, payload))
        assert event.sequence == len(run.events)

    @rule(run_id=runs, payload=not_json)
    def append_a_payload_that_is_not_json(self, run_id: str, payload: object) -> None:
        self.refused(InvalidRecordError, self.db.append_event(run_id, "x", None, payload))

    @rule(
        call=st.sampled_from(
            [
                lambda db: db.get_run(""),
                lambda db: db.update_run_status(" ", RunStatus.RUNNING),
                lambda db: db.update_run_status(UNKNOWN, "paused"),
                lambda db: db.create_unit(UnitRecord(run_id=UNKNOWN, unit_id="u", status="x")),
                lambda db: db.append_event(UNKNOWN, ""),
                lambda db: db.list_events_since(UNKNOWN, -1),
                lambda db: db.list_runs(limit=-5),
            ]
        )
    )
    def bad_input(self, call: Any) -> None:
        with pytest.raises(InvalidRecordError):
            self.call(_later(call, self.db))

    # Transactions, and the process going away

    @rule(
        run_id=runs,
        unit_id=st.sampled_from(["u1", "u2", "u3", "u4"]),
        fail=st.booleans(),
    )
    def transaction(self, run_id: str, unit_id: str, fail: bool) -> None:
        if run_id not in self.model:
            return
        after = copy.deepcopy(self.model)

        async def block() -> None:
            async with self.db.transaction() as tx:
                await tx.append_event(run_id, "in_block", payload=[1])
                after[run_id].events.append(("in_block", None, [1]))
                try:
                    await tx.create_unit(UnitRecord(run_id=run_id, unit_id=unit_id))
                    after[run_id].units[unit_id] = UnitStatus.PENDING
                except UnitExistsError:
                    assert unit_id in after[run_id].units
                await self.db.update_run_status(run_id, after[run_id].status, "in block")
                after[run_id].error = "in block"
                if fail:
                    raise DaemonDBError("roll it back")

        if fail:
            self.refused(DaemonDBError, block())
        else:
            self.call(block())
            self.model = after

    @rule()
    def reopen(self) -> None:
        """A clean close hands back what ``db`` holds, unfinished and uncounted."""
        self.call(self.db.close())
        self.db = self.call(DB.open(self.path, owner="db", lease=LEASE))
        self.db_alive = True
        for run in self.model.values():
            if run.owner == "db":
                run.owner = None

    # Ownership

    @rule()
    def db_looks_dead(self) -> None:
        """``db``'s lease runs out, as a hung loop's would (its process still runs)."""
        with contextlib.closing(sqlite3.connect(self.path)) as conn, conn:
            conn.execute(
                "UPDATE owners SET lease_until = '2000-01-01T00:00:00.000000Z' WHERE id = ?",
                (self.db._owner.id,),
            )
        self.db_alive = False

    @rule(by=st.sampled_from(["db", "other"]))
    def claim(self, by: str) -> None:
        claimer = self.db if by == "db" else self.other
        claimed = self.call(claimer.claim_resumable_runs(max_attempts=MAX_ATTEMPTS))
        taken, given_up = [], []
        for run_id, run in sorted(self.model.items()):
            dead = run.owner == "db" and not self.db_alive and by == "other"
            if run.status in ACTIVE and (run.owner is None or dead):
                if dead and run.attempts + 1 > MAX_ATTEMPTS:
                    given_up.append(run_id)
                    run.attempts += 1
                    run.owner, run.status = None, RunStatus.FAILED
                    run.error = claimed.abandoned[len(given_up) - 1].error
                    payload = {
                        "attempts": run.attempts,
                        "max_attempts": MAX_ATTEMPTS,
                        "owner": "db",
                    }
                    run.events.append(("run_abandoned", None, payload))
                else:
                    taken.append((run_id, run.attempts + dead))
                    run.owner, run.attempts = by, run.attempts + dead
            elif dead:
                run.owner = None  # a dead owner is forgotten once claimed from
        assert [(r.run.id, r.attempt) for r in claimed.resumed] == taken
        assert [r.id for r in claimed.abandoned] == given_up
        assert all(r.status is RunStatus.FAILED for r in claimed.abandoned)
        if by == "db":
            self.db_alive = True

    @precondition(lambda self: self.model)
    @invariant()
    def store_and_model_agree(self) -> None:
        runs = self.call(self.db.list_runs())
        assert [run.id for run in runs] == sorted(self.model)
        for run in runs:
            expected = self.model[run.id]
            assert (run.feature_branch, run.repo_path, run.status, run.error) == (
                expected.branch,
                expected.repo,
                expected.status,
                expected.error,
            )
            assert (run.completed_at is not None) == (run.status in FINISHED)
            if run.status is RunStatus.RUNNING:
                assert run.started_at is not None
            units = self.call(self.db.list_units_by_run(run.id))
            assert {u.unit_id: u.status for u in units} == expected.units
            events = self.call(self.db.list_events(run.id))
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            assert [(e.event_type, e.unit_id, e.payload) for e in events] == expected.events
        held = self.call(self.db._owners_of([run.id for run in runs]))
        assert {run_id: holder.owner for run_id, holder in held.items()} == {
            run_id: run.owner for run_id, run in self.model.items()
        }
        resumable = self.call(self.db.resumable_runs())
        assert [r.run.id for r in resumable] == [r.id for r in runs if r.status in ACTIVE]
        for item in resumable:
            expected = self.model[item.run.id]
            alive = expected.owner == "other" or (expected.owner == "db" and self.db_alive)
            assert (item.owner, item.owner_alive, item.attempt) == (
                expected.owner,
                alive,
                expected.attempts,
            )


async def _later(call: Any, db: DB) -> object:
    return await call(db)


StoreMachine.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class TestStoreAgainstTheModel(StoreMachine.TestCase):  # type: ignore[misc,valid-type]
    @classmethod
    def tearDownClass(cls) -> None:
        report(f"model-based fuzzing: {StoreMachine.steps:,} calls checked against the model")
