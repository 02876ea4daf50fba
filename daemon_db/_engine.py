"""The seam between the shared front and a storage engine.

``Operations`` (the front) checks its arguments, then asks the engine's
``Queries`` (its ``queries.QUERIES``) for a ``Work`` and hands it to ``_read``
or ``_write``, which the DB and Transaction of that engine route: a function
of a ``sqlite3.Connection`` run on its thread (``daemon_db/_sqlite/``), or a
coroutine function of an asyncpg connection (``daemon_db/_postgres/``). The front never
looks inside a Work; only its result type is shared.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from functools import partial
from types import ModuleType
from typing import Any, Generic, TypeVar

from ._owner import Held
from ._records import EventRecord, ResumableRun, Run, RunStatus, UnitRecord, UnitStatus

__all__ = ["Queries", "Work"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Work(Generic[T_co]):
    """One unit of work of an engine, whose result is a ``T_co``; opaque to the front."""

    __slots__ = ("call",)

    def __init__(self, call: Callable[..., Any]) -> None:
        self.call = call


class Queries:
    """The units of work of the run, unit and event operations, from one engine's modules.

    Both engines name their query functions alike, in ``runs``, ``units``,
    ``events`` and ``owners``: plain functions of a ``sqlite3.Connection`` for
    SQLite, coroutine functions of an asyncpg connection for PostgreSQL. Each
    method binds one to its arguments; the engine's DB runs it. Damaged rows
    come back from ``resumable`` and ``claim`` as objects with an ``error(path)``
    method, the DamagedRecordError a caller sees.
    """

    __slots__ = ("_events", "_owners", "_runs", "_units")

    def __init__(
        self, *, runs: ModuleType, units: ModuleType, events: ModuleType, owners: ModuleType
    ) -> None:
        self._runs, self._units, self._events, self._owners = runs, units, events, owners

    def create_run(self, *, run: Run, owner: Any) -> Work[Run]:
        return Work(partial(self._owners.create_run, run=run, owner=owner))

    def get_run(self, *, run_id: str) -> Work[Run | None]:
        return Work(partial(self._runs.get, run_id=run_id))

    def get_run_by_branch(self, *, feature_branch: str, repo_path: str) -> Work[Run | None]:
        return Work(
            partial(self._runs.get_by_branch, feature_branch=feature_branch, repo_path=repo_path)
        )

    def update_run_status(
        self,
        *,
        run_id: str,
        status: RunStatus,
        error: str | None,
        expected: Collection[RunStatus] | None,
        owner: Any,
    ) -> Work[Run]:
        return Work(
            partial(
                self._owners.update_run_status,
                run_id=run_id,
                status=status,
                error=error,
                expected=expected,
                owner=owner,
            )
        )

    def delete_run(self, *, run_id: str) -> Work[bool]:
        return Work(partial(self._runs.delete, run_id=run_id))

    def list_runs_page(
        self,
        *,
        statuses: Collection[RunStatus] | None,
        feature_branch: str | None,
        repo_path: str | None,
        newest_first: bool,
        after: str | None,
        limit: int,
    ) -> Work[list[Run]]:
        return Work(
            partial(
                self._runs.list_page,
                statuses=statuses,
                feature_branch=feature_branch,
                repo_path=repo_path,
                newest_first=newest_first,
                after=after,
                limit=limit,
            )
        )

    def owned_runs_page(
        self,
        *,
        statuses: Collection[RunStatus] | None,
        feature_branch: str | None,
        repo_path: str | None,
        newest_first: bool,
        after: str | None,
        limit: int,
    ) -> Work[list[tuple[Run, Held]]]:
        return Work(
            partial(
                self._owners.owned_page,
                statuses=statuses,
                feature_branch=feature_branch,
                repo_path=repo_path,
                newest_first=newest_first,
                after=after,
                limit=limit,
            )
        )

    def complete_run(
        self, *, run_id: str, status: RunStatus, error: str | None, payload: str | None
    ) -> Work[Run]:
        return Work(
            partial(self._runs.complete, run_id=run_id, status=status, error=error, payload=payload)
        )

    def create_unit(self, *, unit: UnitRecord) -> Work[UnitRecord]:
        return Work(partial(self._units.create, unit=unit))

    def get_unit(self, *, unit_record_id: str) -> Work[UnitRecord | None]:
        return Work(partial(self._units.get, unit_record_id=unit_record_id))

    def update_unit_status(
        self,
        *,
        unit_record_id: str,
        status: UnitStatus,
        error: str | None,
        expected: Collection[UnitStatus] | None,
    ) -> Work[UnitRecord]:
        return Work(
            partial(
                self._units.update_status,
                unit_record_id=unit_record_id,
                status=status,
                error=error,
                expected=expected,
            )
        )

    def update_unit_branch(
        self, *, unit_record_id: str, branch: str, worktree_path: str
    ) -> Work[UnitRecord]:
        return Work(
            partial(
                self._units.update_branch,
                unit_record_id=unit_record_id,
                branch=branch,
                worktree_path=worktree_path,
            )
        )

    def list_units_page(
        self, *, run_id: str, status: UnitStatus | None, after: str | None, limit: int
    ) -> Work[list[UnitRecord]]:
        return Work(
            partial(self._units.list_page, run_id=run_id, status=status, after=after, limit=limit)
        )

    def append_event(
        self, *, run_id: str, event_type: str, unit_id: str | None, payload: str | None
    ) -> Work[EventRecord]:
        return Work(
            partial(
                self._events.append,
                run_id=run_id,
                event_type=event_type,
                unit_id=unit_id,
                payload=payload,
            )
        )

    def next_sequence(self, *, run_id: str) -> Work[int]:
        return Work(partial(self._events.next_sequence, run_id=run_id))

    def list_events_page(self, *, run_id: str, after: int, limit: int) -> Work[list[EventRecord]]:
        return Work(partial(self._events.list_page, run_id=run_id, after=after, limit=limit))

    def follow_page(
        self, *, run_id: str, after: int, limit: int
    ) -> Work[tuple[RunStatus | None, list[EventRecord]]]:
        return Work(partial(self._events.follow_page, run_id=run_id, after=after, limit=limit))

    def resumable(self) -> Work[tuple[list[ResumableRun], list[Any]]]:
        return Work(self._owners.resumable)

    def claim(
        self, *, owner: Any, max_attempts: int | None
    ) -> Work[tuple[list[ResumableRun], list[Run], list[Any]]]:
        return Work(partial(self._owners.claim, owner=owner, max_attempts=max_attempts))

    def release_run(self, *, run_id: str) -> Work[str | None]:
        return Work(partial(self._owners.release_run, run_id=run_id))

    def release_runs(self, *, run_ids: Sequence[str], owner: Any) -> Work[None]:
        return Work(partial(self._owners.release_runs, run_ids=run_ids, owner=owner))

    def holds(self, *, run_id: str, owner: Any, lock: bool) -> Work[bool]:
        return Work(partial(self._owners.holds, run_id=run_id, owner=owner, lock=lock))
