"""Owners, claims, compare-and-set, and the data a real orchestrator stores (issue 9)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import os
import socket
import sqlite3
import sys
import threading
import time
import warnings
import weakref
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon_db import (
    DB,
    DatabaseError,
    InvalidRecordError,
    RunStatus,
    StatusConflictError,
    UnitRecord,
    UnitStatus,
    _owner,
    _process,
)
from daemon_db import _timestamps as timestamps
from daemon_db._sqlite.db import SQLiteDB
from tests.helpers import V1_ROWS, make_version_1, new_run, new_unit


async def _expire(where: str | Path, db: DB) -> None:
    """Make ``db``'s lease run out, as a hung loop's would (its process still runs)."""
    if isinstance(where, str):
        import asyncpg

        conn = await asyncpg.connect(where)
        try:
            await conn.execute(
                "UPDATE owners SET lease_until = '2000-01-01Z' WHERE id = $1", db._owner.id
            )
        finally:
            await conn.close()
        return
    with contextlib.closing(sqlite3.connect(where)) as conn, conn:
        conn.execute(
            "UPDATE owners SET lease_until = '2000-01-01T00:00:00.000000Z' WHERE id = ?",
            (db._owner.id,),
        )


async def test_a_run_is_held_by_the_db_that_made_it_until_it_closes(where: str | Path) -> None:
    async with DB.open(where, owner="daemon-a") as first:
        run = await first.create_run(new_run(status="running"))
        async with DB.open(where, owner="daemon-b") as second:
            [item] = await second.resumable_runs()
            assert (item.owner, item.owner_alive, item.attempt) == ("daemon-a", True, 0)
            claimed = await second.claim_resumable_runs()
            assert claimed.resumed == claimed.abandoned == claimed.damaged == []
    async with DB.open(where, readonly=True) as inspector:
        [item] = await inspector.resumable_runs()
        assert (item.owner, item.owner_alive, item.attempt) == (None, False, 0)  # handed back
    async with DB.open(where, owner="daemon-c") as third:
        claimed = await third.claim_resumable_runs()
        assert [(r.run.id, r.attempt, r.owner, r.owner_alive) for r in claimed.resumed] == [
            (run.id, 0, "daemon-c", True)  # a clean close counts no attempt
        ]
        assert (await third.claim_resumable_runs()).resumed == []  # held now


async def test_the_default_owner_names_this_process(db_path: Path) -> None:
    async with DB.open(db_path) as db:
        await db.create_run(new_run())
        [item] = await db.resumable_runs()
    assert item.owner is not None
    host, pid, started = item.owner.split(":")
    assert (host, int(pid)) == (socket.gethostname(), os.getpid())
    assert started.isdigit()  # the process's start time: a reused pid is another owner


async def _raw(where: str | Path, *statements: str) -> None:
    """Change the store as another tool would: plain SQL, through sqlite3 or asyncpg."""
    if isinstance(where, str):
        import asyncpg

        conn = await asyncpg.connect(where)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()
        return
    with contextlib.closing(sqlite3.connect(where)) as conn, conn:
        for statement in statements:
            conn.execute(statement)


async def test_an_owner_this_process_registered_before_an_exec_is_dead(where: str | Path) -> None:
    # After os.execv the pid and start time are the same, but the program that
    # registered the owner is gone: its runs are taken over at once. The old
    # image's row is a copy under another id (runs refer to owners by id, and
    # PostgreSQL's foreign key forbids renaming a row they point to).
    async with DB.open(where, owner="before-exec") as before:
        run = await before.create_run(new_run(status="running"))
        await _raw(
            where,
            "INSERT INTO owners (id, name, host, machine, pid, started, lease_until)"
            " SELECT 'old-image', name, host, machine, pid, started, lease_until FROM owners"
            " WHERE name = 'before-exec'",
            "UPDATE runs SET owner_id = 'old-image'",
            "DELETE FROM owners WHERE name = 'before-exec' AND id <> 'old-image'",
        )
        async with DB.open(where, owner="after-exec") as after:
            [item] = await after.resumable_runs()
            assert (item.owner, item.owner_alive) == ("before-exec", False)
            claimed = await after.claim_resumable_runs()
            assert [(r.run.id, r.attempt) for r in claimed.resumed] == [(run.id, 1)]


_OWNERS = "INSERT INTO owners (id, name, host, machine, pid, started, lease_until) VALUES"


def _owner_row(name: str, pid: int) -> str:
    """An owner on this machine, leased for long: only its process tells whether it lives."""
    machine = _process.this_process().machine
    return f"('{name}', '{name}', 'h', '{machine}', {pid}, '12345', '2999-01-01T00:00:00.000000Z')"


async def _exited_pid() -> int:
    """The pid of a process that has exited."""
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await child.wait()
    return child.pid


async def test_a_process_hidden_by_proc_is_asked_of_the_kernel(
    where: str | Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # /proc mounted with hidepid shows nothing of other users' processes: an
    # owner on this machine whose process is hidden is alive while the kernel
    # knows its pid, and dead once it does not.
    exited = await _exited_pid()
    async with DB.open(where, owner="maker") as maker:
        alive = await maker.create_run(new_run(status="running"))
        gone = await maker.create_run(new_run(status="running"))
        await _raw(
            where,
            f"{_OWNERS} {_owner_row('hidden', os.getppid())}, {_owner_row('exited', exited)}",
            f"UPDATE runs SET owner_id = 'hidden' WHERE id = '{alive.id}'",
            f"UPDATE runs SET owner_id = 'exited' WHERE id = '{gone.id}'",
        )
    monkeypatch.setattr(_process, "_stat", lambda pid: None)
    assert _process.is_running(os.getppid(), "12345")  # hidden, but alive
    assert not _process.is_running(exited, "12345")  # gone
    async with DB.open(where, owner="next") as after:
        found = {r.run.id: (r.owner, r.owner_alive) for r in await after.resumable_runs()}
        assert found == {alive.id: ("hidden", True), gone.id: ("exited", False)}
        claimed = await after.claim_resumable_runs()
        assert [r.run.id for r in claimed.resumed] == [gone.id]


async def test_start_up_looks_at_each_owner_s_process_once(
    where: str | Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A daemon restarting reads every run the dead one held; a look at its
    # process for each of them (a /proc read each) doubled a start-up of
    # 1,000 runs.
    killed = await _exited_pid()
    async with DB.open(where, owner="maker") as maker:
        made = sorted([(await maker.create_run(new_run(status="running"))).id for _ in range(5)])
        await _raw(
            where,
            f"{_OWNERS} {_owner_row('killed', killed)}",
            "UPDATE runs SET owner_id = 'killed'",
        )
    looked_at: list[int] = []
    is_running = _process.is_running

    def counted(pid: int, started: str | None) -> bool:
        looked_at.append(pid)
        return is_running(pid, started)

    monkeypatch.setattr(_owner, "is_running", counted)
    async with DB.open(where, owner="next") as db:
        found = await db.resumable_runs()
        assert [(r.run.id, r.owner, r.owner_alive) for r in found] == [
            (run_id, "killed", False) for run_id in made
        ]
        assert looked_at == [killed]
        looked_at.clear()
        assert [r.run.id for r in (await db.claim_resumable_runs()).resumed] == made
        assert looked_at == [killed]


async def test_an_owner_whose_lease_expired_loses_its_runs_to_the_next_claim(
    where: str | Path,
) -> None:
    async with DB.open(where, owner="hung") as hung, DB.open(where, owner="next") as other:
        runs = [await hung.create_run(new_run(status="running")) for _ in range(3)]
        finished = await hung.create_run(new_run(status="completed"))
        assert (await other.claim_resumable_runs()).resumed == []
        await _expire(where, hung)
        found = await other.resumable_runs()
        assert [(r.owner, r.owner_alive) for r in found] == [("hung", False)] * 3
        claimed = await other.claim_resumable_runs()
        assert [(r.run.id, r.attempt) for r in claimed.resumed] == [(r.id, 1) for r in runs]
        assert await other.get_run(finished.id) == finished
        # The hung owner comes back: what it makes is its own again, what it lost is not.
        mine = await hung.create_run(new_run(status="running"))
        assert {(r.run.id, r.owner) for r in await other.resumable_runs()} == {
            *((r.id, "next") for r in runs),
            (mine.id, "hung"),
        }


async def test_start_up_lists_runs_of_both_active_statuses_by_id(where: str | Path) -> None:
    async with DB.open(where, owner="died") as died, DB.open(where, owner="next") as db:
        made = [await died.create_run(new_run(status=s)) for s in ["pending", "running"] * 5]
        await died.create_run(new_run(status="completed"))
        ids = [run.id for run in made]
        assert ids == sorted(ids)  # created in id order, statuses alternating
        assert [item.run.id for item in await db.resumable_runs()] == ids
        await _expire(where, died)
        assert [item.run.id for item in (await db.claim_resumable_runs()).resumed] == ids


async def test_an_owner_whose_lease_ran_out_is_alive_again_once_it_writes(
    where: str | Path,
) -> None:
    async with DB.open(where, owner="hung") as hung, DB.open(where, owner="next") as other:
        await _expire(where, hung)  # its row is still there: no claim has found it dead yet
        made = await hung.create_run(new_run(status="running"))
        [item] = await other.resumable_runs()
        assert (item.run.id, item.owner, item.owner_alive) == (made.id, "hung", True)
        assert (await other.claim_resumable_runs()).resumed == []


async def test_an_owner_whose_row_was_removed_is_registered_again_by_its_next_write(
    where: str | Path,
) -> None:
    # A claim removes the row of an owner it found dead; the owner's next write,
    # a create or a reopen, brings the row back, holding what it writes.
    forget = "DELETE FROM owners WHERE name = 'gone'"
    async with DB.open(where, owner="gone") as gone, DB.open(where, owner="other") as other:
        await _raw(where, forget)
        made = await gone.create_run(new_run(status="running"))
        [item] = await other.resumable_runs()
        assert (item.run.id, item.owner, item.owner_alive) == (made.id, "gone", True)
        await gone.complete_run(made.id, RunStatus.FAILED, "flaky")
        await _raw(where, forget)
        await gone.update_run_status(made.id, RunStatus.PENDING)
        [item] = await other.resumable_runs()
        assert (item.owner, item.owner_alive) == ("gone", True)
        assert (await other.claim_resumable_runs()).resumed == []


async def test_a_close_that_cannot_hand_back_its_runs_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process holds the write lock past busy_timeout: the runs stay
    # held until the lease runs out, and their takeover counts an attempt,
    # which a caller who closed cleanly would not expect without a word.
    path = tmp_path / "held.db"
    db = await DB.open(path, busy_timeout=0.2, lease=1.0)
    run = await db.create_run(new_run(status="running"))
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        with pytest.warns(RuntimeWarning, match="could not end this DB.s lease") as warned:
            await db.close()
        other.execute("ROLLBACK")
    assert str(path) in str(warned[0].message)
    # An open that fails the same way, registering its owner, says only why it
    # failed: it held nothing (and a warning under -W error replaced its error).
    real = SQLiteDB.__init__
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:

        def connected(db: SQLiteDB, *args: Any, **kwargs: Any) -> None:
            real(db, *args, **kwargs)
            other.execute("BEGIN IMMEDIATE")  # another daemon begins a write now

        monkeypatch.setattr(SQLiteDB, "__init__", connected)
        with pytest.raises(DatabaseError, match="database is locked"):
            await DB.open(path, busy_timeout=0.2)
        other.execute("ROLLBACK")
    monkeypatch.undo()
    async with DB.open(path) as next_daemon:
        assert (await next_daemon.claim_resumable_runs()).resumed == []  # the lease runs
        await asyncio.sleep(1.2)
        [taken] = (await next_daemon.claim_resumable_runs()).resumed
        assert (taken.run.id, taken.attempt) == (run.id, 1)


async def test_start_up_reads_a_run_whose_owner_row_another_tool_removed_as_unheld(
    where: str | Path,
) -> None:
    async with DB.open(where, owner="gone") as gone, DB.open(where, owner="other") as other:
        made = await gone.create_run(new_run(status="running"))
        held = await other.create_run(new_run(status="pending"))
        await _raw(where, "DELETE FROM owners WHERE name = 'gone'")
        found = {item.run.id: item for item in await other.resumable_runs()}
        assert (found[made.id].owner, found[made.id].owner_alive) == (None, False)
        assert (found[held.id].owner, found[held.id].owner_alive) == ("other", True)
        # Held by nobody, it is claimed (it was left out of every claim).
        assert [item.run.id for item in (await other.claim_resumable_runs()).resumed] == [made.id]


async def test_owner_rows_another_tool_wrote_stop_no_start_up_claim_or_listing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "odd-owners.db"
    async with DB.open(path, owner="maker") as db:
        runs = [await db.create_run(new_run(status="running")) for _ in range(2)]
    lease = "'2999-01-01T00:00:00.000000Z'"
    await _raw(
        path,
        # Holding nothing, with a name that is not UTF-8: start-up read every
        # owner once, and failed to decode it.
        "INSERT INTO owners VALUES"
        f" ('junk', CAST(X'FF' AS TEXT), 'h', 'elsewhere', 1, NULL, {lease})",
        # A lease of 5 is stored as the text '5', which sorts after every date:
        # its owner was alive for ever, its run never claimed.
        "INSERT INTO owners VALUES ('five', 'five', 'h', 'elsewhere', 1, NULL, 5)",
        # A name stored as a blob: giving its run up failed to encode the event.
        "INSERT INTO owners VALUES ('blob', X'6162', 'h', 'elsewhere', 1, NULL, 5)",
        # Holding nothing, an id, machine and start time that are not UTF-8:
        # a claim read every owner to judge it, and failed to decode them.
        "INSERT INTO owners VALUES (CAST(X'FE' AS TEXT), 'n', 'h', CAST(X'FF' AS TEXT), 1,"
        f" CAST(X'FD' AS TEXT), {lease})",
        "INSERT INTO owners VALUES (CAST(X'FC' AS TEXT), 'm', 'h', CAST(X'FB' AS TEXT), 1,"
        " CAST(X'FA' AS TEXT), CAST(X'F9' AS TEXT))",
        f"UPDATE runs SET owner_id = 'five' WHERE id = '{runs[0].id}'",
        f"UPDATE runs SET owner_id = 'blob', attempts = 3 WHERE id = '{runs[1].id}'",
    )
    async with DB.open(path, owner="next") as db:
        found = {item.run.id: item for item in await db.resumable_runs()}
        assert [found[run.id].owner_alive for run in runs] == [False, False]
        assert [found[run.id].owner for run in runs] == ["five", "ab"]  # not b"ab"
        # The command line's listings read the same owners.
        held = await db._owners_of([run.id for run in runs])
        listed = {run.id: holder async for run, holder in db._iter_owned_runs()}
        assert [held[run.id].owner for run in runs] == ["five", "ab"]
        assert [listed[run.id].owner for run in runs] == ["five", "ab"]
        await _raw(path, f"UPDATE runs SET owner_id = 'junk' WHERE id = '{runs[0].id}'")
        [run_held_by_junk] = [item for item in await db.resumable_runs() if item.run == runs[0]]
        assert run_held_by_junk.owner == "\N{REPLACEMENT CHARACTER}"
        listed = {run.id: holder async for run, holder in db._iter_owned_runs()}
        assert listed[runs[0].id].owner == "\N{REPLACEMENT CHARACTER}"
        await _raw(path, f"UPDATE runs SET owner_id = 'five' WHERE id = '{runs[0].id}'")
        claimed = await db.claim_resumable_runs()
        assert [item.run.id for item in claimed.resumed] == [runs[0].id]
        assert [run.id for run in claimed.abandoned] == [runs[1].id]
        # The odd owners are judged too: the one whose lease runs stays, the other goes.
        with contextlib.closing(sqlite3.connect(path)) as conn:
            left = conn.execute("SELECT hex(name) FROM owners ORDER BY 1").fetchall()
        assert [name for (name,) in left] == ["6E", "6E657874", "FF"]  # n, next, junk
        [event] = await db.list_events(runs[1].id)
        assert event.payload == {"attempts": 4, "max_attempts": 3, "owner": "ab"}


@pytest.mark.parametrize(
    ("column", "value", "name", "alive"),
    [
        ("pid", "CAST(X'FF' AS TEXT)", "odd", True),  # the lease tells
        ("id", "CAST(X'FE' AS TEXT)", "odd", True),
        ("name", "X'6162'", "ab", True),
        ("name", "CAST(X'FF' AS TEXT)", "\N{REPLACEMENT CHARACTER}", True),
        ("lease_until", f"CAST(X'{'FF' * 27}' AS TEXT)", "odd", False),
        ("lease_until", f"X'{'FF' * 27}'", "odd", False),
        ("lease_until", f"'{'z' * 27}'", "odd", False),  # sorted after every date
        # GLOB stops at a NUL: the form passed, and the text failed to decode
        # (and check() passed it).
        ("lease_until", "'2999-01-01T00:00:00.000000Z' || X'00FF'", "odd", False),
        # No release writes a lease past a year: alive for good, and check() was quiet.
        ("lease_until", "'9999-12-31T23:59:59.999999Z'", "odd", True),
    ],
    ids=[
        "pid",
        "id",
        "blob name",
        "name",
        "lease",
        "blob lease",
        "lease of letters",
        "NUL",
        "lease for good",
    ],
)
async def test_an_owner_another_tool_wrote_is_judged_by_what_can_be_read(
    tmp_path: Path, column: str, value: str, name: str, alive: bool
) -> None:
    path = tmp_path / "odd-owner.db"
    async with DB.open(path, owner="maker") as db:
        run = await db.create_run(new_run(status="running"))
    lease = timestamps.to_text(datetime.now(UTC) + timedelta(days=1))
    await _raw(
        path,
        f"INSERT INTO owners VALUES ('odd', 'odd', 'h', 'elsewhere', 1, NULL, '{lease}')",
        f"UPDATE owners SET {column} = {value} WHERE id = 'odd'",
        "UPDATE runs SET owner_id = (SELECT id FROM owners WHERE host = 'h')"
        f" WHERE id = '{run.id}'",
    )
    async with DB.open(path, owner="next") as db:
        # check() reads them all, and names each value the store never writes
        # (text that is not UTF-8 it cannot tell).
        problems = await db.check(quick=True)
        seen = not (column == "id" or (column == "name" and "CAST" in value))
        assert ["owners row" in p and f" {column}=" in p for p in problems] == [True] * seen
        [found] = await db.resumable_runs()
        assert (found.owner, found.owner_alive) == (name, alive)
        assert (await db._owners_of([run.id]))[run.id] == _owner.Held(name, alive, 0)
        claimed = await db.claim_resumable_runs()
        assert [item.run.id for item in claimed.resumed] == ([] if alive else [run.id])
        if alive:  # an operator can hand it back
            assert await db.release_run(run.id) == name
            assert [item.run.id for item in (await db.claim_resumable_runs()).resumed] == [run.id]


class _Crash(Exception):
    pass


async def test_a_finished_run_is_held_by_nobody(where: str | Path) -> None:
    async with DB.open(where, owner="maker") as db:
        completed = await db.create_run(new_run(status="running"))
        await db.complete_run(completed.id, RunStatus.COMPLETED)
        failed = await db.create_run(new_run(status="pending"))
        await db.update_run_status(failed.id, RunStatus.FAILED)
        cancelled = await db.create_run(new_run(status="cancelled"))
        active = await db.create_run(new_run(status="running"))
        ids = [completed.id, failed.id, cancelled.id, active.id]
        held = await db._owners_of(ids)
        assert [held[run_id].owner for run_id in ids] == [None, None, None, "maker"]
        # Made active again (a retry), it is held by the DB that did it.
        await db.update_run_status(failed.id, RunStatus.PENDING, expected=RunStatus.FAILED)
        assert (await db._owners_of([failed.id]))[failed.id].owner == "maker"


async def test_a_create_of_a_finished_run_renews_a_lapsed_lease(where: str | Path) -> None:
    # It holds nothing, but it is a write: a DB found dead while its loop hung
    # is alive again once it writes (the model-based test found it was not).
    async with DB.open(where, owner="db", lease=3600) as db:
        held = await db.create_run(new_run(status="pending"))
        await _expire(where, db)
        await db.create_run(new_run(status="completed"))
        assert (await db._owners_of([held.id]))[held.id] == _owner.Held("db", True, 0)


async def test_a_claim_keeps_an_owner_that_comes_back_while_the_claim_waits_for_it(
    where: str | Path,
) -> None:
    # X's loop hung past its lease, and wakes in a block that creates a run,
    # renewing its lease, while B's claim, which judged it dead, waits for the
    # block. On PostgreSQL the claim then deleted X's renewed row (its NOT
    # EXISTS read before the wait), ON DELETE SET NULL let the new run go, and
    # a third daemon took a run X was working.
    async with DB.open(where, owner="X", lease=3600) as x, DB.open(where, owner="B") as b:
        await _expire(where, x)
        async with x.transaction() as tx:
            made = await tx.create_run(new_run(status="running"))
            claim = b.claim_resumable_runs()
            claiming = asyncio.create_task(claim, context=contextvars.Context())
            await asyncio.sleep(0.5)  # the claim has judged X dead, and waits
        assert (await claiming).resumed == []
        assert (await x._owners_of([made.id]))[made.id] == _owner.Held("X", True, 0)
        async with DB.open(where, owner="C") as c:
            assert (await c.claim_resumable_runs()).resumed == []


@pytest.mark.parametrize("lease", ["-infinity", "0001-01-01 00:00:00+00", "1000-01-01 BC"])
async def test_a_claim_forgets_a_dead_owner_whatever_lease_it_left(
    postgres_url: str, lease: str
) -> None:
    # The claim deletes a dead owner only while its lease is the one it was
    # judged by: sent back as a datetime, -infinity and year 1 came back as
    # each other (the row kept for ever), and a BC lease made every claim raise.
    with contextlib.suppress(_Crash):
        async with DB.open(postgres_url, owner="dead") as dead:
            run = await dead.create_run(new_run(status="running"))
            raise _Crash
    await _raw(
        postgres_url,
        f"UPDATE owners SET machine = 'elsewhere', lease_until = '{lease}' WHERE name = 'dead'",
    )
    async with DB.open(postgres_url, owner="next") as db:
        assert [item.run.id for item in (await db.claim_resumable_runs()).resumed] == [run.id]
        assert await _owner_names(postgres_url) == ["next"]


async def test_a_claim_forgets_a_dead_owner_whatever_finished_runs_it_made(
    where: str | Path,
) -> None:
    # A finished run points to no owner, so nothing keeps a crashed owner's row
    # (on PostgreSQL, the claim deletes only rows no run points to).
    for name in ("crashed-1", "crashed-2"):
        with contextlib.suppress(_Crash):
            # Left by an exception, it crashed: its lease ends, its row stays.
            async with DB.open(where, owner=name) as db:
                run = await db.create_run(new_run(status="running"))
                await db.complete_run(run.id, RunStatus.COMPLETED)
                raise _Crash
    async with DB.open(where, owner="next") as db:
        await db.claim_resumable_runs()
        assert await _owner_names(where) == ["next"]
        runs = await db.list_runs()
        held = await db._owners_of([run.id for run in runs])
        assert len(held) == 2
        assert all(holder.owner is None for holder in held.values())


async def _owner_names(where: str | Path) -> list[str]:
    if isinstance(where, str):
        import asyncpg

        conn = await asyncpg.connect(where)
        try:
            return sorted(row[0] for row in await conn.fetch("SELECT name FROM owners"))
        finally:
            await conn.close()
    with contextlib.closing(sqlite3.connect(where)) as conn:
        return sorted(row[0] for row in conn.execute("SELECT name FROM owners"))


async def test_writes_leave_a_running_lease_to_the_renewal_timer(where: str | Path) -> None:
    # The DB renews its lease every third of it; a write finding more than
    # half of it left does not write it again, one finding less (renewals
    # that fail or come late) renews it.
    async with DB.open(where, lease=3600) as db:
        before = await _lease(where)
        run = await db.create_run(new_run(status="running"))
        await db.complete_run(run.id, RunStatus.FAILED, "flaky")
        await db.update_run_status(run.id, RunStatus.PENDING)  # made active again: held
        assert await _lease(where) == before
        soon = datetime.now(UTC) + timedelta(minutes=20)  # less than half of the hour left
        await _lease(where, soon)
        await db.create_run(new_run())
        assert await _lease(where) > soon + timedelta(minutes=30)
        await _lease(where, soon)
        await db.complete_run(run.id, RunStatus.FAILED, "flaky")
        await db.update_run_status(run.id, RunStatus.PENDING)  # a reopen renews it too
        assert await _lease(where) > soon + timedelta(minutes=30)


async def _lease(where: str | Path, set_to: datetime | None = None) -> datetime:
    """The one owner's lease, set to ``set_to`` first if given."""
    if isinstance(where, str):
        import asyncpg

        conn = await asyncpg.connect(where)
        try:
            if set_to is not None:
                await conn.execute("UPDATE owners SET lease_until = $1", set_to)
            until: datetime = await conn.fetchval("SELECT lease_until FROM owners")
            return until
        finally:
            await conn.close()
    with contextlib.closing(sqlite3.connect(where)) as conn, conn:
        if set_to is not None:
            conn.execute("UPDATE owners SET lease_until = ?", (_text(set_to),))
        (text,) = conn.execute("SELECT lease_until FROM owners").fetchone()
        return datetime.fromisoformat(text)


