"""The run, unit and event operations, shared by DB and Transaction.

Each method checks its arguments here, at the edge, then sends one unit of work
(a function in runs.py, units.py or events.py) to the connection's thread
through ``_read`` or ``_write``, which DB and Transaction route differently.
Large listings come back in pages so that the event loop runs between them.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Final, TypeVar

from . import _validation as check
from ._errors import InvalidRecordError
from ._records import (
    ACTIVE_RUN_STATUSES,
    FINISHED_RUN_STATUSES,
    EventRecord,
    ResumableRuns,
    Run,
    RunStatus,
    UnitRecord,
    UnitStatus,
)
from ._sqlite import events, runs, units
from ._sqlite.work import Work

__all__ = ["PAGE_SIZE", "Operations"]

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K")

PAGE_SIZE: Final = 1000
"""Rows fetched per round trip in listings: the loop runs between pages."""


class Operations(abc.ABC):
    """The operations of the store; see DB for how to open one."""

    __slots__ = ()

    _path: str  # the database's path, for the errors built here

    @abc.abstractmethod
    async def _read(self, work: Work[T]) -> T: ...

    @abc.abstractmethod
    async def _write(self, work: Work[T]) -> T: ...

    # Runs

    async def create_run(self, run: Run) -> Run:
        """Insert a run and return it as stored.

        A run created ``running`` without ``started_at`` gets it set to now; one created
        finished without ``completed_at`` gets that set to now. Raises RunExistsError if
        the id is taken or another run of the same branch and repo is active.
        """
        run = _record("run", run, Run)
        return await self._write(partial(runs.create, run=run))

    async def get_run(self, run_id: str) -> Run | None:
        """The run with this id, or None."""
        run_id = check.name("run_id", run_id)
        return await self._read(partial(runs.get, run_id=run_id))

    async def get_run_by_branch(self, feature_branch: str, repo_path: str) -> Run | None:
        """The active run of this branch and repo if there is one, else the newest, else None."""
        feature_branch = check.name("feature_branch", feature_branch)
        repo_path = check.name("repo_path", repo_path)
        return await self._read(
            partial(runs.get_by_branch, feature_branch=feature_branch, repo_path=repo_path)
        )

    async def update_run_status(
        self, run_id: str, status: RunStatus, error: str | None = None
    ) -> Run:
        """Set a run's status and error; return the updated run.

        Entering ``running`` sets ``started_at`` once; entering a finished status sets
        ``completed_at`` to now, leaving one clears it; the same status again changes
        no timestamp. Raises RunNotFoundError, or RunExistsError when the run would
        become a second active run of its branch and repo.
        """
        run_id = check.name("run_id", run_id)
        status = check.member("status", status, RunStatus)
        error = check.optional_text("error", error)
        return await self._write(
            partial(runs.update_status, run_id=run_id, status=status, error=error)
        )

    async def list_runs_by_status(self, status: RunStatus) -> list[Run]:
        """Every run with this status, ordered by id."""
        return await self.list_runs(status=check.member("status", status, RunStatus))

    async def list_incomplete_runs(self) -> list[Run]:
        """Every pending or running run, ordered by id."""
        return await self.list_runs(status=ACTIVE_RUN_STATUSES)

    async def delete_run(self, run_id: str) -> bool:
        """Delete a run with its units and events; True if there was one."""
        run_id = check.name("run_id", run_id)
        return await self._write(partial(runs.delete, run_id=run_id))

    async def list_runs(
        self,
        *,
        status: RunStatus | str | Iterable[RunStatus | str] | None = None,
        feature_branch: str | None = None,
        repo_path: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        newest_first: bool = False,
    ) -> list[Run]:
        """Runs matching every filter given, ordered by id (oldest first by default).

        ``status`` is one status or several. For keyset paging, pass the last id of
        one page as ``after`` to get the runs after it, in the same order.
        """
        statuses = _statuses(status)
        query = partial(
            runs.list_page,
            statuses=statuses,
            feature_branch=check.optional_name("feature_branch", feature_branch),
            repo_path=check.optional_name("repo_path", repo_path),
            newest_first=_flag("newest_first", newest_first),
        )
        if limit is not None:
            limit = check.count("limit", limit, minimum=0)
        after = check.optional_name("after", after)
        if statuses is not None and not statuses:
            return []
        return await self._pages(
            lambda last, size: partial(query, after=last, limit=size),
            start=after,
            key=lambda run: run.id,
            limit=limit,
        )

    # Units

    async def create_unit(self, unit: UnitRecord) -> UnitRecord:
        """Insert a unit and return it as stored (timestamps follow the rules of runs).

        Raises RunNotFoundError if its run does not exist, UnitExistsError if its id
        or its ``(run_id, unit_id)`` is taken.
        """
        unit = _record("unit", unit, UnitRecord)
        return await self._write(partial(units.create, unit=unit))

    async def get_unit(self, unit_record_id: str) -> UnitRecord | None:
        """The unit with this id, or None."""
        unit_record_id = check.name("unit_record_id", unit_record_id)
        return await self._read(partial(units.get, unit_record_id=unit_record_id))

    async def update_unit_status(
        self, unit_record_id: str, status: UnitStatus, error: str | None = None
    ) -> UnitRecord:
        """Set a unit's status and error (timestamps as for runs); raises UnitNotFoundError."""
        unit_record_id = check.name("unit_record_id", unit_record_id)
        status = check.member("status", status, UnitStatus)
        error = check.optional_text("error", error)
        return await self._write(
            partial(units.update_status, unit_record_id=unit_record_id, status=status, error=error)
        )

    async def update_unit_branch(
        self, unit_record_id: str, branch: str, worktree_path: str
    ) -> UnitRecord:
        """Record the branch and worktree a unit works in; raises UnitNotFoundError."""
        unit_record_id = check.name("unit_record_id", unit_record_id)
        branch = check.name("branch", branch)
        worktree_path = check.name("worktree_path", worktree_path)
        return await self._write(
            partial(
                units.update_branch,
                unit_record_id=unit_record_id,
                branch=branch,
                worktree_path=worktree_path,
            )
        )

    async def list_units_by_run(self, run_id: str) -> list[UnitRecord]:
        """Every unit of a run, ordered by unit_id ([] if the run does not exist)."""
        return await self._units(run_id, None)

    async def list_units_by_status(self, run_id: str, status: UnitStatus) -> list[UnitRecord]:
        """The units of a run with this status, ordered by unit_id."""
        return await self._units(run_id, check.member("status", status, UnitStatus))

    async def _units(self, run_id: str, status: UnitStatus | None) -> list[UnitRecord]:
        run_id = check.name("run_id", run_id)
        return await self._pages(
            lambda last, size: partial(
                units.list_page, run_id=run_id, status=status, after=last, limit=size
            ),
            start=None,
            key=lambda unit: unit.unit_id,
        )

    # Events

    async def append_event(
        self, run_id: str, event_type: str, unit_id: str | None = None, payload: Any = None
    ) -> EventRecord:
        """Append an event to a run's log with its next sequence; return it.

        ``payload`` is stored as compact JSON (None: no payload). Raises
        RunNotFoundError, or InvalidRecordError for a payload that is not JSON or
        exceeds 1 MiB.
        """
        run_id = check.name("run_id", run_id)
        event_type = check.name("event_type", event_type)
        if unit_id is not None:
            unit_id = check.text("unit_id", unit_id)
        payload_json = check.payload(payload)
        return await self._write(
            partial(
                events.append,
                run_id=run_id,
                event_type=event_type,
                unit_id=unit_id,
                payload=payload_json,
            )
        )

    async def get_next_sequence(self, run_id: str) -> int:
        """The sequence the run's next event will get; raises RunNotFoundError."""
        run_id = check.name("run_id", run_id)
        return await self._read(partial(events.next_sequence, run_id=run_id))

    async def list_events(self, run_id: str) -> list[EventRecord]:
        """Every event of a run, by sequence ([] if the run does not exist)."""
        return await self.list_events_since(run_id, 0)

    async def list_events_since(self, run_id: str, sequence: int) -> list[EventRecord]:
        """The events of a run with a sequence greater than ``sequence``, in order."""
        run_id = check.name("run_id", run_id)
        sequence = check.count("sequence", sequence, minimum=0)
        return await self._pages(
            lambda last, size: partial(events.list_page, run_id=run_id, after=last, limit=size),
            start=sequence,
            key=lambda event: event.sequence,
        )

    # Atomic work and resumption

    async def complete_run(self, run_id: str, status: RunStatus, error: str | None = None) -> Run:
        """Finish a run and append its ``run_completed`` event, in one transaction.

        ``status`` must be completed, failed or cancelled; the event's payload is
        ``{"status": status, "error": error}``.
        """
        run_id = check.name("run_id", run_id)
        status = check.member("status", status, RunStatus)
        if status not in FINISHED_RUN_STATUSES:
            raise InvalidRecordError("status", status, "must be completed, failed or cancelled")
        error = check.optional_text("error", error)
        try:
            payload = check.payload({"status": status.value, "error": error})
        except InvalidRecordError:
            reason = f"makes the run_completed event's payload exceed {check.MAX_JSON_BYTES} bytes"
            raise InvalidRecordError("error", error, reason) from None
        return await self._write(
            partial(runs.complete, run_id=run_id, status=status, error=error, payload=payload)
        )

    async def resumable_runs(self) -> ResumableRuns:
        """Every pending or running run, by id, with its units and next event sequence.

        Read from one consistent snapshot: the call a daemon makes at start-up.
        A run whose stored values break the store's rules (another tool edited
        them) is left out, and its DamagedRecordError is in the result's
        ``damaged`` list, so that one bad row does not stop every resume.
        """
        found, damaged = await self._read(runs.resumable)
        return ResumableRuns(found, (row.error(self._path) for row in damaged))

    async def _pages(
        self,
        page: Callable[[Any, int], Work[list[R]]],
        *,
        start: K,
        key: Callable[[R], K],
        limit: int | None = None,
    ) -> list[R]:
        """Fetch a keyset-paged listing a page at a time, up to ``limit`` rows.

        Each page asks for one row more than it keeps: that row says whether
        another page is needed, so a listing never ends on an empty round trip.
        """
        rows: list[R] = []
        after = start
        while limit is None or len(rows) < limit:
            size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(rows))
            batch = await self._read(page(after, size + 1))
            if len(batch) <= size:
                rows.extend(batch)
                break
            del batch[size:]
            rows.extend(batch)
            after = key(batch[-1])
        return rows


def _record(field: str, value: object, kind: type[T]) -> T:
    if not isinstance(value, kind):
        raise InvalidRecordError(field, value, f"must be a {kind.__name__}")
    # Checked again: a frozen record can still be changed with object.__setattr__.
    value.__post_init__()  # type: ignore[attr-defined]
    return value


def _statuses(status: object) -> frozenset[RunStatus] | None:
    if status is None:
        return None
    if isinstance(status, str):
        return frozenset({check.member("status", status, RunStatus)})
    if not isinstance(status, Iterable):
        raise InvalidRecordError("status", status, "must be a status or several")
    return frozenset(check.member("status", each, RunStatus) for each in status)


def _flag(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidRecordError(field, value, f"must be a bool, not {type(value).__name__}")
    return value
