"""Opening a connection: settings, the checks that a file is ours, and migrations.

Everything here runs on a connection's own thread, before the connection is
handed to the rest of the library. A file is inspected with reads only; nothing
is written to it until it is known to be a daemon_db database (or empty).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
import time
from pathlib import Path
from typing import Final, NamedTuple

from .._errors import DatabaseError, SchemaVersionError, schema_changed, translate
from .migrations import MIGRATIONS, Migration
from .work import snapshot

__all__ = [
    "APPLICATION_ID",
    "MEMORY",
    "SCHEMA_VERSION",
    "SYNCHRONOUS_MODES",
    "migrate",
    "objects",
    "open_reader",
    "open_writer",
    "schema_problems",
    "uri",
]

APPLICATION_ID: Final = 0x646D6462
"""``PRAGMA application_id`` of every daemon_db file: the bytes "dmdb"."""

SCHEMA_VERSION: Final = MIGRATIONS[-1].version
"""The ``PRAGMA user_version`` this release reads and writes."""

SYNCHRONOUS_MODES: Final = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})

MEMORY: Final = ":memory:"


def wal_path(path: str) -> str:
    """The database's WAL file: SQLite keeps it beside the file a symbolic link points to."""
    return f"{os.path.realpath(path)}-wal"


def uri(path: str, mode: str) -> str:
    """``path`` as the URI SQLite opens it by, in ``mode`` (``ro``, ``rw``, ``rwc``).

    Always a URI, never the name as given: this SQLite reads a name that starts
    with ``file:`` as a URI even when not asked to, so ``file:state.db`` would
    open ``state.db``, another file. The absolute path of a URI is only a path.
    """
    return f"{Path(path).resolve().as_uri()}?mode={mode}"


def roll_back_journal(path: str) -> None:
    """Roll back a write a process killed midway left in ``path``'s ``-journal``.

    A file with a rollback journal (a backup copy) keeps it until a connection
    that may write reads the file; no read-only open can get past it. This
    one changes nothing else: no migration, no owner. The file's header must
    name daemon_db first: rolling back writes into the file, and a text file
    beside a stray journal became a corrupt database.
    """
    try:
        with open(path, "rb") as file:
            header = file.read(_HEADER_BYTES)
    except OSError as exc:
        raise DatabaseError(path, f"cannot be read: {exc.strerror}") from None
    if header[:16] != _SQLITE_MAGIC or int.from_bytes(header[68:72], "big") != APPLICATION_ID:
        raise DatabaseError(
            path,
            "its header does not name daemon_db, so its -journal is left as it is: keep"
            " the journal if the file may be a daemon_db database whose first page was"
            " torn (a read-write open of a copy of both, in the sqlite3 shell, restores it)",
        )
    try:
        with contextlib.closing(sqlite3.connect(uri(path, "rw"), uri=True)) as conn:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        name = getattr(exc, "sqlite_errorname", type(exc).__name__)
        raise DatabaseError(
            path,
            f"cannot roll back the write a killed process left in its -journal ({exc}, {name}):"
            " the file and its folder must be writable",
        ) from None


_HEADER_BYTES: Final = 100
_SQLITE_MAGIC: Final = b"SQLite format 3\x00"


