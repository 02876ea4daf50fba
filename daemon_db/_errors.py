"""The error tree: everything daemon_db raises derives from DaemonDBError.

Raw ``sqlite3`` exceptions are translated once, at the storage boundary
(:func:`translate`), and never reach a caller.
"""

from __future__ import annotations

import sqlite3

__all__ = [
    "ClosedError",
    "DaemonDBError",
    "DatabaseError",
    "InvalidRecordError",
    "ReadOnlyError",
    "RunExistsError",
    "RunNotFoundError",
    "SchemaVersionError",
    "UnitExistsError",
    "UnitNotFoundError",
]

_SHOWN_CHARS = 80


def show(value: object) -> str:
    """Return ``repr(value)``, shortened so that a huge value keeps a message readable."""
    text = repr(value)
    if len(text) <= _SHOWN_CHARS:
        return text
    return f"{text[:_SHOWN_CHARS]}... ({len(text)} characters)"


class DaemonDBError(Exception):
    """daemon_db could not do what was asked."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)


class InvalidRecordError(DaemonDBError, ValueError):
    """A value was refused before anything was written. Also a ValueError.

    Attributes:
        field: The argument or record field, such as ``"Run.parallelism"``.
        value: The value refused.
    """

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        super().__init__(f"{field}={show(value)}: {reason}")


class RunExistsError(DaemonDBError):
    """A run with this id exists, or another run of this branch and repo is active.

    Attributes:
        feature_branch: The branch of the run in the way.
        repo_path: The repository of the run in the way.
        existing_run_id: The id of the run in the way.
    """

    def __init__(self, feature_branch: str, repo_path: str, existing_run_id: str) -> None:
        self.feature_branch = feature_branch
        self.repo_path = repo_path
        self.existing_run_id = existing_run_id
        super().__init__(
            f"run {existing_run_id!r} already exists for branch {feature_branch!r} "
            f"in repo {repo_path!r}"
        )


class RunNotFoundError(DaemonDBError, LookupError):
    """No run has this id. Also a LookupError.

    Attributes:
        run_id: The id asked for.
    """

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no run with id {show(run_id)}")


class UnitExistsError(DaemonDBError):
    """A unit with this id, or with this run and unit id, exists already.

    Attributes:
        unit_record_id: The id of the unit in the way.
        run_id: Its run's id.
        unit_id: Its id within the run.
    """

    def __init__(self, unit_record_id: str, run_id: str, unit_id: str) -> None:
        self.unit_record_id = unit_record_id
        self.run_id = run_id
        self.unit_id = unit_id
        super().__init__(
            f"unit {unit_record_id!r} already exists (run {run_id!r}, unit {unit_id!r})"
        )


class UnitNotFoundError(DaemonDBError, LookupError):
    """No unit has this id. Also a LookupError.

    Attributes:
        unit_record_id: The id asked for.
    """

    def __init__(self, unit_record_id: str) -> None:
        self.unit_record_id = unit_record_id
        super().__init__(f"no unit with id {show(unit_record_id)}")


class DatabaseError(DaemonDBError):
    """The database file cannot be used: not SQLite, another application's, or failing.

    Every SQLite error that has no more precise meaning becomes this, so raw
    ``sqlite3`` exceptions never reach a caller.

    Attributes:
        path: The database (or backup destination) the error is about.
        reason: What went wrong, with SQLite's error name where there is one.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class SchemaVersionError(DaemonDBError):
    """The file's schema version is not the one this release works with.

    A newer file is refused whatever the mode; an older one is migrated when
    opened read-write, and refused read-only.

    Attributes:
        path: The database file.
        found: The file's schema version.
        supported: The version this release reads and writes.
    """

    def __init__(self, path: str, found: int, supported: int, reason: str) -> None:
        self.path = path
        self.found = found
        self.supported = supported
        super().__init__(f"{path}: schema version {found}, {reason} (this release: {supported})")


class ReadOnlyError(DaemonDBError):
    """The database was opened read-only; writes are refused.

    Attributes:
        path: The database file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path} is open read-only: writes are refused")


class ClosedError(DaemonDBError):
    """The database has been closed.

    Attributes:
        path: The database file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path} is closed")


_EXPLAINED = {
    "SQLITE_READONLY_DIRECTORY": (
        "the folder cannot be written, and SQLite must create the -wal and -shm files there"
    ),
}


def translate(exc: sqlite3.Error, path: str) -> DatabaseError:
    """Turn a raw sqlite3 error into the DatabaseError a caller sees."""
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    return DatabaseError(path, f"{_EXPLAINED.get(name, exc)} ({name})")