def _text(moment: datetime) -> str:
    """A timestamp as the file stores it."""
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


async def test_past_max_attempts_a_run_is_abandoned_not_resumed(where: str | Path) -> None:
    async with DB.open(where, owner="a") as a, DB.open(where, owner="b") as b:
        poison = await a.create_run(new_run(status="running"))
        for attempt, (taker, dying) in enumerate([(b, a), (a, b)], start=1):
            await _expire(where, dying)  # its resumption killed the daemon
            [item] = (await taker.claim_resumable_runs(max_attempts=2)).resumed
            assert item.attempt == attempt
        await _expire(where, a)
        claimed = await b.claim_resumable_runs(max_attempts=2)
        assert claimed.resumed == []
        [abandoned] = claimed.abandoned
        assert (abandoned.id, abandoned.status) == (poison.id, RunStatus.FAILED)
        assert abandoned.error is not None
        assert "died 3 times" in abandoned.error
        assert "max_attempts is 2" in abandoned.error
        assert await b.get_run(poison.id) == abandoned
        [event] = await b.list_events(poison.id)
        assert event.event_type == "run_abandoned"
        assert event.payload == {"attempts": 3, "max_attempts": 2, "owner": "a"}
        assert await b.resumable_runs() == []
        # A run handed back by a clean close is taken whatever its count: no takeover.
        other = await a.create_run(new_run(status="running"))
    async with DB.open(where) as c:
        [item] = (await c.claim_resumable_runs(max_attempts=0)).resumed
        assert (item.run.id, item.attempt) == (other.id, 0)


