"""Damaged and unusual files: each gets its typed error naming the path, nothing half-written,
and the store works again once the cause is gone.

Files that are not SQLite, belong to another application, or carry a newer
schema are covered in tests/test_schema.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from daemon_db import DB, DatabaseError
from daemon_db._sqlite import bridge
from tests.helpers import dump, new_run, report

CHILD = Path(__file__).parent.parent / "children" / "file_conditions.py"


def _without_root_powers() -> Callable[[], None] | None:
    """For root: drop the capabilities that let it ignore file permissions, in the child."""
    if os.geteuid() != 0:
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def drop() -> None:
        for capability in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return drop


def _try(*paths: Path) -> dict[str, dict[str, str]]:
    """Write to, then read, each database from a process bound by file permissions."""
    result = subprocess.run(
        [sys.executable, str(CHILD), *map(str, paths)],
        preexec_fn=_without_root_powers(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    outcomes: dict[str, dict[str, str]] = json.loads(result.stdout)
    return outcomes


async def _populated(path: Path, runs: int = 3) -> None:
    async with DB.open(path) as db:
        for _ in range(runs):
            run = await db.create_run(new_run(status="running"))
            await db.append_event(run.id, "tick", payload={"blob": "x" * 2000})


def _chmod(folder: Path, mode: int) -> None:
    for path in folder.iterdir():
        path.chmod(mode)


async def test_a_file_that_cannot_be_written(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await _populated(path)
    before = dump(path)
    _chmod(tmp_path, 0o400)
    outcome = _try(path)
    assert outcome["enforced"], "file permissions do not bind the child here"
    write, read = outcome[str(path)]["write"], outcome[str(path)]["read"]
    assert write.startswith("DatabaseError: ")
    assert str(path) in write
    assert "cannot be written" in write
    assert read == "ok"  # an inspector can still read it

    _chmod(tmp_path, 0o600)  # the cause is gone: the store works again
    assert _try(path)[str(path)] == {"write": "ok", "read": "ok"}
    after = dump(path)
    assert [line for line in after if line not in before] != []  # the probe's run, no more
    assert all(line in after for line in before)


async def test_a_folder_that_cannot_be_written(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    existing = folder / "state.db"
    await _populated(existing)  # closed: its -wal and -shm files are gone
    assert sorted(p.name for p in folder.iterdir()) == ["state.db"]
    before = dump(existing)
    new = folder / "new.db"
    folder.chmod(0o500)
    try:
        outcome = _try(existing, new)
    finally:
        folder.chmod(0o700)
    assert outcome["enforced"]
    for path in (existing, new):
        for mode, result in outcome[str(path)].items():
            assert result.startswith("DatabaseError: "), (path, mode, result)
            assert str(path) in result
    assert "cannot create the database file" in outcome[str(new)]["write"]
    assert "no such database file" in outcome[str(new)]["read"]
    assert "folder cannot be written" in outcome[str(existing)]["write"]
    assert not new.exists()
    assert dump(existing) == before

    assert _try(existing, new) == {  # the cause is gone
        "enforced": False,
        str(existing): {"write": "ok", "read": "ok"},
        str(new): {"write": "ok", "read": "ok"},
    }


async def test_a_truncated_database(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    await _populated(path, runs=40)
    original = path.read_bytes()
    tried = 0
    for size in (len(original) // 2, 4096 + 100, 50):
        path.write_bytes(original[:size])
        with pytest.raises(DatabaseError) as raised:
            async with DB.open(path) as db:
                for run in await db.list_runs():
                    await db.list_events(run.id)
        assert raised.value.path == str(path)
        tried += 1
    path.write_bytes(original)  # restored from a copy: usable again
    async with DB.open(path) as db:
        runs = await db.list_runs()
        assert len(runs) == 40
        await db.append_event(runs[0].id, "after")
    report(f"damaged files: truncated ({tried} sizes), unwritable file and folder, full database")
    report("  each refused with DatabaseError naming the path; nothing half-written; usable after")


async def test_a_full_database(db_path: Path) -> None:
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run(status="running"))
        await db.append_event(run.id, "first")
        assert db._writer is not None
        writer = db._writer.connection

        def limit(pages: int | None) -> Callable[[sqlite3.Connection], None]:
            def set_limit(conn: sqlite3.Connection) -> None:
                count = conn.execute("PRAGMA page_count").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count = {pages or count + 2}")

            return set_limit

        await bridge.submit(writer, limit(None))
        full = None
        for n in range(200):
            try:
                await db.append_event(run.id, "fill", payload={"n": n, "blob": "y" * 3000})
            except DatabaseError as exc:
                full = exc
                break
        assert full is not None
        assert full.path == str(db_path)
        assert "full" in str(full)
        stored = await db.list_events(run.id)

        # Concurrent writers while full: each gets its own error, nothing is half-stored.
        outcomes = await asyncio.gather(
            *(db.append_event(run.id, "more", payload="z" * 3000) for _ in range(5)),
            return_exceptions=True,
        )
        assert all(isinstance(outcome, DatabaseError) for outcome in outcomes), outcomes
        assert await db.list_events(run.id) == stored

        await bridge.submit(writer, limit(1_000_000))  # room again
        after = await db.append_event(run.id, "after")
        assert after.sequence == len(stored) + 1
    with contextlib.closing(sqlite3.connect(db_path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
