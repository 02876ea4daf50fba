"""The run, unit and event operations, shared by DB and Transaction.

Each method checks its arguments here, at the edge, then sends one unit of work
(a function in runs.py, units.py or events.py) to the connection's thread
through ``_read`` or ``_write``, which DB and Transaction route differently.
Large listings come back in pages so that the event loop runs between them.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from functools import partial
from typing import Any, Final, TypeVar

from . import _validation as check
from ._cancellation import wait_out
from ._engine import Queries, Work
from ._errors import DamagedRecordError, InvalidRecordError
from ._owner import Held
from ._records import (
    ACTIVE_RUN_STATUSES,
    FINISHED_RUN_STATUSES,
    ClaimedRuns,
    EventRecord,
    ResumableRun,
    ResumableRuns,
    Run,
    RunStatus,
    UnitRecord,
    UnitStatus,
)

__all__ = ["ITER_PAGE_SIZE", "PAGE_SIZE", "Operations"]

T = TypeVar("T")
Claimed = tuple[list[ResumableRun], list[Run], list[Any]]
R = TypeVar("R")
K = TypeVar("K")

PAGE_SIZE: Final = 1000
"""Rows fetched per round trip in listings: the loop runs between pages."""

ITER_PAGE_SIZE: Final = 256
"""Rows fetched per round trip by iter_runs and iter_events.