async def test_a_claim_whose_caller_gave_up_hands_back_what_it_took(where: str | Path) -> None:
    async with DB.open(where, owner="died") as died, DB.open(where, owner="daemon") as db:
        ids = sorted([(await died.create_run(new_run(status="running"))).id for _ in range(50)])
        await _expire(where, died)
        claiming = asyncio.create_task(db.claim_resumable_runs())
        await asyncio.sleep(0)  # the claim is under way
        claiming.cancel()
        with pytest.raises(asyncio.CancelledError):
            await claiming
        items = await db.resumable_runs()
        # The claim committed (the takeover counted), and gave the runs back.
        assert {(item.owner, item.attempt) for item in items} == {(None, 1)}
        claimed = await db.claim_resumable_runs()
        assert sorted(item.run.id for item in claimed.resumed) == ids


async def test_a_daemon_that_dies_of_an_exception_counts_an_attempt(where: str | Path) -> None:
    async with DB.open(where, owner="maker") as maker:
        run = await maker.create_run(new_run(status="running"))
    for attempt in (1, 2, 3):
        with pytest.raises(ZeroDivisionError):
            # The first time, a DB opened by await and used with ``async with``.
            async with DB.open(where) if attempt > 1 else await DB.open(where) as db:
                [item] = (await db.claim_resumable_runs(max_attempts=2)).resumed
                assert item.attempt == attempt - 1
                raise ZeroDivisionError  # the run's resumption raises
    async with DB.open(where) as db:
        claimed = await db.claim_resumable_runs(max_attempts=2)
        assert ([r.id for r in claimed.abandoned], claimed.resumed) == ([run.id], [])


