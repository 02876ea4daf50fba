"""The maintenance calls behind the command line: prune_runs, stats, check, backup."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import daemon_db._db
from daemon_db import DB, DaemonDBError, DatabaseError, InvalidRecordError, RunStatus
from tests.helpers import dump, new_run

OLD = datetime.now(UTC) - timedelta(days=10)


async def test_prune_runs_in_small_transactions(db: DB, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon_db._db, "PRUNE_BATCH_EVENTS", 5)
    finished = []
    for n in range(4):
        run = await db.create_run(new_run(status="completed", completed_at=OLD + timedelta(n)))
        for _ in range(3):
            await db.append_event(run.id, "tick")
        finished.append(run)
    active = await db.create_run(new_run(status="running", started_at=OLD))
    cutoff = datetime.now(UTC) - timedelta(days=1)

    assert await db.prune_runs(cutoff, dry_run=True) == finished
    assert len(await db.list_runs()) == 5
    assert await db.prune_runs(cutoff) == finished  # oldest first, over several batches
    assert await db.list_runs() == [active]
    assert await db.prune_runs(cutoff) == []
    assert await db.check() == []


async def test_prune_runs_needs_an_aware_moment(db: DB) -> None:
    with pytest.raises(InvalidRecordError):
        await db.prune_runs(datetime(2026, 1, 1))
    with pytest.raises(InvalidRecordError):
        await db.prune_runs(None)  # type: ignore[arg-type]


async def test_stats_and_check(db: DB) -> None:
    run = await db.create_run(new_run(status="running"))
    await db.append_event(run.id, "tick")
    await db.complete_run(run.id, RunStatus.FAILED)
    figures = await db.stats()
    assert figures.runs["failed"] == 1
    assert figures.events == 2
    assert await db.check() == []


async def test_backup_of_a_file_and_of_memory(db: DB, tmp_path: Path) -> None:
    run = await db.create_run(new_run())
    await db.append_event(run.id, "tick")
    seen: list[tuple[int, int, bool]] = []

    def progress(copied: int, total: int) -> None:
        seen.append((copied, total, threading.current_thread() is threading.main_thread()))

    copy = tmp_path / "copy.db"
    pages = await db.backup(copy, progress=progress)
    assert pages > 0
    await db.append_event(run.id, "after the copy")
    async with DB.open(copy, readonly=True) as restored:
        assert await restored.list_runs() == [run]
        assert len(await restored.list_events(run.id)) == 1
    assert seen
    assert seen[-1][0] == seen[-1][1] == pages
    assert all(on_loop for _, _, on_loop in seen)  # progress is reported on the event loop

    before = dump(copy)
    with pytest.raises(DatabaseError, match="exists"):
        await db.backup(copy)
    assert dump(copy) == before
    await db.backup(copy, overwrite=True)
    assert dump(copy) != before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".backup")] == []


async def test_no_backup_inside_a_transaction_block(db: DB, tmp_path: Path) -> None:
    async with db.transaction():
        with pytest.raises(DaemonDBError):
            await db.backup(tmp_path / "copy.db")
    assert not (tmp_path / "copy.db").exists()