def open_writer(path: str, *, busy_timeout: float, synchronous: str) -> sqlite3.Connection:
    """Open ``path`` for writing, creating it (owner-only) and migrating it as needed."""
    if path != MEMORY:
        _refuse_folder(path)
        _create_private_file(path)
        _refuse_hard_links(path)
    try:
        conn = sqlite3.connect(
            path if path == MEMORY else uri(path, "rw"),
            uri=True,
            timeout=busy_timeout,
            isolation_level=None,
        )
    except sqlite3.Error as exc:
        raise translate(exc, path) from None
    try:
        _configure(conn, path, synchronous)
        version = _inspect(conn, path)
        if path != MEMORY:
            _enable_wal(conn, path, busy_timeout)
            # Never checkpoint inside a commit: checkpointer.py does it on a
            # thread of its own (this setting is the connection's, not the file's).
            conn.execute("PRAGMA wal_autocheckpoint = 0")
        migrate(conn, path, version)
        _check_writable(conn, path)
        if path != MEMORY:
            _refuse_changed_schema(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def open_reader(path: str, *, busy_timeout: float) -> sqlite3.Connection:
    """Open an existing file read-only; it must be at this release's schema version."""
    if path == MEMORY:
        raise DatabaseError(path, "an in-memory database cannot be opened read-only")
    _refuse_folder(path)
    if not os.path.isfile(path):
        raise DatabaseError(path, "no such database file")
    _refuse_hard_links(path)
    try:
        # mode=ro makes SQLite itself refuse every write on this connection.
        conn = sqlite3.connect(
            uri(path, "ro"), uri=True, timeout=busy_timeout, isolation_level=None
        )
    except sqlite3.Error as exc:
        raise translate(exc, path) from None
    try:
        _configure(conn, path, "NORMAL")
        version = _inspect(conn, path)
        if version != SCHEMA_VERSION:
            raise SchemaVersionError(
                path, version, SCHEMA_VERSION, "needs migrating: open it read-write once"
            )
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: sqlite3.Connection, path: str, found: int) -> None:
    """Apply each migration after version ``found``, each in one transaction with its bump."""
    for migration in MIGRATIONS[found:]:
        if migration.rebuilds_tables:
            # A no-op inside a transaction: it must be set before BEGIN.
            conn.execute("PRAGMA foreign_keys = OFF")
            # The rebuilt table takes the old one's name without SQLite checking
            # the views that name it: an operator's view on runs, found naming a
            # dropped table, stopped the migration, and the daemon with it.
            conn.execute("PRAGMA legacy_alter_table = ON")
        try:
            _apply(conn, path, migration)
        finally:
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA legacy_alter_table = OFF")


def _apply(conn: sqlite3.Connection, path: str, migration: Migration) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        raise translate(exc, path) from None
    try:
        # Read again under the write lock: another process may have migrated meanwhile.
        current = _user_version(conn)
        if current > SCHEMA_VERSION:
            raise _too_new(path, current)
        if current < migration.version:
            for statement in migration.statements:
                try:
                    conn.execute(statement)
                except sqlite3.IntegrityError:
                    _name_two_active_runs(conn)
                    raise
            _name_orphans(conn)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {migration.version}")
        conn.execute("COMMIT")
    except BaseException as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            reason = f"migration {migration.version} ({migration.name}) failed: {exc}"
            raise DatabaseError(path, reason) from None
        raise


def _name_orphans(conn: sqlite3.Connection) -> None:
    """Refuse rows that refer to a run or unit no longer there, naming the first."""
    orphans = conn.execute("PRAGMA foreign_key_check").fetchall()
    if orphans:
        table, rowid, parent, _ = orphans[0]
        raise sqlite3.IntegrityError(
            f"{len(orphans)} row(s) refer to rows that are gone, the first {table} row"
            f" {rowid} to a {parent} row (the sqlite3 shell deletes with foreign keys off"
            " unless told 'PRAGMA foreign_keys = ON'): delete them, then open it again"
        )


def _name_two_active_runs(conn: sqlite3.Connection) -> None:
    """Name the runs that break one active run per branch, if they are why a statement failed."""
    found = conn.execute(
        "SELECT feature_branch, repo_path, group_concat(id, ', ') FROM runs"
        " WHERE status IN ('pending', 'running') GROUP BY feature_branch, repo_path"
        " HAVING count(*) > 1 LIMIT 1"
    ).fetchone()
    if found is not None:
        branch, repo, ids = found
        raise sqlite3.IntegrityError(
            f"runs {ids} are all active on branch {branch!r} of {repo!r}, where one may"
            " be: finish or delete all but one, then open it again"
        )


