"""The records: frozen values that validate themselves when constructed."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Final, TypeVar

from . import _validation as check
from ._errors import DamagedRecordError, InvalidRecordError
from ._ids import new_run_id

__all__ = [
    "ACTIVE_RUN_STATUSES",
    "FINISHED_RUN_STATUSES",
    "FINISHED_UNIT_STATUSES",
    "EventRecord",
    "ResumableRun",
    "ResumableRuns",
    "Run",
    "RunStatus",
    "Stats",
    "UnitRecord",
    "UnitStatus",
    "loader",
    "make_unit_record_id",
]


class RunStatus(enum.StrEnum):
    """Where a run is in its life: pending and running runs are active."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class UnitStatus(enum.StrEnum):
    """Where a unit of work is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


ACTIVE_RUN_STATUSES: Final = frozenset({RunStatus.PENDING, RunStatus.RUNNING})
FINISHED_RUN_STATUSES: Final = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}
)
FINISHED_UNIT_STATUSES: Final = frozenset({UnitStatus.COMPLETED, UnitStatus.FAILED})


def make_unit_record_id(run_id: str, unit_id: str) -> str:
    """The id a unit record gets by default: ``"<run_id>_<unit_id>"``."""
    return f"{check.name('run_id', run_id)}_{check.name('unit_id', unit_id)}"


class _DerivedId(str):
    """Marks a UnitRecord id left to default; it is replaced in ``__post_init__``."""


_UNIT_ID_FROM_RUN_AND_UNIT: Final = _DerivedId("<run_id>_<unit_id>")


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """A workflow on a git feature branch.

    ``status`` accepts a RunStatus or its string value; timestamps must be
    timezone-aware and are kept in UTC. Invalid values raise InvalidRecordError.
    """

    id: str = field(default_factory=new_run_id)
    feature_branch: str
    repo_path: str
    target_branch: str
    tasks_dir: str
    parallelism: int
    status: RunStatus = RunStatus.PENDING
    daemon_version: str = ""
    started_at: datetime | None = None
    completed_at: datetime | None = None
    error: str | None = None
    config_json: str = "{}"

    def __post_init__(self) -> None:
        check.name("Run.id", self.id)
        check.name("Run.feature_branch", self.feature_branch)
        check.name("Run.repo_path", self.repo_path)
        check.name("Run.target_branch", self.target_branch)
        check.name("Run.tasks_dir", self.tasks_dir)
        check.count("Run.parallelism", self.parallelism, minimum=1)
        check.text("Run.daemon_version", self.daemon_version)
        check.optional_text("Run.error", self.error)
        check.config_json("Run.config_json", self.config_json)
        _normalise(self, "status", check.member("Run.status", self.status, RunStatus))
        _normalise(self, "started_at", check.timestamp("Run.started_at", self.started_at))
        _normalise(self, "completed_at", check.timestamp("Run.completed_at", self.completed_at))


@dataclass(frozen=True, slots=True, kw_only=True)
class UnitRecord:
    """One unit of work of a run; ``id`` defaults to ``make_unit_record_id(run_id, unit_id)``."""

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
        _normalise(self, "status", check.member("UnitRecord.status", self.status, UnitStatus))
        _normalise(self, "started_at", check.timestamp("UnitRecord.started_at", self.started_at))
        _normalise(
            self, "completed_at", check.timestamp("UnitRecord.completed_at", self.completed_at)
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EventRecord:
    """One entry of a run's event log; ``sequence`` counts from 1 per run without gaps."""

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
            check.text(
                "EventRecord.payload_json", self.payload_json, max_chars=check.MAX_JSON_BYTES
            )
        created_at = check.timestamp("EventRecord.created_at", self.created_at)
        if created_at is None:
            raise InvalidRecordError("EventRecord.created_at", None, "is required")
        _normalise(self, "created_at", created_at)

    @property
    def payload(self) -> Any:
        """The payload decoded from ``payload_json``; None when the event has none."""
        return None if self.payload_json is None else json.loads(self.payload_json)


@dataclass(frozen=True, slots=True, kw_only=True)
class ResumableRun:
    """An interrupted run as a daemon resumes it: the run, its units, its next sequence."""

    run: Run
    units: list[UnitRecord]
    next_sequence: int


class ResumableRuns(list[ResumableRun]):
    """The runs ``resumable_runs()`` found healthy, with the damaged ones apart.

    A run whose row, or one of whose units' rows, breaks the store's rules
    (another tool edited the file) cannot be resumed safely; it is left out of
    the list, so that it does not stop every other run from resuming, and its
    error is in ``damaged``.
    """

    __slots__ = ("damaged",)

    def __init__(
        self, runs: Iterable[ResumableRun] = (), damaged: Iterable[DamagedRecordError] = ()
    ) -> None:
        super().__init__(runs)
        self.damaged: list[DamagedRecordError] = list(damaged)


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """What a database holds, and how big its files are."""

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


R = TypeVar("R")


def loader(cls: type[R]) -> Callable[..., R]:
    """A constructor for ``cls`` taking its field values in order, without validation.

    Only for rows read back from our own database, whose values were checked on
    the way in. It sets each slot directly, generated as straight-line code (as
    dataclasses generates ``__init__``): about a third of the cost of
    ``cls(...)``, which is most of the work when a listing maps 100,000 rows.
    """
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"new": object.__new__, "cls": cls}
    namespace.update({f"set_{name}": getattr(cls, name).__set__ for name in names})
    lines = [f"def load({', '.join(names)}):", "    record = new(cls)"]
    lines += [f"    set_{name}(record, {name})" for name in names]
    lines.append("    return record")
    exec("\n".join(lines), namespace)
    load: Callable[..., R] = namespace["load"]
    return load
