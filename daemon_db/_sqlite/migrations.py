"""The schema as numbered migrations: data, applied in order, never edited once released.

Each migration is a tuple of statements that ``schema.migrate`` runs in one
transaction together with the ``user_version`` bump that records it. A new
release that changes the schema appends a migration; it never rewrites one.
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

MIGRATIONS: tuple[Migration, ...] = (_TABLES, _INDEXES)
