"""Security: owner-only files, values always bound as parameters, a tampered schema kept inert."""

from __future__ import annotations

import contextlib
import sqlite3
import stat
from pathlib import Path

import pytest

from daemon_db import DB, DatabaseError, RunStatus, UnitRecord
from daemon_db._sqlite import bridge
from tests.helpers import new_run, report

HOSTILE = [
    "'; DROP TABLE runs; --",
    '" OR 1=1 --',
    "') OR ('1'='1",
    "%",
    "_",
    "feature/%_*",
    "NULL",
    "\\",
    "a'b\"c`d",
    "line\nbreak\ttab\r",
    "\u202eRTL override",
    "emoji \U0001f680 ünïcödé",
    "x" * 4000,
    "*/ SELECT load_extension('evil') /*",
]


async def test_hostile_strings_are_stored_and_found_verbatim(db: DB) -> None:
    stored = 0
    for n, text in enumerate(HOSTILE):
        run = await db.create_run(
            new_run(
                feature_branch=text,
                repo_path=f"/srv/{n}",
                target_branch=text,
                tasks_dir=text,
                daemon_version=text,
                error=text,
            )
        )
        unit = await db.create_unit(UnitRecord(run_id=run.id, unit_id=text, branch=text))
        event = await db.append_event(run.id, text, unit_id=text, payload={text: text})
        assert await db.get_run(run.id) == run
        assert await db.get_run_by_branch(text, f"/srv/{n}") == run
        assert await db.get_unit(unit.id) == unit
        assert (await db.list_events(run.id)) == [event]
        assert event.payload == {text: text}
        assert await db.list_runs(feature_branch=text) == [run]
        stored += 1
    # LIKE wildcards and quotes match nothing but themselves.
    assert await db.get_run_by_branch("feature/%_x", "/srv/5") is None
    assert len(await db.list_runs(status=RunStatus.PENDING)) == len(HOSTILE)
    report(f"security: {stored} hostile strings stored in every text field and found verbatim")


async def test_the_files_are_owner_only(db_path: Path) -> None:
    async with DB.open(db_path) as db:
        await db.create_run(new_run())
        for path in (db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


@pytest.mark.parametrize("trusted", [False, True])
async def test_a_tampered_schema_cannot_call_functions(db_path: Path, trusted: bool) -> None:
    # Someone with write access adds a trigger calling a function the process
    # happens to have registered, once the daemon has the file open (a file
    # so changed is refused at open). With trusted_schema=OFF (daemon_db's
    # setting) SQLite refuses to run it; the control case shows it would fire.
    called: list[object] = []
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run())
        with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
            conn.execute(
                "CREATE TRIGGER tampered AFTER INSERT ON events"
                " BEGIN SELECT exfiltrate(NEW.id); END"
            )
        assert db._writer is not None

        def register(conn: sqlite3.Connection) -> None:
            conn.create_function("exfiltrate", 1, called.append)
            if trusted:
                conn.execute("PRAGMA trusted_schema = ON")

        await bridge.submit(db._writer.connection, register)
        if trusted:
            await db.append_event(run.id, "tick")
            assert called != []
        else:
            with pytest.raises(DatabaseError, match="unsafe use of exfiltrate") as raised:
                await db.append_event(run.id, "tick")
            assert raised.value.path == str(db_path)
            assert called == []
            assert await db.list_events(run.id) == []
