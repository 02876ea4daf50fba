"""The schema as numbered migrations: data, applied in order, never edited once released.

Each migration is a tuple of statements that ``schema.migrate`` runs in one
transaction together with the ``user_version`` bump that records it. A new
release that changes the schema appends a migration; it never rewrites one.

SQLite cannot change a column's constraints in place: a migration that must
rebuilds the table (create the new one, copy, drop the old, rename), as
SQLite's documentation prescribes. Dropping a table that others refer to with
foreign keys ON would cascade into them, so such a migration says
``rebuilds_tables`` and runs with foreign keys OFF, then checks every key
before it commits.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MIGRATIONS", "Migration"]


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema: the statements that take ``version - 1`` to ``version``."""

    version: int
    name: str
    statements: tuple[str, ...]
    rebuilds_tables: bool = False


_TABLES = Migration(
    version=1,
    name="the runs, units and events tables",
    statements=(
        """
        CREATE TABLE runs (
            id              TEXT PRIMARY KEY NOT NULL,
            feature_branch  TEXT NOT NULL,
            repo_path       TEXT NOT NULL,
            target_branch   TEXT NOT NULL,
            tasks_dir       TEXT NOT NULL,
            parallelism     INTEGER NOT NULL CHECK (parallelism >= 1),
            status          TEXT NOT NULL CHECK (
                                status IN ('pending', 'running', 'completed', 'failed', 'cancelled')
                            ),
            daemon_version  TEXT NOT NULL DEFAULT '',
            started_at      TEXT,
            completed_at    TEXT,
            error           TEXT,
            config_json     TEXT NOT NULL DEFAULT '{}'
        )
        """,
        """
        CREATE TABLE units (
            id              TEXT PRIMARY KEY NOT NULL,
            run_id          TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            unit_id         TEXT NOT NULL,
            status          TEXT NOT NULL CHECK (
                                status IN ('pending', 'running', 'completed', 'failed')
                            ),
            branch          TEXT,
            worktree_path   TEXT,
            started_at      TEXT,
            completed_at    TEXT,
            error           TEXT,
            UNIQUE (run_id, unit_id)
        )
        """,
        # AUTOINCREMENT: an event id is never reused, even after its run is deleted.
        """
        CREATE TABLE events (
            id              INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id          TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            sequence        INTEGER NOT NULL CHECK (sequence >= 1),
            event_type      TEXT NOT NULL,
            unit_id         TEXT,
            payload_json    TEXT,
            created_at      TEXT NOT NULL,
            UNIQUE (run_id, sequence)
        )
        """,
    ),
)

_INDEXES = Migration(
    version=2,
    name="one active run per branch and repo; indexes for the start-up queries",
    statements=(
        # The rule lives in the file, so it holds for every process that writes to it.
        """
        CREATE UNIQUE INDEX runs_one_active
            ON runs (feature_branch, repo_path)
            WHERE status IN ('pending', 'running')
        """,
        "CREATE INDEX runs_by_branch ON runs (feature_branch, repo_path, id)",
        "CREATE INDEX runs_by_status ON runs (status, id)",
    ),
)

_RUN_STATUSES = "'pending', 'running', 'completed', 'failed', 'cancelled'"
_UNIT_STATUSES = "'pending', 'ready', 'blocked', 'running', 'completed', 'failed', 'cancelled'"

