"""The file: migrations, version checks, refusing other files untouched, connection settings."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from daemon_db import DB, DatabaseError, RunStatus, SchemaVersionError, UnitRecord
from daemon_db._sqlite import bridge
from daemon_db._sqlite.schema import APPLICATION_ID, SCHEMA_VERSION, migrate
from tests.helpers import V1_ROWS, dump, make_version_1, new_run

# What these check is the SQLite engine's own (its file, writer, thread or
# limits); the PostgreSQL engine is checked by the contract tests and test_hosts.py.
pytestmark = pytest.mark.sqlite_only


def _schema(path: Path) -> list[tuple[str, str, str, str]]:
    """Every schema object, its SQL with whitespace collapsed (indentation is not schema)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
    return [(kind, name, table, " ".join((sql or "").split())) for kind, name, table, sql in rows]


def _header(path: Path) -> tuple[int, int]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return (
            conn.execute("PRAGMA application_id").fetchone()[0],
            conn.execute("PRAGMA user_version").fetchone()[0],
        )


async def test_a_new_file_gets_the_current_schema(db_path: Path) -> None:
    async with DB.open(db_path):
        pass
    assert _header(db_path) == (APPLICATION_ID, SCHEMA_VERSION)
    names = {row[1] for row in _schema(db_path)}
    assert {"runs", "units", "events", "runs_one_active", "runs_by_status"} <= names


async def test_a_version_1_file_migrates_with_its_data_intact(tmp_path: Path) -> None:
    old, fresh = tmp_path / "old.db", tmp_path / "fresh.db"
    make_version_1(old)
    async with DB.open(old) as db:
        run = await db.get_run("01J0000000000000000000000A")
        assert run is not None
        assert run.status is RunStatus.RUNNING
        assert run.config_json == '{"k":1}'
        assert run.started_at is not None
        assert run.started_at.microsecond == 123456
        unit = await db.get_unit("01J0000000000000000000000A_u1")
        assert unit == UnitRecord(
            run_id=run.id,
            unit_id="u1",
            status="running",  # type: ignore[arg-type]
            branch="daemon/u1",
            worktree_path="/wt/u1",
            started_at=unit.started_at if unit else None,
        )
        assert [e.payload for e in await db.list_events(run.id)] == [None, {"n": 1}]
        assert await db.get_next_sequence(run.id) == 3
        assert [r.run.id for r in await db.resumable_runs()] == [run.id]
        # The rules of the new version hold on the old data.
        assert await db.get_run_by_branch("feature/a", "/srv/app") == run
        assert await db.check() == []  # its schema is this version's, object by object
    async with DB.open(fresh):
        pass
    assert _header(old) == _header(fresh) == (APPLICATION_ID, SCHEMA_VERSION)
    assert _schema(old) == _schema(fresh)


async def test_a_migration_that_fails_is_rolled_back(tmp_path: Path) -> None:
    # Two active runs of one branch break the rule that version 2 makes a constraint.
    old = tmp_path / "old.db"
    clash = V1_ROWS.replace("'completed', '0.9.0'", "'pending', '0.9.0'")
    make_version_1(old, clash)
    before = dump(old)
    with pytest.raises(DatabaseError, match="migration 2") as raised:
        await DB.open(old)
    assert raised.value.path == str(old)
    # It said which columns; now it says which runs, and what to do.
    assert (
        "runs 01J0000000000000000000000A, 01J0000000000000000000000B are all active on branch"
        " 'feature/a' of '/srv/app', where one may be: finish or delete all but one"
    ) in raised.value.reason
    assert _header(old) == (APPLICATION_ID, 1)
    assert dump(old) == before


async def test_a_migration_names_rows_another_tool_left_referring_to_nothing(
    tmp_path: Path,
) -> None:
    # The sqlite3 shell deletes with foreign keys off: a deleted run's events
    # stay. It said only "a foreign key no longer holds".
    old = tmp_path / "old.db"
    make_version_1(old, V1_ROWS + "DELETE FROM units; DELETE FROM runs WHERE status = 'running';")
    before = dump(old)
    with pytest.raises(DatabaseError, match="migration 2") as raised:
        await DB.open(old)
    assert "2 row(s) refer to rows that are gone, the first events row 1 to a runs row" in (
        raised.value.reason
    )
    assert dump(old) == before


async def test_an_operator_s_view_on_the_tables_survives_their_rebuild(tmp_path: Path) -> None:
    # Migration 3 rebuilds runs: SQLite found the view naming the dropped table,
    # and the migration, and the daemon with it, stopped at version 2.
    old = tmp_path / "old.db"
    make_version_1(
        old, V1_ROWS + "CREATE VIEW active AS SELECT id FROM runs WHERE status = 'running';"
    )
    async with DB.open(old) as db:
        assert await db.check() == []
    assert _header(old) == (APPLICATION_ID, SCHEMA_VERSION)
    with contextlib.closing(sqlite3.connect(old)) as conn:
        assert conn.execute("SELECT id FROM active").fetchall() == [("01J0000000000000000000000A",)]