async def test_a_daemon_stopped_by_a_cancellation_or_ctrl_c_counts_nothing(
    where: str | Path,
) -> None:
    async with DB.open(where, owner="maker") as maker:
        await maker.create_run(new_run(status="running"))
    for stop in (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
        with pytest.raises(stop):
            async with DB.open(where) as db:
                [item] = (await db.claim_resumable_runs()).resumed
                assert item.attempt == 0
                raise stop
    async with DB.open(where, readonly=True) as db:
        [item] = await db.resumable_runs()
        assert (item.owner, item.attempt) == (None, 0)


async def test_max_attempts_none_never_abandons(where: str | Path) -> None:
    async with DB.open(where, owner="a") as a, DB.open(where, owner="b") as b:
        await a.create_run(new_run(status="running"))
        for attempt in range(1, 6):
            taker, loser = (b, a) if attempt % 2 else (a, b)
            await _expire(where, loser)
            [item] = (await taker.claim_resumable_runs(max_attempts=None)).resumed
            assert item.attempt == attempt


async def test_release_run_hands_a_run_back_uncounted(where: str | Path) -> None:
    async with DB.open(where, owner="stuck") as stuck, DB.open(where, owner="new") as new:
        run = await stuck.create_run(new_run(status="running"))
        assert await new.release_run(run.id) == "stuck"
        assert await new.release_run(run.id) is None
        [item] = (await new.claim_resumable_runs()).resumed
        assert (item.run.id, item.attempt, item.owner) == (run.id, 0, "new")


async def test_holds_says_whether_this_db_still_holds_a_run(where: str | Path) -> None:
    async with DB.open(where, owner="hung") as hung, DB.open(where, owner="next") as other:
        run = await hung.create_run(new_run(status="running"))
        finished = await hung.create_run(new_run(status="completed"))
        assert await hung.holds(run.id)
        assert not await other.holds(run.id)
        assert not await hung.holds(finished.id)  # held by nobody
        assert not await hung.holds("no-such-run")
        async with DB.open(where, readonly=True) as inspector:
            assert not await inspector.holds(run.id)
        await _expire(where, hung)
        assert await hung.holds(run.id)  # lapsed, but nobody has taken it yet
        [item] = (await other.claim_resumable_runs()).resumed
        assert item.run.id == run.id
        assert not await hung.holds(run.id)  # it stalled past its lease, and lost the run
        assert await other.holds(run.id)
        mine = await hung.create_run(new_run(status="running"))
        assert await hung.holds(mine.id)
        await hung.release_run(mine.id)
        assert not await hung.holds(mine.id)
        await other.complete_run(run.id, RunStatus.COMPLETED)
        assert not await other.holds(run.id)
        for bad in ("", 42, None):
            with pytest.raises(InvalidRecordError) as raised:
                await hung.holds(bad)  # type: ignore[arg-type]
            assert raised.value.field == "run_id"


async def test_no_claim_takes_a_run_between_holds_and_the_end_of_its_block(
    where: str | Path,
) -> None:
    # The fence a daemon that may stall puts around recording a unit's work.
    async with DB.open(where, owner="slow") as slow, DB.open(where, owner="next") as other:
        run = await slow.create_run(new_run(status="running"))
        unit = await slow.create_unit(new_unit(run, "u1", status="running"))
        await _expire(where, slow)
        async with slow.transaction() as tx:
            assert await tx.holds(run.id)
            claiming = asyncio.ensure_future(other.claim_resumable_runs())
            await asyncio.sleep(0.3)  # the claim is under way
            await tx.update_unit_status(unit.id, UnitStatus.COMPLETED)
        resumed = (await claiming).resumed
        # SQLite's claim waited for the block's write lock, then took the run;
        # PostgreSQL's skipped the run the block locked, which stays the slow one's.
        assert [[u.status for u in item.units] for item in resumed] in ([], [["completed"]])
        assert await slow.holds(run.id) is (resumed == [])


async def test_a_claim_beside_a_block_that_made_a_run_and_asks_holds_neither_fails(
    where: str | Path,
) -> None:
    # On PostgreSQL the claim locked the old run, then waited to forget the dead
    # owner, whose row the block's new run locked (its foreign key); the block's
    # holds() then waited for the old run: a deadlock, and the claim failed.
    async with DB.open(where, owner="slow") as slow, DB.open(where, owner="next") as other:
        old = await slow.create_run(new_run(status="running"))
        await _expire(where, slow)
        async with slow.transaction() as tx:
            made = await tx.create_run(new_run(status="running"))
            claiming = asyncio.ensure_future(other.claim_resumable_runs())
            await asyncio.sleep(0.3)  # the claim is under way
            still_held = await tx.holds(old.id)
        taken = [item.run.id for item in (await claiming).resumed]
        assert taken in ([], [old.id])
        assert still_held is (taken == [])
        assert await slow.holds(made.id)  # what the woken daemon made is its own


async def test_blocks_asking_holds_of_one_run_take_turns(where: str | Path) -> None:
    # Each unit's last block asks, then checks the run was not cancelled: two
    # such blocks at once on PostgreSQL must wait for each other, not deadlock.
    async with DB.open(where) as db:
        run = await db.create_run(new_run(status="running"))

        async def record(unit_id: str) -> None:
            unit = await db.create_unit(new_unit(run, unit_id, status="running"))
            async with db.transaction() as tx:
                assert await tx.holds(run.id)
                await asyncio.sleep(0.05)
                await tx.update_run_status(run.id, RunStatus.RUNNING, expected=RunStatus.RUNNING)
                await tx.update_unit_status(unit.id, UnitStatus.COMPLETED)

        await asyncio.gather(*(record(f"u{i}") for i in range(4)))
        units = await db.list_units_by_run(run.id)
        assert [u.status for u in units] == [UnitStatus.COMPLETED] * 4


async def test_a_renewal_that_finds_the_lease_ran_out_warns(where: str | Path) -> None:
    async with DB.open(where, owner="stalled", lease=1.0) as db:
        run = await db.create_run(new_run(status="running"))
        # A loop blocked past its lease (a blocking call in a coroutine).
        time.sleep(2.5)  # noqa: ASYNC251
        with pytest.warns(RuntimeWarning, match="ran out before it was renewed") as warned:
            await asyncio.sleep(0.8)  # a renewal comes every third of the lease
        assert "'stalled', 1 s" in str(warned[0].message)
        assert "holds(run_id)" in str(warned[0].message)
        with warnings.catch_warnings(record=True) as later:
            warnings.simplefilter("always")
            await asyncio.sleep(0.8)  # renewed on time since: nothing more to say
        assert later == []
        # A claim found it dead and forgot it: its row is gone, and so are its runs.
        forget = "DELETE FROM owners WHERE name = 'stalled'"
        await _raw(
            where, *(["PRAGMA foreign_keys = ON"] if isinstance(where, Path) else []), forget
        )
        with pytest.warns(RuntimeWarning, match="ran out before it was renewed"):
            await asyncio.sleep(0.8)
        assert not await db.holds(run.id)


async def test_each_lapse_is_warned_under_python_s_default_filter(where: str | Path) -> None:
    # "default" shows a message once per line: the same text each time showed
    # only a daemon's first stall.
    async with DB.open(where, owner="stalled", lease=1.0) as db:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("default")
            for _ in range(2):
                await _expire(where, db)
                await asyncio.sleep(0.8)
    assert [str(w.message).count("ran out before it was renewed") for w in warned] == [1, 1]
    assert "(2 times so far)" in str(warned[1].message)


async def test_a_lapse_warning_made_an_error_is_logged_and_the_renewals_go_on(
    where: str | Path,
) -> None:
    loop = asyncio.get_running_loop()
    handled: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: handled.append(context))
    try:
        async with DB.open(where, owner="stalled", lease=1.0) as db:
            await _expire(where, db)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                await asyncio.sleep(0.8)
            [context] = handled
            assert isinstance(context["exception"], RuntimeWarning)
            assert "ran out before it was renewed" in context["message"]
            await _expire(where, db)
            with pytest.warns(RuntimeWarning, match="ran out"):  # still renewing
                await asyncio.sleep(0.8)
    finally:
        loop.set_exception_handler(None)


