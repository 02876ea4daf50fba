"""The records: frozen values that validate themselves when constructed."""

from __future__ import annotations

import enum
import sys
import sysconfig
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import attrgetter
from typing import Any, Final, TypeVar

from . import _validation as check
from ._errors import DamagedRecordError, InvalidRecordError
from ._ids import new_run_id

__all__ = [
    "ACTIVE_RUN_STATUSES",
    "FINISHED_RUN_STATUSES",
    "FINISHED_UNIT_STATUSES",
    "ClaimedRuns",
    "EventRecord",
    "PrunedRuns",
    "ResumableRun",
    "ResumableRuns",
    "Run",
    "RunStatus",
    "Stats",
    "UnitRecord",
    "UnitStatus",
    "loader",
    "make_unit_record_id",
    "unchecked_replace",
]


class RunStatus(enum.StrEnum):
    """Where a run is in its life.

    Pending and running runs are active (at most one per branch and repo, and
    resumed after a restart); completed, failed and cancelled runs are finished.
    A StrEnum: each member equals its string value.
    """

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class UnitStatus(enum.StrEnum):
    """Where a unit of work is in its life (a scheduler's ready and blocked included)."""

    PENDING = "pending"
    READY = "ready"
    BLOCKED = "blocked"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_RUN_STATUSES: Final = frozenset({RunStatus.PENDING, RunStatus.RUNNING})
FINISHED_RUN_STATUSES: Final = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}
)
FINISHED_UNIT_STATUSES: Final = frozenset(
    {UnitStatus.COMPLETED, UnitStatus.FAILED, UnitStatus.CANCELLED}
)


def make_unit_record_id(run_id: str, unit_id: str) -> str:
    """Make the id a unit record gets by default.

    Args:
        run_id: The run's id.
        unit_id: The unit's id within its run.

    Returns:
        ``"<run_id>_<unit_id>"``.

    Raises:
        InvalidRecordError: ``run_id`` or ``unit_id`` is not a valid id.
    """
    return f"{check.name('run_id', run_id)}_{check.name('unit_id', unit_id)}"


class _DerivedId(str):
    """Marks a UnitRecord id left to default; it is replaced in ``__post_init__``."""


_UNIT_ID_FROM_RUN_AND_UNIT: Final = _DerivedId("<run_id>_<unit_id>")


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """A workflow on a git feature branch: a frozen record, checked when constructed.

    Every field is keyword-only. ``status`` accepts a RunStatus or its string
    value and always holds the member; timestamps must be timezone-aware and are
    kept in UTC (an aware datetime in another zone is converted).

    Attributes:
        id: A ULID; by default a fresh ``new_run_id()``.
        feature_branch: The git branch the run works on; None for a run without one
            (a job on the target branch itself, a container job).
        repo_path: The repository the branch is in.
        target_branch: The branch the work is merged into.
        tasks_dir: Where the run's tasks are.
        parallelism: How many units may run at once (an int >= 1); None for the
            daemon's default.
        status: Where the run is in its life; ``pending`` by default.
        daemon_version: The version of the daemon that made the run.
        started_at: When the run first entered ``running``.
        completed_at: When the run entered a finished status; None while active.
        error: Why the run failed, or None.
        config_json: The text of a JSON object (``"{}"`` by default), at most 1 MiB.

    Raises:
        InvalidRecordError: A field has an invalid value (naming the field and value).
    """

    id: str = field(default_factory=new_run_id)
    feature_branch: str | None
    repo_path: str
    target_branch: str
    tasks_dir: str
    parallelism: int | None
    status: RunStatus = RunStatus.PENDING
    daemon_version: str = ""
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error: str | None = None
    config_json: str = "{}"

    def __post_init__(self) -> None:
        check.name("Run.id", self.id)
        check.optional_name(
            "Run.feature_branch", self.feature_branch, none_means="a run without a branch"
        )
        check.name("Run.repo_path", self.repo_path)
        check.name("Run.target_branch", self.target_branch)
        check.name("Run.tasks_dir", self.tasks_dir)
        check.optional_count(
            "Run.parallelism", self.parallelism, minimum=1, none_means="the daemon's default"
        )
        check.text("Run.daemon_version", self.daemon_version)
        check.optional_text("Run.error", self.error)
        check.config_json("Run.config_json", self.config_json)
        _run_texts(self)
        _normalise(self, "status", check.member("Run.status", self.status, RunStatus))
        _normalise(self, "started_at", check.timestamp("Run.started_at", self.started_at))
        _normalise(self, "completed_at", check.timestamp("Run.completed_at", self.completed_at))
        _unfinished_has_no_end("Run", self.status, self.completed_at, FINISHED_RUN_STATUSES)