def _refuse_folder(path: str) -> None:
    # SQLite would say only SQLITE_CANTOPEN, "unable to open database file".
    if os.path.isdir(path):
        raise DatabaseError(path, "is a folder, not a database file")


def _refuse_hard_links(path: str) -> None:
    # SQLite keeps the -wal and -shm beside the name it opened (a symbolic link
    # is followed to the file's own name; a hard link cannot be): processes
    # opening one file by two names keep two logs, and the next open by one
    # name loses what the other's log held. SQLite itself only logs it.
    with contextlib.suppress(OSError):  # SQLite says why it cannot open it
        links = os.stat(path).st_nlink
        if links > 1:
            raise DatabaseError(
                path,
                f"the file has {links} names (hard links), and SQLite keeps a log beside"
                " each name it is opened by: processes opening it by different names would"
                " lose each other's writes. Give it one name (a copy has one)",
            )


def _create_private_file(path: str) -> None:
    # Created here rather than by SQLite so that it is owner-only from the first
    # byte; SQLite gives the -wal and -shm files the same permissions. Through
    # a symbolic link to a file yet to be made, the file it names is made.
    try:
        real = os.path.realpath(path)
        parent = os.path.dirname(real)
        if parent and not os.path.isdir(parent):
            try:
                os.makedirs(parent, exist_ok=True)
            except (FileExistsError, NotADirectoryError):  # a file on the way
                raise DatabaseError(
                    path, f"cannot create the database file: {_a_file_on(parent)} is not a folder"
                ) from None
        fd = os.open(real, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise DatabaseError(path, f"cannot create the database file: {exc.strerror}") from None
    os.close(fd)


def _a_file_on(folder: str) -> str:
    """The first of ``folder`` and its parents that exists: a file, where a folder should be."""
    while not os.path.exists(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    return folder


def _configure(conn: sqlite3.Connection, path: str, synchronous: str) -> None:
    try:
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        # A tampered file must not run SQL functions through its schema.
        conn.execute("PRAGMA trusted_schema = OFF")
        conn.execute("PRAGMA foreign_keys = ON")
        enabled = conn.execute("PRAGMA foreign_keys").fetchone()
    except sqlite3.Error as exc:
        raise translate(exc, path) from None
    if enabled != (1,):
        raise DatabaseError(path, "SQLite refused to enable foreign keys on this connection")


def _inspect(conn: sqlite3.Connection, path: str) -> int:
    """Return the schema version of a daemon_db file (0 if empty); refuse any other file."""
    try:
        # One snapshot: another process may be creating the schema meanwhile.
        with snapshot(conn):
            application_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = _user_version(conn)
            empty = conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone() is None
    except sqlite3.Error as exc:
        raise DatabaseError(path, f"not a daemon_db database ({exc})") from None
    if application_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise _too_new(path, version)
        if version < 1:  # migrations would start from its end, or the beginning
            raise SchemaVersionError(path, version, SCHEMA_VERSION, "which no release writes")
        return version
    if application_id == 0 and version == 0 and empty:
        return 0
    raise DatabaseError(
        path,
        f"not a daemon_db database (application_id {application_id:#x}, user_version {version})",
    )


def _enable_wal(conn: sqlite3.Connection, path: str, busy_timeout: float) -> None:
    # SQLite does not call the busy handler while switching the journal mode:
    # beside another connection opening the same new file, the switch fails at
    # once with SQLITE_BUSY. Retry it, as the busy handler would, for as long.
    deadline = time.monotonic() + busy_timeout
    pause = 0.001
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.Error as exc:
            busy = (exc.sqlite_errorname or "").startswith("SQLITE_BUSY")
            if not busy or time.monotonic() + pause > deadline:
                raise translate(exc, path) from None
            time.sleep(pause)
            pause = min(2 * pause, 0.05)
    if mode != "wal":
        raise DatabaseError(path, f"cannot switch to WAL mode (journal mode stays {mode!r})")


def _check_writable(conn: sqlite3.Connection, path: str) -> None:
    # SQLite quietly opens a file it may not write read-only; say so now rather
    # than at the daemon's first write. Only a real page write tells (BEGIN
    # IMMEDIATE succeeds on such a file); this one is rolled back.
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        finally:
            conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        if exc.sqlite_errorname == "SQLITE_READONLY":
            reason = (
                "the file, or its -wal or -shm file, cannot be written"
                " (it can still be opened read-only: readonly=True, or any inspecting command)"
            )
            raise DatabaseError(path, reason) from None
        raise translate(exc, path) from None


class SchemaObject(NamedTuple):
    """A table, index or trigger as ``sqlite_master`` has it."""

    table: str
    """The table it is, or is on."""
    sql: str | None
    """Its SQL, spaced as one line (``None`` for SQLite's own indexes)."""


def objects(conn: sqlite3.Connection) -> dict[tuple[str, str], SchemaObject]:
    """The file's tables, indexes and triggers by ``(kind, name)``, from one read."""
    return {
        (kind, name): SchemaObject(table, " ".join(sql.split()) if isinstance(sql, str) else sql)
        for kind, name, table, sql in conn.execute(
            # SQLite reserves the names that start "sqlite_" (LIKE is
            # case-insensitive, and "_" must be escaped to mean itself).
            "SELECT type, name, tbl_name, sql FROM sqlite_master"
            " WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
        )
    }


@functools.cache
def _made() -> dict[tuple[str, str], SchemaObject]:
    """The tables, indexes and triggers of this version's schema, as a new file has them.

    The SQL is compared spaced as one line: SQLite keeps an index's or a
    trigger's text as its statement had it, and a file migrated from an older
    version ran the same statements as a new one.
    """
    with contextlib.closing(sqlite3.connect(MEMORY, isolation_level=None)) as conn:
        migrate(conn, MEMORY, 0)
        return objects(conn)


def schema_problems(
    found: dict[tuple[str, str], SchemaObject], *, tables_as_made: bool = True
) -> list[str]:
    """What another tool changed in daemon_db's schema, one line each.

    Without its trigger a count drifts from the next write on; without its
    unique index a rule is no longer enforced; a trigger of another tool's on
    one of daemon_db's tables may stop or change any write (``RAISE(IGNORE)``
    drops an event its append acknowledges). Another tool's own tables and
    indexes, and triggers on its own tables, change no write of ours.

    ``tables_as_made=False`` compares tables by name only: a table that a
    migration rebuilt and renamed keeps the text SQLite rewrote it to, which
    another SQLite release may write otherwise.
    """
    made = _made()
    problems: list[str] = []
    for (kind, name), ours in sorted(made.items()):
        there = found.get((kind, name))
        if there is None:
            problems.append(f"schema: {kind} {name} is missing")
        elif there.sql != ours.sql and (tables_as_made or kind != "table"):
            problems.append(
                f"schema: {kind} {name} is not as daemon_db makes it (another tool changed it)"
            )
    # A trigger's table is kept as its statement spelt it ("ON EVENTS"), and
    # SQLite's names are case-insensitive.
    tables = {name.lower() for kind, name in made if kind == "table"}
    problems += [
        f"schema: trigger {name} is not daemon_db's (another tool added it)"
        for (kind, name), there in sorted(found.items())
        if kind == "trigger" and (kind, name) not in made and there.table.lower() in tables
    ]
    return problems


def _refuse_changed_schema(conn: sqlite3.Connection, path: str) -> None:
    problems = schema_problems(objects(conn), tables_as_made=False)
    if problems:
        raise schema_changed(path, problems)


def _user_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def _too_new(path: str, version: int) -> SchemaVersionError:
    return SchemaVersionError(
        path, version, SCHEMA_VERSION, "written by a newer release of daemon_db"
    )