async def test_reopening_keeps_everything(db_path: Path) -> None:
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run(status="running", config_json='{"a": [1, 2]}'))
        await db.append_event(run.id, "tick", payload={"x": 1})
        events = await db.list_events(run.id)
    async with DB.open(db_path) as db:
        assert await db.get_run(run.id) == run  # timestamps equal to the microsecond
        assert await db.list_events(run.id) == events
        assert (await db.append_event(run.id, "again")).sequence == 2


# Newer, or set by another tool to what no release writes (a negative version
# ran the migrations from the list's end: "index already exists").
@pytest.mark.parametrize(
    ("version", "says"),
    [(SCHEMA_VERSION + 1, "newer release"), (0, "no release"), (-1, "no release")],
)
async def test_a_newer_schema_is_refused_and_left_untouched(
    db_path: Path, version: int, says: str
) -> None:
    async with DB.open(db_path) as db:
        await db.create_run(new_run())
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.execute(f"PRAGMA user_version = {version}")
    before = db_path.read_bytes()
    for readonly in (False, True):
        with pytest.raises(SchemaVersionError, match=says) as raised:
            await DB.open(db_path, readonly=readonly)
        assert raised.value.found == version
        assert raised.value.path == str(db_path)
        assert str(db_path) in str(raised.value)
    assert db_path.read_bytes() == before