def _unfinished_has_no_end(
    kind: str, status: object, completed_at: object, finished: frozenset[Any]
) -> None:
    # The store clears completed_at when a record leaves the finished statuses;
    # created with one, an active record kept it, a finish that never was.
    if completed_at is not None and status not in finished:
        raise InvalidRecordError(
            f"{kind}.completed_at", completed_at, f"must be None while the status is {status}"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitRecord:
    """One unit of work of a run: a frozen record, checked when constructed.

    Every field is keyword-only. Statuses and timestamps are as for Run.

    Attributes:
        id: The unit's id across all runs; by default
            ``make_unit_record_id(run_id, unit_id)``, ``"<run_id>_<unit_id>"``.
        run_id: The run the unit belongs to.
        unit_id: The unit's id within its run.
        status: Where the unit is in its life; ``pending`` by default.
        branch: The git branch the unit works on, once known.
        worktree_path: The worktree the unit works in, once known.
        started_at: When the unit first entered ``running``.
        completed_at: When the unit entered a finished status; None otherwise.
        error: Why the unit failed, or None.

    Raises:
        InvalidRecordError: A field has an invalid value (naming the field and value).
    """

    id: str = _UNIT_ID_FROM_RUN_AND_UNIT
    run_id: str
    unit_id: str
    status: UnitStatus = UnitStatus.PENDING
    branch: str | None = None
    worktree_path: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        check.name("UnitRecord.run_id", self.run_id)
        check.name("UnitRecord.unit_id", self.unit_id)
        if isinstance(self.id, _DerivedId):
            _normalise(self, "id", make_unit_record_id(self.run_id, self.unit_id))
        check.name("UnitRecord.id", self.id)
        check.optional_name("UnitRecord.branch", self.branch)
        check.optional_name("UnitRecord.worktree_path", self.worktree_path)
        check.optional_text("UnitRecord.error", self.error)
        _unit_texts(self)
        _normalise(self, "status", check.member("UnitRecord.status", self.status, UnitStatus))
        _normalise(self, "started_at", check.timestamp("UnitRecord.started_at", self.started_at))
        _normalise(
            self, "completed_at", check.timestamp("UnitRecord.completed_at", self.completed_at)
        )
        _unfinished_has_no_end("UnitRecord", self.status, self.completed_at, FINISHED_UNIT_STATUSES)


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRecord:
    """One entry of a run's event log, as ``append_event`` and the listings return it.

    Attributes:
        id: A global id, never reused.
        run_id: The run whose log holds the event.
        sequence: The event's place in its run's log: from 1, without gaps.
        event_type: What happened, such as ``"run_completed"``.
        unit_id: Free text naming a unit, or None.
        payload_json: The payload as compact JSON text, or None.
        created_at: When the event was appended (UTC).

    Raises:
        InvalidRecordError: A field has an invalid value (naming the field and value).
    """

    id: int
    run_id: str
    sequence: int
    event_type: str
    unit_id: str | None
    payload_json: str | None
    created_at: datetime

    def __post_init__(self) -> None:
        check.count("EventRecord.id", self.id, minimum=1)
        check.name("EventRecord.run_id", self.run_id)
        check.count("EventRecord.sequence", self.sequence, minimum=1)
        check.name("EventRecord.event_type", self.event_type)
        if self.unit_id is not None:
            check.text("EventRecord.unit_id", self.unit_id)
        if self.payload_json is not None:
            check.payload_json("EventRecord.payload_json", self.payload_json)
        _event_texts(self)
        created_at = check.timestamp("EventRecord.created_at", self.created_at)
        if created_at is None:
            raise InvalidRecordError("EventRecord.created_at", None, "is required")
        _normalise(self, "created_at", created_at)

    @property
    def payload(self) -> Any:
        """The payload decoded from ``payload_json``; None when the event has none.

        Returns:
            The decoded JSON value (a new object at each access).

        Raises:
            InvalidRecordError: ``payload_json`` is not JSON: another tool wrote
                it into the file (reads do not decode every payload; ``check()``
                finds them).
        """
        if self.payload_json is None:
            return None
        # Read long after the listing that made the record: say which event it is.
        where = f", in event {self.id} (run {self.run_id}, sequence {self.sequence})"
        return check.decoded("EventRecord.payload_json", self.payload_json, of=where)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumableRun:
    """An interrupted run as a daemon resumes it.

    From ``DB.claim_resumable_runs()`` (the runs this DB now holds) and
    ``DB.resumable_runs()`` (every active run, whoever holds it).

    Attributes:
        run: The run, pending or running.
        units: Its units, ordered by ``unit_id``, in every status.
        next_sequence: The sequence its next event will get.
        attempt: How many times the run has been taken over from an owner that
            died holding it (a run released by a clean close is not counted).
        owner: The name of the owner holding it, or None if nobody does.
        owner_alive: Whether that owner is alive: its lease runs, and on this
            machine its process too.
    """

    run: Run
    units: list[UnitRecord]
    next_sequence: int
    attempt: int = 0
    owner: str | None = None
    owner_alive: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.run, Run):
            raise InvalidRecordError("ResumableRun.run", self.run, "must be a Run")
        if not isinstance(self.units, list):
            raise InvalidRecordError("ResumableRun.units", self.units, "must be a list")
        for unit in self.units:
            if not isinstance(unit, UnitRecord) or unit.run_id != self.run.id:
                raise InvalidRecordError(
                    "ResumableRun.units", unit, f"must be a UnitRecord of run {self.run.id}"
                )
        check.count("ResumableRun.next_sequence", self.next_sequence, minimum=1)
        check.count("ResumableRun.attempt", self.attempt, minimum=0)
        check.optional_name("ResumableRun.owner", self.owner)
        if type(self.owner) not in (str, type(None)):
            _normalise(self, "owner", check.plain(self.owner))  # type: ignore[arg-type]
        if not isinstance(self.owner_alive, bool):
            raise InvalidRecordError("ResumableRun.owner_alive", self.owner_alive, "must be a bool")