@pytest.mark.parametrize("action", ["always", "error"])
async def test_a_db_dropped_unclosed_is_collected_and_its_runs_are_claimed(
    where: str | Path, action: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A daemon that drops a DB without closing it (an error path without
    # 'async with') once left its runs held by a live owner for good: the
    # renewal task kept the DB alive, renewing the lease of runs nobody worked.
    # Under -W error the warning is raised in the finalizer: it lets go all the same.
    unraisable: list[str] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: unraisable.append(str(u.exc_value)))
    threads = set(threading.enumerate())
    dropped = await DB.open(where, owner="dropped", lease=2.0)
    run = await dropped.create_run(new_run(status="running"))
    await dropped.append_event(run.id, "started")
    async with contextlib.aclosing(dropped.follow_events(run.id)) as following:
        await anext(following)  # on PostgreSQL, a connection of its own listens
    gone = weakref.ref(dropped)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter(action)  # aiosqlite warns of its connections too
        del dropped, following
        gc.collect()
    said = [str(w.message) for w in warned] + unraisable
    assert any("was never closed" in message for message in said)
    warned.clear()  # each names the DB as its source, and so holds it
    assert gone() is None
    async with DB.open(where, owner="next") as db:
        assert (await db.claim_resumable_runs()).resumed == []  # its lease still runs
        await asyncio.sleep(2.2)  # and is renewed by nobody
        [claimed] = (await db.claim_resumable_runs()).resumed
        assert (claimed.run.id, claimed.attempt) == (run.id, 1)

    async def left() -> set[str]:  # its threads (not asyncio's), and its server sessions
        names = {t.name for t in set(threading.enumerate()) - threads if "asyncio" not in t.name}
        if isinstance(where, str):
            import asyncpg

            conn = await asyncpg.connect(where)
            try:
                sessions = await conn.fetch(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            finally:
                await conn.close()
            names |= {f"session {row['pid']}" for row in sessions}
        return names

    for _ in range(100):
        if not await left():
            break
        await asyncio.sleep(0.05)
    assert await left() == set()


async def test_claims_read_through_a_transaction_block_see_its_work(db: DB) -> None:
    async with db.transaction() as tx:
        await tx.create_run(new_run(status="pending"))
        assert (await tx.claim_resumable_runs()).resumed == []  # its own run: held already
        assert len(await tx.resumable_runs()) == 1


async def test_a_read_only_db_owns_nothing(where: str | Path) -> None:
    async with DB.open(where):
        pass
    with pytest.raises(InvalidRecordError) as raised:
        await DB.open(where, readonly=True, owner="inspector")
    assert raised.value.field == "owner"
    for lease in (0, -1, 0.5, 1e-6, 366 * 86400, 3e11, 1e15, float("inf"), float("nan"), "30"):
        with pytest.raises(InvalidRecordError):
            await DB.open(where, lease=lease)  # type: ignore[arg-type]
    with pytest.raises(InvalidRecordError):
        await DB.open(where, owner="  ")


# Compare-and-set


async def test_update_run_status_with_expected_is_a_compare_and_set(db: DB) -> None:
    run = await db.create_run(new_run(status="running"))
    cancelled = await db.update_run_status(run.id, RunStatus.CANCELLED, expected="running")
    with pytest.raises(StatusConflictError) as raised:
        await db.update_run_status(
            run.id, RunStatus.COMPLETED, expected={RunStatus.PENDING, RunStatus.RUNNING}
        )
    assert raised.value.current is RunStatus.CANCELLED
    assert raised.value.expected == {RunStatus.PENDING, RunStatus.RUNNING}
    assert raised.value.record_id == run.id
    assert "cancelled, not pending or running" in str(raised.value)
    assert await db.get_run(run.id) == cancelled


async def test_a_run_made_active_again_is_held_by_the_db_that_did_it(where: str | Path) -> None:
    async with DB.open(where, owner="maker") as maker:
        run = await maker.create_run(new_run(status="running"))
        await maker.complete_run(run.id, RunStatus.FAILED, "flaky")
    async with DB.open(where, owner="retrier") as retrier, DB.open(where) as other:
        await retrier.update_run_status(run.id, RunStatus.PENDING, expected=RunStatus.FAILED)
        [item] = await other.resumable_runs()
        assert (item.owner, item.owner_alive, item.attempt) == ("retrier", True, 0)
        assert (await other.claim_resumable_runs()).resumed == []  # it is being worked


async def test_update_unit_status_with_expected_is_a_compare_and_set(db: DB) -> None:
    run = await db.create_run(new_run())
    unit = await db.create_unit(new_unit(run, "u1", status="ready"))
    await db.update_unit_status(unit.id, UnitStatus.RUNNING, expected=UnitStatus.READY)
    with pytest.raises(StatusConflictError) as raised:
        await db.update_unit_status(unit.id, UnitStatus.RUNNING, expected=[UnitStatus.READY])
    assert raised.value.current is UnitStatus.RUNNING
    assert (await db.get_unit(unit.id)).status is UnitStatus.RUNNING  # type: ignore[union-attr]


async def test_complete_run_twice_changes_nothing_the_second_time(db: DB) -> None:
    run = await db.create_run(new_run(status="running"))
    done = await db.complete_run(run.id, RunStatus.CANCELLED, error="stopped")
    assert await db.complete_run(run.id, RunStatus.CANCELLED, error="again") == done
    with pytest.raises(StatusConflictError) as raised:
        await db.complete_run(run.id, RunStatus.COMPLETED)
    assert raised.value.current is RunStatus.CANCELLED
    assert [e.event_type for e in await db.list_events(run.id)] == ["run_completed"]
    assert await db.get_run(run.id) == done


@pytest.mark.parametrize("apart", [False, True], ids=["one DB", "two DBs"])
async def test_stop_racing_completion_has_exactly_one_outcome(
    where: str | Path, apart: bool
) -> None:
    async with DB.open(where) as stopper, DB.open(where) as worker:
        finisher = worker if apart else stopper
        for _ in range(100):
            run = await stopper.create_run(new_run(status="running"))
            outcomes = await asyncio.gather(
                stopper.complete_run(run.id, RunStatus.CANCELLED, "stopped"),
                finisher.complete_run(run.id, RunStatus.COMPLETED),
                return_exceptions=True,
            )
            winners = [o for o in outcomes if not isinstance(o, BaseException)]
            losers = [o for o in outcomes if isinstance(o, BaseException)]
            assert len(winners) == 1
            assert [type(o) for o in losers] == [StatusConflictError]
            stored = await stopper.get_run(run.id)
            assert stored == winners[0]
            completions = await stopper.list_events(run.id)
            assert [e.payload["status"] for e in completions] == [stored.status.value]


# A real client's data


async def test_a_run_without_a_branch_or_a_parallelism(db: DB) -> None:
    first = await db.create_run(new_run(feature_branch=None, parallelism=None, status="running"))
    second = await db.create_run(new_run(feature_branch=None, status="running"))
    assert first.feature_branch is first.parallelism is None
    assert await db.get_run(first.id) == first
    # The one-active-run rule is for runs on a branch: these are nobody's rivals.
    assert {r.id for r in await db.list_incomplete_runs()} == {first.id, second.id}
    await db.update_run_status(second.id, RunStatus.PENDING)
    claimed = [r.run.id for r in await db.resumable_runs()]
    assert claimed == sorted([first.id, second.id])


@pytest.mark.parametrize(
    ("field", "value", "hint"),
    [("feature_branch", "", "a run without a branch"), ("parallelism", 0, "default")],
)
def test_empty_and_zero_are_refused_pointing_to_none(field: str, value: object, hint: str) -> None:
    with pytest.raises(InvalidRecordError) as raised:
        new_run(**{field: value})
    assert "None means" in str(raised.value)
    assert hint in str(raised.value)


async def test_a_scheduler_s_unit_states(db: DB) -> None:
    run = await db.create_run(new_run(status="running"))
    ready = await db.create_unit(new_unit(run, "a", status="ready"))
    blocked = await db.create_unit(new_unit(run, "b", status=UnitStatus.BLOCKED))
    assert (ready.completed_at, blocked.completed_at) == (None, None)
    cancelled = await db.update_unit_status(blocked.id, UnitStatus.CANCELLED)
    assert cancelled.completed_at is not None  # cancelled is finished, as for runs
    assert [u.unit_id for u in await db.list_units_by_status(run.id, UnitStatus.READY)] == ["a"]


async def test_runs_made_by_an_earlier_schema_are_claimed_after_migration(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    make_version_1(old, V1_ROWS)
    async with DB.open(old, owner="upgraded") as db:
        claimed = await db.claim_resumable_runs()
        [item] = claimed.resumed
        assert (item.run.id, item.attempt, item.owner) == (
            "01J0000000000000000000000A",
            0,
            "upgraded",
        )
        assert [u.unit_id for u in item.units] == ["u1"]
        assert item.next_sequence == 3
        await db.create_unit(UnitRecord(run_id=item.run.id, unit_id="u2", status="blocked"))
        done = await db.create_run(new_run(feature_branch=None, parallelism=None))
        assert await db.get_run(done.id) == done
        assert await db.check() == []


async def test_the_command_line_s_runs_come_with_their_holders_in_one_read(
    where: str | Path,
) -> None:
    async with DB.open(where, owner="daemon-a") as db:
        held = await db.create_run(new_run(status="running"))
        done = await db.create_run(new_run(status="completed"))
        async with DB.open(where, owner="hung") as other:
            lost = await other.create_run(new_run(status="pending"))
            await _expire(where, other)
            for filters in (
                {},
                {"newest_first": True},
                {"status": ["running", "pending"]},
                {"after": held.id, "limit": 1},
                {"status": []},
            ):
                owned = [pair async for pair in db._iter_owned_runs(**filters)]  # type: ignore[arg-type]
                assert [run for run, _ in owned] == [run async for run in db.iter_runs(**filters)]  # type: ignore[arg-type]
                holders = await db._owners_of([run.id for run, _ in owned])
                assert {run.id: holder for run, holder in owned} == holders
            found = {run.id: holder for run, holder in [p async for p in db._iter_owned_runs()]}
            assert found == {
                held.id: _owner.Held("daemon-a", True, 0),
                done.id: _owner.Held(None, False, 0),  # finished: held by nobody
                lost.id: _owner.Held("hung", False, 0),
            }