_OWNERS = Migration(
    version=3,
    name="owners of runs; runs without a branch or a parallelism; more unit statuses",
    rebuilds_tables=True,
    statements=(
        # One row per open read-write DB: who holds runs, until when, and where
        # its process can be looked for (see daemon_db/_process.py).
        """
        CREATE TABLE owners (
            id              TEXT PRIMARY KEY NOT NULL,
            name            TEXT NOT NULL,
            host            TEXT NOT NULL,
            machine         TEXT NOT NULL,
            pid             INTEGER NOT NULL,
            started         TEXT,
            lease_until     TEXT NOT NULL
        )
        """,
        f"""
        CREATE TABLE runs_3 (
            id              TEXT PRIMARY KEY NOT NULL,
            feature_branch  TEXT,
            repo_path       TEXT NOT NULL,
            target_branch   TEXT NOT NULL,
            tasks_dir       TEXT NOT NULL,
            parallelism     INTEGER CHECK (parallelism >= 1),
            status          TEXT NOT NULL CHECK (status IN ({_RUN_STATUSES})),
            daemon_version  TEXT NOT NULL DEFAULT '',
            started_at      TEXT,
            completed_at    TEXT,
            error           TEXT,
            config_json     TEXT NOT NULL DEFAULT '{{}}',
            owner_id        TEXT REFERENCES owners (id) ON DELETE SET NULL,
            attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0)
        )
        """,
        """
        INSERT INTO runs_3 (
            id, feature_branch, repo_path, target_branch, tasks_dir, parallelism, status,
            daemon_version, started_at, completed_at, error, config_json
        )
        SELECT
            id, feature_branch, repo_path, target_branch, tasks_dir, parallelism, status,
            daemon_version, started_at, completed_at, error, config_json
        FROM runs
        """,
        "DROP TABLE runs",
        "ALTER TABLE runs_3 RENAME TO runs",
        # A run without a branch is never "the active run of its branch".
        """
        CREATE UNIQUE INDEX runs_one_active
            ON runs (feature_branch, repo_path)
            WHERE status IN ('pending', 'running') AND feature_branch IS NOT NULL
        """,
        "CREATE INDEX runs_by_branch ON runs (feature_branch, repo_path, id)",
        "CREATE INDEX runs_by_status ON runs (status, id)",
        # Deleting an owner sets its runs' owner_id to NULL: without an index
        # that would scan every run. Most runs (history) have none.
        "CREATE INDEX runs_by_owner ON runs (owner_id) WHERE owner_id IS NOT NULL",
        f"""
        CREATE TABLE units_3 (
            id              TEXT PRIMARY KEY NOT NULL,
            run_id          TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            unit_id         TEXT NOT NULL,
            status          TEXT NOT NULL CHECK (status IN ({_UNIT_STATUSES})),
            branch          TEXT,
            worktree_path   TEXT,
            started_at      TEXT,
            completed_at    TEXT,
            error           TEXT,
            UNIQUE (run_id, unit_id)
        )
        """,
        "INSERT INTO units_3 SELECT * FROM units",
        "DROP TABLE units",
        "ALTER TABLE units_3 RENAME TO units",
    ),
)


def _kept_count(key: str, change: str) -> str:
    """An upsert of ``counts``: the row ``key`` (SQL text) moves by ``change``."""
    return (
        f"INSERT INTO counts (name, n) VALUES ({key}, {change})"
        f" ON CONFLICT (name) DO UPDATE SET n = n + ({change})"
    )


_EVENTS = "'events'"


def _status_counts(table: str) -> tuple[str, ...]:
    """Triggers that keep ``counts`` of ``table``'s rows by status, whatever writes them."""
    new, old = f"'{table}:' || new.status", f"'{table}:' || old.status"
    return (
        f"CREATE TRIGGER {table}_counted_in AFTER INSERT ON {table}"
        f" BEGIN {_kept_count(new, '1')}; END",
        f"CREATE TRIGGER {table}_counted_out AFTER DELETE ON {table}"
        f" BEGIN {_kept_count(old, '-1')}; END",
        f"CREATE TRIGGER {table}_counted_moved AFTER UPDATE OF status ON {table}"
        f" WHEN old.status IS NOT new.status"
        f" BEGIN {_kept_count(old, '-1')}; {_kept_count(new, '1')}; END",
        f"INSERT INTO counts (name, n) SELECT '{table}:' || status, COUNT(*) FROM {table}"
        " GROUP BY status",
    )


# Written against the columns every version has, with CREATE INDEX and CREATE
# TRIGGER only (no table rebuild), so that it applies after any migration that
# rebuilds the runs or units tables: only its number would change.
_SCALE = Migration(
    version=4,
    name="indexes for prune and every list_runs filter; kept counts for stats",
    statements=(
        # prune_runs: finished runs in completion order, a seek rather than a scan
        # and sort of every finished run. The query repeats this WHERE exactly,
        # which is what lets SQLite use a partial index.
        """
        CREATE INDEX runs_finished_by_completion
            ON runs (completed_at, id)
            WHERE status IN ('cancelled', 'completed', 'failed')
        """,
        # list_runs(repo_path=...) without a branch.
        "CREATE INDEX runs_by_repo ON runs (repo_path, id)",
        # stats(): counts kept by triggers, so that it reads a few rows rather
        # than counting millions; each write that adds, removes or moves a row
        # between statuses updates one small row more.
        """
        CREATE TABLE counts (
            name    TEXT PRIMARY KEY NOT NULL,
            n       INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
        *_status_counts("runs"),
        *_status_counts("units"),
        "CREATE TRIGGER events_counted_in AFTER INSERT ON events"
        f" BEGIN {_kept_count(_EVENTS, '1')}; END",
        "CREATE TRIGGER events_counted_out AFTER DELETE ON events"
        f" BEGIN {_kept_count(_EVENTS, '-1')}; END",
        "INSERT INTO counts (name, n) SELECT 'events', COUNT(*) FROM events",
    ),
)

MIGRATIONS: tuple[Migration, ...] = (_TABLES, _INDEXES, _OWNERS, _SCALE)
