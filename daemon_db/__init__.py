"""daemon_db: the async SQLite state store of a long-running orchestration daemon.

Runs (a workflow on a git feature branch), their units of work, and an event
log per run, kept in one SQLite file and awaited from asyncio without blocking
the event loop. See ``DB.open``.
"""

from importlib import metadata as _metadata

from ._db import DB
from ._errors import (
    ClosedError,
    DaemonDBError,
    DamagedRecordError,
    DatabaseError,
    InvalidRecordError,
    ReadOnlyError,
    RunExistsError,
    RunNotFoundError,
    SchemaVersionError,
    StatusConflictError,
    UnitExistsError,
    UnitNotFoundError,
)
from ._ids import new_run_id
from ._records import (
    ClaimedRuns,
    EventRecord,
    PrunedRuns,
    ResumableRun,
    ResumableRuns,
    Run,
    RunStatus,
    Stats,
    UnitRecord,
    UnitStatus,
    make_unit_record_id,
)
from ._transaction import Transaction

__all__ = [
    "DB",
    "ClaimedRuns",
    "ClosedError",
    "DaemonDBError",
    "DamagedRecordError",
    "DatabaseError",
    "EventRecord",
    "InvalidRecordError",
    "PrunedRuns",
    "ReadOnlyError",
    "ResumableRun",
    "ResumableRuns",
    "Run",
    "RunExistsError",
    "RunNotFoundError",
    "RunStatus",
    "SchemaVersionError",
    "Stats",
    "StatusConflictError",
    "Transaction",
    "UnitExistsError",
    "UnitNotFoundError",
    "UnitRecord",
    "UnitStatus",
    "make_unit_record_id",
    "new_run_id",
]

# Public names say where they are imported from: help(daemon_db), reprs and
# tracebacks show daemon_db.RunNotFoundError, not the private module it is in.
for _public in __all__:
    globals()[_public].__module__ = __name__
del _public


def __getattr__(name: str) -> str:
    # Looked up on first use: reading the package metadata takes a few milliseconds.
    if name == "__version__":
        try:
            version = _metadata.version("daemon_db")
        except _metadata.PackageNotFoundError:  # a source tree that was never installed
            version = "0+unknown"
        globals()["__version__"] = version
        return version
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    # The API and nothing else: not the private modules imported above.
    return sorted([*__all__, "__version__"])