class ResumableRuns(list[ResumableRun]):
    """The runs ``resumable_runs()`` found healthy, with the damaged ones apart.

    A run whose row, or one of whose units' rows, breaks the store's rules
    (another tool edited the file) cannot be resumed safely; it is left out of
    the list, so that it does not stop every other run from resuming, and its
    error is in ``damaged``.

    Attributes:
        damaged: A DamagedRecordError for each active run that could not be
            read, and for each run whose status is none of the five.
    """

    __slots__ = ("damaged",)

    def __init__(
        self, runs: Iterable[ResumableRun] = (), damaged: Iterable[DamagedRecordError] = ()
    ) -> None:
        super().__init__(runs)
        self.damaged: list[DamagedRecordError] = list(damaged)


class PrunedRuns(list[Run]):
    """The runs ``prune_runs()`` removed (or would), with the damaged ones apart.

    A finished run whose row breaks the store's rules (another tool edited the
    file) cannot be returned as a ``Run``. A prune leaves it where it is, so
    that nothing is deleted unseen and one such row does not stop every prune;
    its error is in ``damaged``, and the next prune finds it again until it is
    mended or deleted.

    Attributes:
        damaged: A DamagedRecordError for each run the prune would have
            removed but could not read.
    """

    __slots__ = ("damaged",)

    def __init__(
        self, runs: Iterable[Run] = (), damaged: Iterable[DamagedRecordError] = ()
    ) -> None:
        super().__init__(runs)
        self.damaged: list[DamagedRecordError] = list(damaged)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedRuns:
    """What ``DB.claim_resumable_runs()`` took: the runs to resume, and those given up.

    Attributes:
        resumed: The runs this DB now holds, to resume, ordered by id.
        abandoned: The runs whose takeover would have exceeded ``max_attempts``:
            finished ``failed``, with a ``run_abandoned`` event.
        damaged: A DamagedRecordError for each run that could not be read, or
            whose status is none of the five (not taken: see ``DB.check()``).
    """

    resumed: list[ResumableRun]
    abandoned: list[Run]
    damaged: list[DamagedRecordError]


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """What a database holds, and how big its files are, from ``DB.stats()``.

    Attributes:
        path: The path the database was opened with.
        schema_version: The file's schema version.
        runs: The number of runs in each status, keyed by status value.
        units: The number of units in each status, keyed by status value.
        events: The number of events.
        file_bytes: The size of the database file (0 for ``":memory:"``).
        wal_bytes: The size of its write-ahead log (``-wal`` file).
    """

    path: str
    schema_version: int
    runs: dict[str, int]
    units: dict[str, int]
    events: int
    file_bytes: int
    wal_bytes: int