Smaller than a listing's page: an iteration holds only the page it is on, so
the garbage collector's passes stay short (see specs/DAEMON-DB.md, Streaming).
"""


class Operations(abc.ABC):
    """The run, unit and event operations that DB and Transaction share.

    Open a store with ``DB.open()``; inside ``async with db.transaction() as tx``,
    ``tx`` has the same methods.
    """

    __slots__ = ()

    _path: str  # the database's path or URL, for the errors built here
    _owner: Any  # who holds the runs this DB creates and claims
    _queries: Queries  # the engine's units of work (_sqlite/queries.py, _postgres/queries.py)

    @abc.abstractmethod
    async def _read(self, work: Work[T]) -> T: ...

    @abc.abstractmethod
    async def _write(self, work: Work[T]) -> T: ...

    @abc.abstractmethod
    def _check_open(self) -> None:
        """Raise what the next call would if none can be made now (a closed DB, an ended block)."""

    @abc.abstractmethod
    def _in_write_block(self) -> bool:
        """Whether a call made now runs in a read-write transaction block."""

    # Runs

    async def create_run(self, run: Run) -> Run:
        """Insert a run and return it as stored.

        A run created ``running`` without ``started_at`` gets it set to now; one created
        finished without ``completed_at`` gets that set to now. A pending or running
        run is held by this DB (its owner) from the start: no other DB's claim takes
        it while this one is alive. A finished run is held by nobody.

        Args:
            run: The run to insert; its ``id`` defaults to a fresh ``new_run_id()``.

        Returns:
            The run as stored, timestamps included.

        Raises:
            RunExistsError: The id is taken, or another run of the same branch and
                repo is pending or running.
            InvalidRecordError: ``run`` is not a valid Run.
            ReadOnlyError: The DB was opened read-only.
            ClosedError: The DB is closed.
            DatabaseError: The database failed (damaged, full, or not writable).
        """
        run = _record("run", run, Run)
        return await self._write(self._queries.create_run(run=run, owner=self._owner))

    async def get_run(self, run_id: str) -> Run | None:
        """Read a run by its id.

        Args:
            run_id: The run's id.

        Returns:
            The run, or None if there is no run with this id.

        Raises:
            InvalidRecordError: ``run_id`` is not a valid id.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        run_id = check.name("run_id", run_id)
        return await self._read(self._queries.get_run(run_id=run_id))

    async def get_run_by_branch(self, feature_branch: str, repo_path: str) -> Run | None:
        """Read the run of a feature branch in a repo.

        Matching is exact on both (no prefix, no case folding).

        Args:
            feature_branch: The run's feature branch.
            repo_path: The run's repository.

        Returns:
            The active (pending or running) run of this branch and repo if there is
            one, else the newest (highest id) of its finished runs, else None.

        Raises:
            InvalidRecordError: A value is not a valid branch or path.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        feature_branch = check.name("feature_branch", feature_branch)
        repo_path = check.name("repo_path", repo_path)
        return await self._read(
            self._queries.get_run_by_branch(feature_branch=feature_branch, repo_path=repo_path)
        )

    async def update_run_status(
        self,
        run_id: str,
        status: RunStatus | str,
        error: str | None = None,
        *,
        expected: RunStatus | str | Iterable[RunStatus | str] | None = None,
    ) -> Run:
        """Set a run's status and error; with ``expected``, only from those statuses.

        Entering ``running`` sets ``started_at`` once; entering a finished status sets
        ``completed_at`` to now, leaving one clears it; the same status again changes
        no timestamp. ``expected`` makes it a compare-and-set: "stop this job"
        racing the job's own end passes ``expected=RunStatus.RUNNING``, and the
        later of the two finds the run finished instead of overwriting it.

        Args:
            run_id: The run's id.
            status: The new status (a RunStatus or its string value).
            error: Stored as given; None clears it.
            expected: A status, or several: change the run only if it is in one.

        Returns:
            The updated run.

        Raises:
            RunNotFoundError: There is no run with this id.
            StatusConflictError: ``expected`` was given and the run is in none of
                those statuses (``.current`` says which); nothing was changed.
            RunExistsError: The run would become a second active run of its branch
                and repo.
            InvalidRecordError: A value is invalid, such as an unknown status.
            ReadOnlyError: The DB was opened read-only.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        run_id = check.name("run_id", run_id)
        status = check.member("status", status, RunStatus)
        error = check.optional_text("error", error)
        wanted = None if expected is None else check.members("expected", expected, RunStatus)
        return await self._write(
            self._queries.update_run_status(
                run_id=run_id, status=status, error=error, expected=wanted, owner=self._owner
            )
        )

    async def list_runs_by_status(self, status: RunStatus | str) -> list[Run]:
        """List the runs with one status.

        Args:
            status: The status (a RunStatus or its string value).

        Returns:
            Every run with this status, ordered by id (oldest first).

        Raises:
            InvalidRecordError: ``status`` is not a RunStatus.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        return await self.list_runs(status=check.member("status", status, RunStatus))

    async def list_incomplete_runs(self) -> list[Run]:
        """List the active runs.

        Returns:
            Every pending or running run, ordered by id (oldest first).

        Raises:
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        return await self.list_runs(status=ACTIVE_RUN_STATUSES)

    async def delete_run(self, run_id: str) -> bool:
        """Delete a run with all its units and events.

        Args:
            run_id: The run's id.

        Returns:
            True if a run was removed, False if there was none with this id.

        Raises:
            InvalidRecordError: ``run_id`` is not a valid id.
            ReadOnlyError: The DB was opened read-only.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        run_id = check.name("run_id", run_id)
        return await self._write(self._queries.delete_run(run_id=run_id))

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
        """List the runs matching every filter given.

        For keyset paging, pass the last id of one page as ``after`` to get the
        runs after it, in the same order.

        Args:
            status: One status, or several (any of them matches); None: any status.
            feature_branch: Only runs of this feature branch (exact match).
            repo_path: Only runs of this repository (exact match).
            limit: At most this many runs (>= 0); None: no limit.
            after: Only runs after this run id, in the chosen order.
            newest_first: Order by id newest first instead of oldest first.

        Returns:
            The matching runs, ordered by id.

        Raises:
            InvalidRecordError: A filter has an invalid value.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        statuses = _statuses(status)
        query = partial(
            self._queries.list_runs_page,
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
            lambda last, size: query(after=last, limit=size),
            start=after,
            key=lambda run: run.id,
            limit=limit,
        )

    # Units

    async def create_unit(self, unit: UnitRecord) -> UnitRecord:
        """Insert a unit of work of a run.

        Timestamps follow the rules of runs: a unit created ``running`` gets
        ``started_at``, one created finished gets ``completed_at``, if not given.

        Args:
            unit: The unit to insert.

        Returns:
            The unit as stored, timestamps included.

        Raises:
            RunNotFoundError: Its run does not exist.
            UnitExistsError: Its id, or its ``(run_id, unit_id)``, is taken.
            InvalidRecordError: ``unit`` is not a valid UnitRecord.
            ReadOnlyError: The DB was opened read-only.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        unit = _record("unit", unit, UnitRecord)
        return await self._write(self._queries.create_unit(unit=unit))

    async def get_unit(self, unit_record_id: str) -> UnitRecord | None:
        """Read a unit by its id.

        Args:
            unit_record_id: The unit's id (by default ``"<run_id>_<unit_id>"``).

        Returns:
            The unit, or None if there is no unit with this id.

        Raises:
            InvalidRecordError: ``unit_record_id`` is not a valid id.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        unit_record_id = check.name("unit_record_id", unit_record_id)
        return await self._read(self._queries.get_unit(unit_record_id=unit_record_id))

    async def update_unit_status(
        self,
        unit_record_id: str,
        status: UnitStatus | str,
        error: str | None = None,
        *,
        expected: UnitStatus | str | Iterable[UnitStatus | str] | None = None,
    ) -> UnitRecord:
        """Set a unit's status and error; with ``expected``, only from those statuses.

        Timestamps change as for runs: entering ``running`` sets ``started_at`` once,
        entering a finished status (completed, failed, cancelled) sets
        ``completed_at``, leaving one clears it.

        Args:
            unit_record_id: The unit's id.
            status: The new status (a UnitStatus or its string value).
            error: Stored as given; None clears it.
            expected: A status, or several: change the unit only if it is in one.

        Returns:
            The updated unit.

        Raises:
            UnitNotFoundError: There is no unit with this id.
            StatusConflictError: ``expected`` was given and the unit is in none of
                those statuses; nothing was changed.
            InvalidRecordError: A value is invalid, such as an unknown status.
            ReadOnlyError: The DB was opened read-only.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        unit_record_id = check.name("unit_record_id", unit_record_id)
        status = check.member("status", status, UnitStatus)
        error = check.optional_text("error", error)
        wanted = None if expected is None else check.members("expected", expected, UnitStatus)
        return await self._write(
            self._queries.update_unit_status(
                unit_record_id=unit_record_id,
                status=status,
                error=error,
                expected=wanted,
            )
        )

    async def update_unit_branch(
        self, unit_record_id: str, branch: str, worktree_path: str
    ) -> UnitRecord:
        """Record the branch and worktree a unit works in.

        Args:
            unit_record_id: The unit's id.
            branch: The unit's git branch.
            worktree_path: The unit's worktree.

        Returns:
            The updated unit.

        Raises:
            UnitNotFoundError: There is no unit with this id.
            InvalidRecordError: A value is not a valid id, branch or path.
            ReadOnlyError: The DB was opened read-only.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        unit_record_id = check.name("unit_record_id", unit_record_id)
        branch = check.name("branch", branch)
        worktree_path = check.name("worktree_path", worktree_path)
        return await self._write(
            self._queries.update_unit_branch(
                unit_record_id=unit_record_id,
                branch=branch,
                worktree_path=worktree_path,
            )
        )

    async def list_units_by_run(self, run_id: str) -> list[UnitRecord]:
        """List the units of a run.

        Args:
            run_id: The run's id.

        Returns:
            Every unit of the run, ordered by ``unit_id``; [] if the run does not exist.

        Raises:
            InvalidRecordError: ``run_id`` is not a valid id.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        return await self._units(run_id, None)

    async def list_units_by_status(self, run_id: str, status: UnitStatus | str) -> list[UnitRecord]:
        """List the units of a run that have one status.

        Args:
            run_id: The run's id.
            status: The status (a UnitStatus or its string value).

        Returns:
            The run's units with this status, ordered by ``unit_id``; [] if the run
            does not exist.

        Raises:
            InvalidRecordError: A value is invalid, such as an unknown status.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        return await self._units(run_id, check.member("status", status, UnitStatus))

    async def _units(self, run_id: str, status: UnitStatus | None) -> list[UnitRecord]:
        run_id = check.name("run_id", run_id)
        return await self._pages(
            lambda last, size: self._queries.list_units_page(
                run_id=run_id, status=status, after=last, limit=size
            ),
            start=None,
            key=lambda unit: unit.unit_id,
        )

    # Events

    async def append_event(
        self, run_id: str, event_type: str, unit_id: str | None = None, payload: Any = None
    ) -> EventRecord:
        """Append an event to a run's log, with the run's next sequence.

        Sequences start at 1 per run and have no gaps and no repeats, however many
        tasks, DB objects or processes append at once. Events can be appended to a
        run in any status.

        Args:
            run_id: The run's id.
            event_type: What happened, such as ``"unit_started"``.
            unit_id: Free text naming a unit (no unit need exist); None: no unit.
            payload: Any JSON-serialisable value, stored as compact JSON; None: no
                payload. Pass the value, not its JSON text: a str is stored as a
                JSON string, and ``event.payload`` gives the same str back.

        Returns:
            The event as stored, with its sequence, id and ``created_at``.

        Raises:
            RunNotFoundError: There is no run with this id.
            InvalidRecordError: A value is invalid, or the payload is not JSON
                (NaN and infinity included) or exceeds 1 MiB once encoded.
            ReadOnlyError: The DB was opened read-only.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        run_id = check.name("run_id", run_id)
        event_type = check.name("event_type", event_type)
        if unit_id is not None:
            unit_id = check.text("unit_id", unit_id)
        payload_json = check.payload(payload)
        return await self._write(
            self._queries.append_event(
                run_id=run_id,
                event_type=event_type,
                unit_id=unit_id,
                payload=payload_json,
            )
        )

    async def get_next_sequence(self, run_id: str) -> int:
        """Read the sequence a run's next event will get.

        Args:
            run_id: The run's id.

        Returns:
            The run's highest sequence plus one (1 for a run without events).

        Raises:
            RunNotFoundError: There is no run with this id.
            InvalidRecordError: ``run_id`` is not a valid id.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        run_id = check.name("run_id", run_id)
        return await self._read(self._queries.next_sequence(run_id=run_id))

    async def list_events(self, run_id: str) -> list[EventRecord]:
        """List a run's event log.

        Args:
            run_id: The run's id.

        Returns:
            Every event of the run, by sequence; [] if the run does not exist.

        Raises:
            InvalidRecordError: ``run_id`` is not a valid id.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        return await self.list_events_since(run_id, 0)

    async def list_events_since(self, run_id: str, sequence: int) -> list[EventRecord]:
        """List a run's events after a sequence.

        Args:
            run_id: The run's id.
            sequence: Only events with a greater sequence (>= 0; 0: all of them).

        Returns:
            The run's events with a sequence greater than ``sequence``, in order;
            [] if the run does not exist.

        Raises:
            InvalidRecordError: A value is invalid, such as a negative sequence.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        run_id = check.name("run_id", run_id)
        sequence = check.count("sequence", sequence, minimum=0)
        return await self._pages(
            lambda last, size: self._queries.list_events_page(
                run_id=run_id, after=last, limit=size
            ),
            start=sequence,
            key=lambda event: event.sequence,
        )

    # Atomic work and resumption

    async def complete_run(
        self, run_id: str, status: RunStatus | str, error: str | None = None
    ) -> Run:
        """Finish a run and append its ``run_completed`` event, in one transaction.

        The event's payload is ``{"status": status, "error": error}``. A run that is
        already finished with ``status`` is returned unchanged and nothing is
        logged, so that a repeated call is harmless; a run finished with another
        status is left as it is (``StatusConflictError``): when "stop this job"
        races the job's own end, exactly one of them finishes it.

        Args:
            run_id: The run's id.
            status: ``completed``, ``failed`` or ``cancelled``.
            error: Stored on the run as given (None clears it), and in the payload.

        Returns:
            The updated run (or the run as it was, if already finished with ``status``).

        Raises:
            RunNotFoundError: There is no run with this id.
            StatusConflictError: The run is already finished with another status.
            InvalidRecordError: ``status`` is not a finished status, or a value is
                invalid.
            ReadOnlyError: The DB was opened read-only.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
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
            self._queries.complete_run(run_id=run_id, status=status, error=error, payload=payload)
        )

    async def resumable_runs(self) -> ResumableRuns:
        """List every active run, whoever holds it: a pure read, also read-only.

        Read from one consistent snapshot. Each entry says which owner holds the
        run, whether that owner is alive, and how many times the run has been
        taken over from an owner that died. To take runs and resume them, a
        daemon calls ``claim_resumable_runs()`` instead. A run whose stored values
        break the store's rules (another tool edited them) is left out, so that
        one bad row hides nothing else, and its DamagedRecordError is in the
        result's ``damaged`` list; so is every run whose status is none of the
        five, which may have been active.

        Returns:
            Every pending or running run, ordered by id, with its units (ordered by
            ``unit_id``), its next event sequence and its ownership; ``.damaged``
            lists the runs that could not be read or whose status is unknown.

        Raises:
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        found, damaged = await self._read(self._queries.resumable())
        return ResumableRuns(found, (row.error(self._path) for row in damaged))

    async def claim_resumable_runs(self, *, max_attempts: int | None = 3) -> ClaimedRuns:
        """Take every active run that no live owner holds, to resume it: start-up.

        In one write transaction: a run released by a clean close (or never held)
        is taken as it is; a run whose owner died holding it (its lease expired,
        or, on this machine, its process is gone) is taken over, and that counts
        an attempt. A run whose takeover would exceed ``max_attempts`` is not
        resumed: it is finished ``failed``, with an error that says so and a
        ``run_abandoned`` event, so that a run whose resumption kills the daemon
        does not crash-loop it. Daemons claiming at the same moment, in this
        process or others, take disjoint sets.

        Args:
            max_attempts: Takeovers allowed per run; None for no cap.

        Returns:
            ``.resumed``: the runs taken, with their units, next sequence and
            ``attempt``; ``.abandoned``: the runs given up; ``.damaged``: runs that
            could not be read or whose status is unknown (left as they are).

        Raises:
            InvalidRecordError: ``max_attempts`` is not None or an int >= 0.
            ReadOnlyError: The DB was opened read-only.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        if max_attempts is not None:
            max_attempts = check.count("max_attempts", max_attempts, minimum=0)
        claiming = asyncio.ensure_future(
            self._write(self._queries.claim(owner=self._owner, max_attempts=max_attempts))
        )
        try:
            resumed, abandoned, damaged = await asyncio.shield(claiming)
        except asyncio.CancelledError:
            await self._hand_back(claiming)
            raise
        return ClaimedRuns(
            resumed=resumed,
            abandoned=abandoned,
            damaged=[row.error(self._path) for row in damaged],
        )

    async def _hand_back(self, claiming: asyncio.Future[Claimed]) -> None:
        """Release what a claim took after its caller was cancelled (a timeout, say).

        The claim goes on to its commit; its caller will never learn which runs it
        took, and they would stay held by this live DB with nobody working them.
        A takeover it counted stays counted.
        """
        await wait_out(claiming)
        if claiming.cancelled() or claiming.exception() is not None:
            return
        taken = [item.run.id for item in claiming.result()[0]]
        if taken:
            releasing = asyncio.ensure_future(
                self._write(self._queries.release_runs(run_ids=taken, owner=self._owner))
            )
            await wait_out(releasing)

    async def release_run(self, run_id: str) -> str | None:
        """Hand a run back, whoever holds it, so that the next claim takes it.

        For an operator whose daemon is stuck (alive, so its runs are not taken
        over). Not counted as an attempt. The owner that held it is not told.

        Args:
            run_id: The run's id.

        Returns:
            The name of the owner that held the run, or None if nobody did.

        Raises:
            RunNotFoundError: There is no run with this id.
            ReadOnlyError: The DB was opened read-only.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        run_id = check.name("run_id", run_id)
        return await self._write(self._queries.release_run(run_id=run_id))

    async def holds(self, run_id: str) -> bool:
        """Whether this DB holds the run: nobody has taken it since this DB took it.

        A DB takes a run by creating it, claiming it, or making it active again.
        A daemon that stalls past its lease (a hung loop, a suspended machine)
        may find its runs claimed and resumed by another, and its own writes to
        them are not refused: a lease is not a fence. Asked inside the
        transaction block that records a unit's work, the answer holds until
        the block commits: no claim or release takes the run in between (a
        SQLite block holds the write lock; on PostgreSQL the run's row stays
        locked, and other blocks asking of the same run wait their turn).
        Outside a block, it may change as soon as it is given.

        Args:
            run_id: The run's id.

        Returns:
            True if this DB holds the run; False if another owner does, or
            nobody (a finished run, one handed back by ``release_run()``), if
            there is no such run, and always on a read-only DB.

        Raises:
            InvalidRecordError: ``run_id`` is not a valid id.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        run_id = check.name("run_id", run_id)
        lock = self._in_write_block()
        return await self._read(self._queries.holds(run_id=run_id, owner=self._owner, lock=lock))

    # Streaming: a page at a time, never the whole listing

    def iter_runs(
        self,
        *,
        status: RunStatus | str | Iterable[RunStatus | str] | None = None,
        feature_branch: str | None = None,
        repo_path: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        newest_first: bool = False,
    ) -> AsyncIterator[Run]:
        """Iterate over the runs matching every filter given, a page at a time.

        Use it as ``async for run in db.iter_runs(...):``. It takes the filters of
        ``list_runs`` and yields the same runs in the same order, but holds only
        one page (a few hundred runs) at a time, however many match: memory
        stays flat and the event loop runs between pages. Each page is read
        on its own, so runs created or deleted meanwhile may or may not appear.

        Args:
            status: One status, or several (any of them matches); None: any status.
            feature_branch: Only runs of this feature branch (exact match).
            repo_path: Only runs of this repository (exact match).
            limit: At most this many runs (>= 0); None: no limit.
            after: Only runs after this run id, in the chosen order.
            newest_first: Order by id newest first instead of oldest first.

        Returns:
            An async iterator of the matching runs, ordered by id.

        Raises:
            InvalidRecordError: A filter has an invalid value (raised by the call
                itself).
            ClosedError: The DB is closed (raised by the next step).
            DamagedRecordError: A run's stored row is damaged (another tool
                wrote it); every run before it has been yielded.
            DatabaseError: The database failed.
        """
        return self._runs_stream(
            self._queries.list_runs_page,
            key=_run_id,
            status=status,
            feature_branch=feature_branch,
            repo_path=repo_path,
            limit=limit,
            after=after,
            newest_first=newest_first,
        )

    def _iter_owned_runs(
        self,
        *,
        status: RunStatus | str | Iterable[RunStatus | str] | None = None,
        feature_branch: str | None = None,
        repo_path: str | None = None,
        limit: int | None = None,
        after: str | None = None,
        newest_first: bool = False,
    ) -> AsyncIterator[tuple[Run, Held]]:
        """``iter_runs``, each run with who holds it (one statement a page): for the CLI."""
        return self._runs_stream(
            self._queries.owned_runs_page,
            key=_owned_run_id,
            status=status,
            feature_branch=feature_branch,
            repo_path=repo_path,
            limit=limit,
            after=after,
            newest_first=newest_first,
        )

    def _runs_stream(
        self,
        page: Callable[..., Work[list[R]]],
        *,
        key: Callable[[R], str],
        status: RunStatus | str | Iterable[RunStatus | str] | None,
        feature_branch: str | None,
        repo_path: str | None,
        limit: int | None,
        after: str | None,
        newest_first: bool,
    ) -> AsyncIterator[R]:
        statuses = _statuses(status)
        query = partial(
            page,
            statuses=statuses,
            feature_branch=check.optional_name("feature_branch", feature_branch),
            repo_path=check.optional_name("repo_path", repo_path),
            newest_first=_flag("newest_first", newest_first),
        )
        if limit is not None:
            limit = check.count("limit", limit, minimum=0)
        after = check.optional_name("after", after)
        if statuses is not None and not statuses:
            limit = 0
        return self._stream(
            lambda last, size: query(after=last, limit=size),
            start=after,
            key=key,
            limit=limit,
        )

    def iter_events(self, run_id: str, since: int = 0) -> AsyncIterator[EventRecord]:
        """Iterate over a run's events after a sequence, a page at a time.

        Use it as ``async for event in db.iter_events(run_id):``. It yields what
        ``list_events_since(run_id, since)`` returns, in order, holding one page
        (a few hundred events) at a time: a log of millions of events streams in
        flat memory while the event loop runs. It ends at the last event there
        is when it gets there; ``follow_events`` waits for more.

        Args:
            run_id: The run's id.
            since: Start after this sequence (>= 0; 0: from the first event).

        Returns:
            An async iterator of the run's events by sequence; empty if the run
            does not exist.

        Raises:
            InvalidRecordError: A value is invalid (raised by the call itself).
            ClosedError: The DB is closed (raised by the next step).
            DamagedRecordError: An event's stored row is damaged (another tool
                wrote it); every event before it has been yielded.
            DatabaseError: The database failed.
        """
        run_id = check.name("run_id", run_id)
        since = check.count("since", since, minimum=0)
        return self._stream(
            lambda last, size: self._queries.list_events_page(
                run_id=run_id, after=last, limit=size
            ),
            start=since,
            key=lambda event: event.sequence,
        )

    async def _stream(
        self,
        page: Callable[[Any, int], Work[list[R]]],
        *,
        start: K,
        key: Callable[[R], K],
        limit: int | None = None,
    ) -> AsyncIterator[R]:
        """Yield a keyset-paged listing, holding one page at a time, up to ``limit`` rows.

        A page holding a damaged row is read again a row at a time, so that
        every row before the damaged one is yielded before its error is raised.
        """
        after, left, most = start, limit, ITER_PAGE_SIZE
        while left is None or left > 0:
            size = most if left is None else min(most, left)
            try:
                batch = await self._read(page(after, size))
            except DamagedRecordError:
                if size == 1:
                    raise
                most = 1
                continue
            for row in batch:
                # The rest of a page read before close() is not handed out after it.
                self._check_open()
                yield row
            if len(batch) < size:
                return
            after = key(batch[-1])
            if left is not None:
                left -= len(batch)
            del batch  # only this page is held, and not while the next one is read

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
        Should that row be damaged, the page is read again without it: a row
        past ``limit`` must not fail the listing.
        """
        rows: list[R] = []
        after = start
        while limit is None or len(rows) < limit:
            size = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit - len(rows))
            try:
                batch = await self._read(page(after, size + 1))
            except DamagedRecordError:
                batch = await self._read(page(after, size))
                rows.extend(batch)
                if len(batch) < size:
                    break
                after = key(batch[-1])
                continue
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


def _run_id(run: Run) -> str:
    return run.id


def _owned_run_id(owned: tuple[Run, Held]) -> str:
    return owned[0].id


def _flag(field: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidRecordError(field, value, f"must be a bool, not {type(value).__name__}")
    return value