async def test_a_file_that_is_not_sqlite_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"these are not the pages you are looking for\n" * 100)
    before = path.read_bytes()
    for readonly in (False, True):
        with pytest.raises(DatabaseError, match="not a daemon_db database") as raised:
            await DB.open(path, readonly=readonly)
        assert str(path) in str(raised.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    "setup",
    [
        "PRAGMA application_id = 1234; CREATE TABLE t (x)",
        "CREATE TABLE runs (id TEXT)",  # no application id, but not empty
        "PRAGMA user_version = 7",
    ],
)
async def test_another_applications_database_is_refused_untouched(
    tmp_path: Path, setup: str
) -> None:
    path = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.executescript(setup)
    before = path.read_bytes()
    for readonly in (False, True):
        with pytest.raises(DatabaseError, match="not a daemon_db database") as raised:
            await DB.open(path, readonly=readonly)
        assert raised.value.path == str(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


async def test_an_empty_file_becomes_a_database(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    async with DB.open(path) as db:
        await db.create_run(new_run())
    assert _header(path) == (APPLICATION_ID, SCHEMA_VERSION)


async def test_read_only_open_of_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "state.db"
    with pytest.raises(DatabaseError, match="no such database file") as raised:
        await DB.open(path, readonly=True)
    assert raised.value.path == str(path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("readonly", [False, True])
async def test_a_folder_is_refused_by_name(tmp_path: Path, readonly: bool) -> None:
    with pytest.raises(DatabaseError, match="is a folder, not a database file") as raised:
        await DB.open(tmp_path, readonly=readonly)
    assert raised.value.path == str(tmp_path)
    assert list(tmp_path.iterdir()) == []


async def test_read_only_open_of_memory_is_refused() -> None:
    with pytest.raises(DatabaseError):
        await DB.open(":memory:", readonly=True)


async def test_read_only_open_of_a_file_that_needs_migrating(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    make_version_1(old)
    before = dump(old)
    with pytest.raises(SchemaVersionError, match="needs migrating") as raised:
        await DB.open(old, readonly=True)
    assert (raised.value.found, raised.value.supported) == (1, SCHEMA_VERSION)
    assert dump(old) == before


async def test_missing_parent_folders_are_created(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "state.db"
    async with DB.open(path):
        pass
    assert path.is_file()


async def test_file_databases_run_in_wal_mode(db_path: Path) -> None:
    async with DB.open(db_path):
        pass
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def _pragma(name: str) -> object:
    return lambda conn: conn.execute(f"PRAGMA {name}").fetchone()[0]


@pytest.mark.parametrize("location", ["file", "memory"])
async def test_every_connection_has_foreign_keys_on(db_path: Path, location: str) -> None:
    async with DB.open(db_path if location == "file" else ":memory:") as db:
        connections = [c for c in (db._reader, db._writer and db._writer.connection) if c]
        assert len(connections) == (2 if location == "file" else 1)
        for connection in connections:
            assert await bridge.submit(connection, _pragma("foreign_keys")) == 1  # type: ignore[arg-type]
            assert await bridge.submit(connection, _pragma("trusted_schema")) == 0  # type: ignore[arg-type]
    if location == "memory":
        return
    async with DB.open(db_path, readonly=True) as inspector:
        assert inspector._reader is not None
        assert await bridge.submit(inspector._reader, _pragma("foreign_keys")) == 1  # type: ignore[arg-type]


async def test_synchronous_and_busy_timeout_are_applied(db_path: Path) -> None:
    async with DB.open(db_path, synchronous="full", busy_timeout=2.5) as db:
        assert db._writer is not None
        writer = db._writer.connection
        assert await bridge.submit(writer, _pragma("synchronous")) == 2  # type: ignore[arg-type]
        assert await bridge.submit(writer, _pragma("busy_timeout")) == 2500  # type: ignore[arg-type]


async def test_many_db_objects_can_open_a_new_file_at_once(db_path: Path) -> None:
    dbs = await asyncio.gather(*(DB.open(db_path) for _ in range(8)))
    try:
        await asyncio.gather(*(db.create_run(new_run()) for db in dbs))
        assert len(await dbs[0].list_runs()) == 8
    finally:
        await asyncio.gather(*(db.close() for db in dbs))
    assert _header(db_path) == (APPLICATION_ID, SCHEMA_VERSION)


def test_schema_version_matches_the_migrations() -> None:
    from daemon_db._sqlite.migrations import MIGRATIONS

    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert len(MIGRATIONS) == SCHEMA_VERSION


def test_os_level_open_flags_do_not_leak(db_path: Path) -> None:
    # Guard for the owner-only file creation: it must not depend on the umask.
    old = os.umask(0)
    try:
        asyncio.run(_open_and_close(db_path))
    finally:
        os.umask(old)
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


async def _open_and_close(path: Path) -> None:
    async with DB.open(path):
        pass


def _as_made(name: str) -> str:
    """The statement a migration makes the schema object ``name`` with."""
    with contextlib.closing(sqlite3.connect(":memory:", isolation_level=None)) as conn:
        migrate(conn, ":memory:", 0)
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    return f"{sql};"


# Another tool's edit to the schema that would lose or let in writes: each is
# refused at a read-write open, rather than found by check() days later.
@pytest.mark.parametrize(
    ("edit", "says", "undo"),
    [
        (  # an append would return a sequence it never stored
            "CREATE TRIGGER quiet BEFORE INSERT ON events BEGIN SELECT RAISE(IGNORE); END",
            "schema: trigger quiet is not daemon_db's (another tool added it)",
            "DROP TRIGGER quiet",
        ),
        (  # two active runs of one branch would be let in
            "DROP INDEX runs_one_active",
            "schema: index runs_one_active is missing",
            _as_made("runs_one_active"),
        ),
        (
            "DROP INDEX runs_one_active;"
            " CREATE INDEX runs_one_active ON runs (feature_branch, repo_path)",
            "schema: index runs_one_active is not as daemon_db makes it (another tool changed it)",
            f"DROP INDEX runs_one_active; {_as_made('runs_one_active')}",
        ),
        (  # SQLite keeps the table as the statement spelt it
            "CREATE TRIGGER quiet BEFORE INSERT ON EVENTS BEGIN SELECT RAISE(IGNORE); END",
            "schema: trigger quiet is not daemon_db's (another tool added it)",
            "DROP TRIGGER quiet",
        ),
        (  # only "sqlite_" names are SQLite's own
            "CREATE TRIGGER sqlitesync BEFORE INSERT ON events BEGIN SELECT RAISE(IGNORE); END",
            "schema: trigger sqlitesync is not daemon_db's (another tool added it)",
            "DROP TRIGGER sqlitesync",
        ),
        (  # stats() would drift from the next append on
            "DROP TRIGGER events_counted_in",
            "schema: trigger events_counted_in is missing",
            _as_made("events_counted_in"),
        ),
    ],
    ids=[
        "trigger added",
        "index dropped",
        "index made otherwise",
        "trigger on EVENTS",
        "trigger named sqlite...",
        "trigger dropped",
    ],
)
async def test_a_schema_another_tool_changed_is_refused_for_writing(
    db_path: Path, edit: str, says: str, undo: str
) -> None:
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run())
        await db.append_event(run.id, "started")
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.executescript(edit)
    before = dump(db_path)
    with pytest.raises(DatabaseError, match="another tool changed daemon_db's schema") as raised:
        await DB.open(db_path)
    assert says in raised.value.reason
    assert raised.value.path == str(db_path)
    assert dump(db_path) == before
    # Still readable, and check() names the same change.
    async with DB.open(db_path, readonly=True) as db:
        assert await db.list_events(run.id) != []
        assert says in await db.check(quick=True)
    # Undone, with daemon_db's own SQL for what was dropped, it opens for writing.
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.executescript(undo)
    async with DB.open(db_path) as db:
        await db.append_event(run.id, "resumed")
        assert len(await db.list_events(run.id)) == 2
        assert await db.check(quick=True) == []


async def test_another_tools_own_tables_indexes_and_triggers_are_left_alone(
    db_path: Path,
) -> None:
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run())
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        conn.executescript(
            "CREATE TABLE notes (run_id TEXT, text TEXT);"
            " CREATE INDEX notes_by_run ON notes (run_id);"
            " CREATE INDEX mine ON events (event_type);"
            " CREATE TRIGGER notes_stamped AFTER INSERT ON notes"
            " BEGIN UPDATE notes SET text = upper(new.text) WHERE rowid = new.rowid; END"
        )
    async with DB.open(db_path) as db:
        await db.append_event(run.id, "started")
        assert [event.event_type for event in await db.list_events(run.id)] == ["started"]
        assert await db.check(quick=True) == []