def _normalise(record: object, name: str, value: object) -> None:
    # The records are frozen; __post_init__ is the one place that may set a field.
    object.__setattr__(record, name, value)


def _plain_texts(*names: str) -> Callable[[object], None]:
    """A step of ``__post_init__``: text given as a str subclass (a StrEnum member) kept
    as a plain str, so that a record a write returns is the record a read gives."""
    read = attrgetter(*names)

    def plain_texts(record: object) -> None:
        for value in read(record):  # the usual case: all plain, nothing to set
            if value is not None and type(value) is not str:
                break
        else:
            return
        for name, value in zip(names, read(record), strict=True):
            if value is not None:
                _normalise(record, name, check.plain(value))

    return plain_texts


_run_texts = _plain_texts(
    "id",
    "feature_branch",
    "repo_path",
    "target_branch",
    "tasks_dir",
    "daemon_version",
    "error",
    "config_json",
)
_unit_texts = _plain_texts("run_id", "unit_id", "id", "branch", "worktree_path", "error")
_event_texts = _plain_texts("run_id", "event_type", "unit_id", "payload_json")


R = TypeVar("R")


_TWINS: Final = sys.implementation.name == "cpython" and not sysconfig.get_config_var(
    "Py_GIL_DISABLED"
)
"""Whether ``loader`` may make records through a twin class: on CPython with its
GIL. PyPy has refused ``__class__`` assignment between such classes, and a
free-threaded CPython stops every thread for one."""


def loader(cls: type[R], *, twin: bool = _TWINS) -> Callable[..., R]:
    """A constructor for ``cls`` taking its field values in order, without validation.

    Only for rows read back from our own database, whose values were checked on
    the way in; a listing maps 100,000 rows, so this is most of its work. The
    record is made as an instance of a plain class with the same slots, whose
    attributes Python stores directly, and then given its own class, which
    CPython allows between classes of one layout. Setting a frozen record's
    slots instead takes a descriptor call each: twice the time for a unit. That
    is the way without ``twin``.
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    lines = [f"def load({', '.join(names)}):"]
    if twin:
        namespace["unfrozen"] = type(f"Unfrozen{cls.__name__}", (), {"__slots__": tuple(names)})
        lines.append("    record = new(unfrozen)")
        lines += [f"    record.{name} = {name}" for name in names]
        lines.append("    record.__class__ = cls")
    else:
        namespace.update({f"set_{name}": getattr(cls, name).__set__ for name in names})
        lines.append("    record = new(cls)")
        lines += [f"    set_{name}(record, {name})" for name in names]
    lines.append("    return record")
    exec("\n".join(lines), namespace)
    load: Callable[..., R] = namespace["load"]
    return load


def unchecked_replace(record: R, **changes: Any) -> R:
    """``dataclasses.replace`` without validation: for a record the engine changes.

    A write returns the record it was given with new timestamps or status, values
    the store computed; ``replace`` would check every field of it again, which
    was a tenth of a write's whole cost.
    """
    copy = object.__new__(type(record))
    for name in type(record).__dataclass_fields__:  # type: ignore[attr-defined]
        object.__setattr__(copy, name, changes[name] if name in changes else getattr(record, name))
    return copy
