"""The PostgreSQL schema as numbered migrations, and the checks made on opening.

Migrations are data: each is a tuple of statements, applied with its version
bump in one transaction, under ``pg_advisory_xact_lock``, so that two daemons
starting together migrate once (the second finds the version already bumped).
Released migrations are never edited; a change appends one.

A database is ours when its ``daemon_db_meta`` table says so (the application
marker and the version, as SQLite's ``application_id`` and ``user_version``).
A database that holds other tables but no marker, another application's
marker, or a newer version is refused before anything is written; so is, by
a read-write open, one whose encoding is not UTF8 (a read-only open still
reads it, so that its data can be looked at and moved).
"""

from __future__ import annotations

from typing import Final

import asyncpg

from .._errors import DatabaseError, SchemaVersionError

__all__ = [
    "APPLICATION",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "TABLES",
    "encoding_problem",
    "migrate",
    "verify",
]

APPLICATION: Final = "daemon_db"
"""The marker in ``daemon_db_meta.application``: this database is daemon_db's."""

MIGRATION_LOCK: Final = 0x646D6462  # "dmdb", the SQLite file's application_id
"""The advisory lock key migrations are applied under."""

_STATUSES = "'pending', 'running', 'completed', 'failed', 'cancelled'"
_UNIT_STATUSES = "'pending', 'ready', 'blocked', 'running', 'completed', 'failed', 'cancelled'"

MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    # 1: the whole schema of SQLite's version 4, written for PostgreSQL.
    (
        "CREATE TABLE daemon_db_meta ("
        " one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),"
        " application TEXT NOT NULL, version INTEGER NOT NULL)",
        "CREATE TABLE owners ("
        " id TEXT PRIMARY KEY, name TEXT NOT NULL, host TEXT NOT NULL, machine TEXT NOT NULL,"
        " pid BIGINT NOT NULL, started TEXT, lease_until TIMESTAMPTZ NOT NULL)",
        "CREATE TABLE runs ("
        " id TEXT PRIMARY KEY, feature_branch TEXT, repo_path TEXT NOT NULL,"
        " target_branch TEXT NOT NULL, tasks_dir TEXT NOT NULL,"
        " parallelism BIGINT CHECK (parallelism >= 1),"
        f" status TEXT NOT NULL CHECK (status IN ({_STATUSES})),"
        " daemon_version TEXT NOT NULL DEFAULT '', started_at TIMESTAMPTZ,"
        " completed_at TIMESTAMPTZ, error TEXT, config_json TEXT NOT NULL DEFAULT '{}',"
        " owner_id TEXT REFERENCES owners (id) ON DELETE SET NULL,"
        " attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),"
        # The sequence the run's next event gets: an append takes it by updating
        # this row, which locks the row until its transaction ends (events.py).
        " next_sequence BIGINT NOT NULL DEFAULT 1 CHECK (next_sequence >= 1))",
        "CREATE TABLE units ("
        " id TEXT PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,"
        f" unit_id TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ({_UNIT_STATUSES})),"
        " branch TEXT, worktree_path TEXT, started_at TIMESTAMPTZ, completed_at TIMESTAMPTZ,"
        " error TEXT, UNIQUE (run_id, unit_id))",
        "CREATE TABLE events ("
        " id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,"
        " sequence BIGINT NOT NULL CHECK (sequence >= 1), event_type TEXT NOT NULL,"
        " unit_id TEXT, payload_json TEXT, created_at TIMESTAMPTZ NOT NULL,"
        " UNIQUE (run_id, sequence))",
        "CREATE UNIQUE INDEX runs_one_active ON runs (feature_branch, repo_path)"
        " WHERE status IN ('pending', 'running') AND feature_branch IS NOT NULL",
        "CREATE INDEX runs_by_branch ON runs (feature_branch, repo_path, id)",
        "CREATE INDEX runs_by_status ON runs (status, id)",
        "CREATE INDEX runs_by_owner ON runs (owner_id) WHERE owner_id IS NOT NULL",
        "CREATE INDEX runs_finished_by_completion ON runs (completed_at, id)"
        " WHERE status IN ('cancelled', 'completed', 'failed')",
        "CREATE INDEX runs_by_repo ON runs (repo_path, id)",
    ),
)

SCHEMA_VERSION: Final = len(MIGRATIONS)
"""The version this release creates and reads."""

TABLES: Final = ("daemon_db_meta", "owners", "runs", "units", "events")


def server_encoding(conn: asyncpg.Connection) -> str | None:
    """The database's encoding, as the server reported it when the session started."""
    found = getattr(conn.get_settings(), "server_encoding", None)
    return None if found is None else str(found)


