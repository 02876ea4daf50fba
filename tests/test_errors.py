"""The error tree: one base, the standard bases the API promises, messages that name things."""

from __future__ import annotations

import pickle
import sqlite3

import pytest

import daemon_db
from daemon_db import (
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
from daemon_db._errors import translate

ERRORS = [
    RunExistsError("feature/x", "/srv/app", "01RUN"),
    UnitExistsError("01RUN_u", "01RUN", "u"),
    RunNotFoundError("01RUN"),
    UnitNotFoundError("01RUN_u"),
    UnitNotFoundError("u", ["01RUN_u", "01RUO_u"], 3),
    InvalidRecordError("run_id", "", "must not be empty or blank"),
    SchemaVersionError("/data/state.db", 9, 2, "written by a newer release"),
    DatabaseError("/data/state.db", "not a daemon_db database"),
    ReadOnlyError("/data/state.db"),
    ClosedError("/data/state.db"),
]
EVERY_KIND = [
    *ERRORS,
    StatusConflictError("01RUN", "completed", {"running"}),
    DamagedRecordError("/data/state.db", "runs", "01RUN", "started_at", "noon", "is not a time"),
    DaemonDBError(),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: type(error).__name__)
def test_every_error_is_a_daemon_db_error_that_names_what_it_is_about(
    error: DaemonDBError,
) -> None:
    assert isinstance(error, DaemonDBError)
    named = [
        str(each)
        for k, v in vars(error).items()
        if k not in {"value", "reason", "found"}
        for each in (v if isinstance(v, tuple) else [v])
    ]
    assert named
    assert all(value in str(error) for value in named)


@pytest.mark.parametrize("error", EVERY_KIND, ids=lambda error: type(error).__name__)
def test_every_error_crosses_to_another_process_intact(error: DaemonDBError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error)


def test_the_standard_bases() -> None:
    assert issubclass(RunNotFoundError, LookupError)
    assert issubclass(UnitNotFoundError, LookupError)
    assert issubclass(InvalidRecordError, ValueError)


def test_the_base_error_has_a_default_message() -> None:
    assert str(DaemonDBError()) == "daemon_db could not do what was asked."


def test_sqlite_errors_become_database_errors_naming_the_path() -> None:
    error = translate(sqlite3.OperationalError("database is locked"), "/data/state.db")
    assert isinstance(error, DatabaseError)
    assert error.path == "/data/state.db"
    assert "database is locked" in str(error)


def test_the_public_surface() -> None:
    for name in [
        "DB",
        "Run",
        "RunStatus",
        "UnitRecord",
        "UnitStatus",
        "EventRecord",
        "ResumableRun",
        "new_run_id",
        "make_unit_record_id",
        "DaemonDBError",
        "RunExistsError",
        "UnitExistsError",
        "RunNotFoundError",
        "UnitNotFoundError",
        "InvalidRecordError",
        "SchemaVersionError",
        "DatabaseError",
        "ReadOnlyError",
        "ClosedError",
    ]:
        assert name in daemon_db.__all__
        assert getattr(daemon_db, name) is not None
