"""The SQLite engine's units of work, as the shared front asks for them.

Each function wraps a plain function of a ``sqlite3.Connection`` (in
``runs.py``, ``units.py``, ``events.py`` and ``owners.py``) into a ``Work``;
this module is the engine's ``daemon_db._engine.Queries``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from functools import partial
from typing import Any

from .._engine import Work
from .._records import EventRecord, ResumableRun, Run, RunStatus, UnitRecord, UnitStatus
from . import events, owners, runs, units


def create_run(*, run: Run, owner: Any) -> Work[Run]:
    return Work(partial(owners.create_run, run=run, owner=owner))


def get_run(*, run_id: str) -> Work[Run | None]:
    return Work(partial(runs.get, run_id=run_id))


def get_run_by_branch(*, feature_branch: str, repo_path: str) -> Work[Run | None]:
    return Work(partial(runs.get_by_branch, feature_branch=feature_branch, repo_path=repo_path))


def update_run_status(
    *,
    run_id: str,
    status: RunStatus,
    error: str | None,
    expected: Collection[RunStatus] | None,
    owner: Any,
) -> Work[Run]:
    return Work(
        partial(
            owners.update_run_status,
            run_id=run_id,
            status=status,
            error=error,
            expected=expected,
            owner=owner,
        )
    )


def delete_run(*, run_id: str) -> Work[bool]:
    return Work(partial(runs.delete, run_id=run_id))


def list_runs_page(
    *,
    statuses: Collection[RunStatus] | None,
    feature_branch: str | None,
    repo_path: str | None,
    newest_first: bool,
    after: str | None,
    limit: int,
) -> Work[list[Run]]:
    return Work(
        partial(
            runs.list_page,
            statuses=statuses,
            feature_branch=feature_branch,
            repo_path=repo_path,
            newest_first=newest_first,
            after=after,
            limit=limit,
        )
    )


def complete_run(
    *, run_id: str, status: RunStatus, error: str | None, payload: str | None
) -> Work[Run]:
    return Work(partial(runs.complete, run_id=run_id, status=status, error=error, payload=payload))


def create_unit(*, unit: UnitRecord) -> Work[UnitRecord]:
    return Work(partial(units.create, unit=unit))


def get_unit(*, unit_record_id: str) -> Work[UnitRecord | None]:
    return Work(partial(units.get, unit_record_id=unit_record_id))


def update_unit_status(
    *,
    unit_record_id: str,
    status: UnitStatus,
    error: str | None,
    expected: Collection[UnitStatus] | None,
) -> Work[UnitRecord]:
    return Work(
        partial(
            units.update_status,
            unit_record_id=unit_record_id,
            status=status,
            error=error,
            expected=expected,
        )
    )


def update_unit_branch(*, unit_record_id: str, branch: str, worktree_path: str) -> Work[UnitRecord]:
    return Work(
        partial(
            units.update_branch,
            unit_record_id=unit_record_id,
            branch=branch,
            worktree_path=worktree_path,
        )
    )


def list_units_page(
    *, run_id: str, status: UnitStatus | None, after: str | None, limit: int
) -> Work[list[UnitRecord]]:
    return Work(partial(units.list_page, run_id=run_id, status=status, after=after, limit=limit))


def append_event(
    *, run_id: str, event_type: str, unit_id: str | None, payload: str | None
) -> Work[EventRecord]:
    return Work(
        partial(
            events.append, run_id=run_id, event_type=event_type, unit_id=unit_id, payload=payload
        )
    )


def next_sequence(*, run_id: str) -> Work[int]:
    return Work(partial(events.next_sequence, run_id=run_id))


def list_events_page(*, run_id: str, after: int, limit: int) -> Work[list[EventRecord]]:
    return Work(partial(events.list_page, run_id=run_id, after=after, limit=limit))


def resumable() -> Work[tuple[list[ResumableRun], list[Any]]]:
    return Work(owners.resumable)


def claim(
    *, owner: Any, max_attempts: int | None
) -> Work[tuple[list[ResumableRun], list[Run], list[Any]]]:
    return Work(partial(owners.claim, owner=owner, max_attempts=max_attempts))


def release_run(*, run_id: str) -> Work[str | None]:
    return Work(partial(owners.release_run, run_id=run_id))


def release_runs(*, run_ids: Sequence[str], owner: Any) -> Work[None]:
    return Work(partial(owners.release_runs, run_ids=run_ids, owner=owner))