async def encoding_problem(conn: asyncpg.Connection) -> str | None:
    """Why the database's encoding does not suit the store, or None: it is UTF8."""
    found = server_encoding(conn)
    if found is None:  # the server reports it as the session starts: asked for only if not
        found = await conn.fetchval("SHOW server_encoding")
    if found == "UTF8":
        return None
    if found == "SQL_ASCII":  # checks nothing: the SQLite case, but every read raises 22021
        why = (
            "which takes any bytes as text: another tool's bytes that are not UTF-8 make reads fail"
        )
    else:  # the character set's own: a write of a character outside it fails (22P05)
        why = "which cannot hold every character a name, an error or a payload may have"
    return f"its encoding is {found}, {why}; daemon_db needs UTF8"


def _moving(problem: str) -> str:
    return (
        f"{problem} (move the data to a database made with createdb --encoding=UTF8"
        " --template=template0, by pg_dump and psql; a read-only open still reads this one)"
    )


async def _found(conn: asyncpg.Connection, url: str) -> tuple[str | None, int, bool]:
    """``(application, version, has_other_tables)`` of the database, writing nothing.

    The tables are listed in one statement, so in one snapshot: a daemon
    migrating meanwhile commits its tables and its marker together, and is
    seen with both or neither.
    """
    names = set(
        await conn.fetchval(
            "SELECT COALESCE(array_agg(tablename::text), '{}') FROM pg_tables"
            " WHERE schemaname = current_schema()"
        )
    )
    others = bool(names - set(TABLES))
    if "daemon_db_meta" not in names:
        return None, 0, bool(names)
    row = await conn.fetchrow("SELECT application, version FROM daemon_db_meta")
    if row is None:
        return None, 0, True
    application, version = row["application"], row["version"]
    if type(application) is not str or type(version) is not int:  # another tool's edit
        raise DatabaseError(
            url,
            f"its daemon_db_meta row is damaged (application={application!r},"
            f" version={version!r}): it should name daemon_db and a schema version",
        )
    return application, version, others


def _refuse(url: str, application: str | None, version: int, tables: bool) -> None:
    if application is None and tables:
        raise DatabaseError(url, "not a daemon_db database (it holds other tables)")
    if application is not None and application != APPLICATION:
        raise DatabaseError(url, f"not a daemon_db database (it is {application!r}'s)")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            url, version, SCHEMA_VERSION, "written by a newer release of daemon_db"
        )
    if application is not None and version < 1:  # another tool's: MIGRATIONS[-1] would run
        raise SchemaVersionError(url, version, SCHEMA_VERSION, "which no release writes")


async def verify(conn: asyncpg.Connection, url: str) -> None:
    """For a read-only open: the database must be ours, at this release's version."""
    application, version, tables = await _found(conn, url)
    _refuse(url, application, version, tables)
    if version != SCHEMA_VERSION:
        problem = await encoding_problem(conn)
        if problem is not None:  # "open it read-write once" would be refused too
            raise DatabaseError(url, _moving(problem))
        raise SchemaVersionError(
            url, version, SCHEMA_VERSION, "needs migrating: open it read-write once"
        )


async def migrate(conn: asyncpg.Connection, url: str) -> None:
    """Refuse a database that is not ours, newer or not UTF8, then apply pending migrations."""
    problem = await encoding_problem(conn)
    if problem is not None:
        raise DatabaseError(url, _moving(problem))
    application, version, tables = await _found(conn, url)
    _refuse(url, application, version, tables)  # before the lock: nothing written
    if version == SCHEMA_VERSION:
        return
    while True:
        async with conn.transaction():
            # A daemon migrating meanwhile may take longer than busy_timeout:
            # wait for it, as before any lock_timeout was set.
            await conn.execute("SET LOCAL lock_timeout = 0")
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
            # Read again under the lock: another daemon may have migrated meanwhile.
            application, version, tables = await _found(conn, url)
            _refuse(url, application, version, tables)
            if version >= SCHEMA_VERSION:
                return
            try:
                for statement in MIGRATIONS[version]:
                    await conn.execute(statement)
            except asyncpg.PostgresError as exc:
                raise DatabaseError(url, f"migration {version + 1} failed: {exc}") from None
            await conn.execute(
                "INSERT INTO daemon_db_meta (application, version) VALUES ($1, $2)"
                " ON CONFLICT (one) DO UPDATE SET version = excluded.version",
                APPLICATION,
                version + 1,
            )
