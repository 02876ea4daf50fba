"""The seam between the shared front and a storage engine.

``Operations`` (the front) checks its arguments, then asks the engine's
queries for a ``Work`` and hands it to ``_read`` or ``_write``, which the DB
and Transaction of that engine route: a function of a ``sqlite3.Connection``
run on its thread (``daemon_db/_sqlite/queries.py``), or a coroutine function
of an asyncpg connection (``daemon_db/_postgres/queries.py``). The front never
looks inside a Work; only its result type is shared.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, Generic, Protocol, TypeVar

from ._records import EventRecord, ResumableRun, Run, RunStatus, UnitRecord, UnitStatus

__all__ = ["Queries", "Work"]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class Work(Generic[T_co]):
    """One unit of work of an engine, whose result is a ``T_co``; opaque to the front."""

    __slots__ = ("call",)

    def __init__(self, call: Callable[..., Any]) -> None:
        self.call = call


class Queries(Protocol):
    """The units of work an engine provides for the run, unit and event operations.

    Each engine's ``queries`` module is one (mypy checks modules against protocols).
    Damaged rows come back from ``resumable`` and ``claim`` as objects with an
    ``error(path)`` method, the DamagedRecordError a caller sees.
    """

    def create_run(self, *, run: Run, owner: Any) -> Work[Run]: ...
    def get_run(self, *, run_id: str) -> Work[Run | None]: ...
    def get_run_by_branch(self, *, feature_branch: str, repo_path: str) -> Work[Run | None]: ...
    def update_run_status(
        self,
        *,
        run_id: str,
        status: RunStatus,
        error: str | None,
        expected: Collection[RunStatus] | None,
        owner: Any,
    ) -> Work[Run]: ...
    def delete_run(self, *, run_id: str) -> Work[bool]: ...
    def list_runs_page(
        self,
        *,
        statuses: Collection[RunStatus] | None,
        feature_branch: str | None,
        repo_path: str | None,
        newest_first: bool,
        after: str | None,
        limit: int,
    ) -> Work[list[Run]]: ...
    def complete_run(
        self, *, run_id: str, status: RunStatus, error: str | None, payload: str | None
    ) -> Work[Run]: ...
    def create_unit(self, *, unit: UnitRecord) -> Work[UnitRecord]: ...
    def get_unit(self, *, unit_record_id: str) -> Work[UnitRecord | None]: ...
    def update_unit_status(
        self,
        *,
        unit_record_id: str,
        status: UnitStatus,
        error: str | None,
        expected: Collection[UnitStatus] | None,
    ) -> Work[UnitRecord]: ...
    def update_unit_branch(
        self, *, unit_record_id: str, branch: str, worktree_path: str
    ) -> Work[UnitRecord]: ...
    def list_units_page(
        self, *, run_id: str, status: UnitStatus | None, after: str | None, limit: int
    ) -> Work[list[UnitRecord]]: ...
    def append_event(
        self, *, run_id: str, event_type: str, unit_id: str | None, payload: str | None
    ) -> Work[EventRecord]: ...
    def next_sequence(self, *, run_id: str) -> Work[int]: ...
    def list_events_page(
        self, *, run_id: str, after: int, limit: int
    ) -> Work[list[EventRecord]]: ...
    def resumable(self) -> Work[tuple[list[ResumableRun], list[Any]]]: ...
    def claim(
        self, *, owner: Any, max_attempts: int | None
    ) -> Work[tuple[list[ResumableRun], list[Run], list[Any]]]: ...
    def release_run(self, *, run_id: str) -> Work[str | None]: ...
    def release_runs(self, *, run_ids: Sequence[str], owner: Any) -> Work[None]: ...
