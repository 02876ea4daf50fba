"""The error tree: everything daemon_db raises derives from DaemonDBError.

Raw ``sqlite3`` exceptions are translated once, at the storage boundary
(:func:`translate`), and never reach a caller.
"""

from __future__ import annotations

import reprlib
import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

__all__ = [
    "ClosedError",
    "DaemonDBError",
    "DamagedRecordError",
    "DatabaseError",
    "InvalidRecordError",
    "ReadOnlyError",
    "RunExistsError",
    "RunNotFoundError",
    "SchemaVersionError",
    "StatusConflictError",
    "UnitExistsError",
    "UnitNotFoundError",
]

_SHOWN_CHARS = 80


class _Summary(reprlib.Repr):
    """``repr`` with every part bounded: depth, items, characters, and digits."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 4
        self.maxstring = self.maxother = _SHOWN_CHARS

    def repr_str(self, x: str, level: int) -> str:
        # The start of a long string says more than its start and end together.
        return repr(x) if len(x) <= self.maxstring else f"{x[: self.maxstring]!r}..."

    def repr_int(self, x: int, level: int) -> str:
        # repr() of an int past sys.get_int_max_str_digits() raises ValueError.
        if x.bit_length() > 200:
            return f"<int of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_summary = _Summary()


def show(value: object) -> str:
    """A short, readable ``repr(value)`` that never fails, whatever the value.

    Error messages are built from values a caller passed, which may be huge,
    nested a thousand deep, or have a ``__repr__`` that raises.
    """
    try:
        text = _summary.repr(value)
    except Exception:
        text = f"<{type(value).__name__} object>"
    if isinstance(value, str) and len(value) > _SHOWN_CHARS:
        text += f" ({len(value)} characters)"
    if len(text) <= 2 * _SHOWN_CHARS:
        return text
    return f"{text[:_SHOWN_CHARS]}... ({len(text)} characters shown of it)"


class DaemonDBError(Exception):
    """daemon_db could not do what was asked."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.__doc__)

    def __reduce__(self) -> tuple[Any, ...]:
        # Each subclass's __init__ takes its own fields, not the message that
        # pickle would pass back: rebuild from the message and the attributes,
        # so that an error crosses to another process (multiprocessing) intact.
        return (_restore, (type(self), self.args, self.__dict__))


def _restore(cls: type[DaemonDBError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


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

    def __init__(
        self,
        feature_branch: str | None,
        repo_path: str,
        existing_run_id: str,
        *,
        same_id: bool = False,
    ) -> None:
        self.feature_branch = feature_branch
        self.repo_path = repo_path
        self.existing_run_id = existing_run_id
        if same_id:
            what = f"a run with id {existing_run_id!r} already exists"
        else:
            what = f"run {existing_run_id!r} is already active"
        super().__init__(f"{what} (branch {feature_branch!r} in repo {repo_path!r})")


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
    """No unit has this record id. Also a LookupError.

    ``record_ids`` names (the first few of) the ``total`` units whose own
    ``unit_id`` is the id given: what a caller who passed a unit_id where a
    record id was expected meant.

    Attributes:
        unit_record_id: The id asked for.
        record_ids: Record ids of units whose ``unit_id`` is the id asked for.
    """

    def __init__(self, unit_record_id: str, record_ids: Sequence[str] = (), total: int = 0) -> None:
        self.unit_record_id = unit_record_id
        self.record_ids = tuple(record_ids)
        total = max(total, len(self.record_ids))
        message = f"no unit with record id {show(unit_record_id)}"
        if total == 1:
            message += f": that is a unit_id; its unit's record id is {show(record_ids[0])}"
        elif total > 1:
            named = ", ".join(show(record_id) for record_id in record_ids)
            more = f" and {total - len(record_ids)} more" if total > len(record_ids) else ""
            message += f": that is the unit_id of {total} units, record ids {named}{more}"
        else:
            message += " (a record id is '<run_id>_<unit_id>', see make_unit_record_id)"
        super().__init__(message)


class StatusConflictError(DaemonDBError):
    """A compare-and-set found another status than expected: nothing was changed.

    Also raised by ``complete_run`` for a run already finished with another
    status.

    Attributes:
        record_id: The run's id, or the unit's record id.
        current: The status found.
        expected: The statuses that were expected.
    """

    def __init__(self, record_id: str, current: str, expected: Collection[str]) -> None:
        self.record_id = record_id
        self.current = current
        self.expected = frozenset(expected)
        wanted = " or ".join(sorted(str(status) for status in self.expected))
        super().__init__(f"{show(record_id)} is {current}, not {wanted}: nothing was changed")


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


class DamagedRecordError(DatabaseError):
    """A stored row breaks the store's rules: another tool may have edited the file.

    Attributes:
        path: The database file.
        table: ``"runs"``, ``"units"`` or ``"events"``.
        record_id: The row's id.
        column: The column whose value is damaged.
        value: The value found there: its bytes, for text that is not UTF-8
            (SQLite stores text as it is given).
        reason: What is wrong with it.
    """

    def __init__(
        self, path: str, table: str, record_id: object, column: str, value: object, reason: str
    ) -> None:
        self.table = table
        self.record_id = record_id
        self.column = column
        self.value = value
        where = f"{table} row {show(record_id)}"
        super().__init__(path, f"damaged {where}: {column}={show(value)} {reason}")


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
    "SQLITE_NOTADB": "not a daemon_db database: not an SQLite file",
    "SQLITE_READONLY_ROLLBACK": (
        "its -journal holds a write a killed process left half done, which only a"
        " read-write open rolls back (daemon-db migrate does, or the daemon)"
    ),
}


def translate(exc: sqlite3.Error, path: str) -> DatabaseError:
    """Turn a raw sqlite3 error into the DatabaseError a caller sees."""
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    return DatabaseError(path, f"{_EXPLAINED.get(name, exc)} ({name})")


class DamagedRow(Exception):
    """A row that cannot be a record, found while mapping it (either engine).

    Raised where the path is not known; ``error(path)`` is what the caller sees.
    """

    def __init__(self, table: str, record_id: object, column: str, value: object, reason: str):
        super().__init__(table, record_id, column, value, reason)
        self.table, self.record_id, self.column = table, record_id, column
        self.value, self.reason = value, reason

    def error(self, path: str) -> DamagedRecordError:
        return DamagedRecordError(
            path, self.table, self.record_id, self.column, self.value, self.reason
        )


def damage_in(rows: Iterable[Any], read: Callable[[Any], object]) -> list[DamagedRow]:
    """What ``read`` finds wrong with each of ``rows`` (the rows it reads are left out)."""
    found: list[DamagedRow] = []
    for row in rows:
        try:
            read(row)
        except DamagedRow as exc:
            found.append(exc)
    return found


def schema_changed(path: str, problems: Sequence[str]) -> DatabaseError:
    """Why a read-write open refuses a schema another tool changed (``problems``: what)."""
    # check() reports these too, but a daemon would write for days before
    # anyone ran it; an append a foreign trigger drops is acknowledged and lost.
    reason = (
        "another tool changed daemon_db's schema, so writes could be lost or a rule go"
        f" unenforced: {'; '.join(problems)}. Undo the change (`daemon-db check` lists"
        " each one); it can still be opened read-only"
    )
    return DatabaseError(path, reason)
