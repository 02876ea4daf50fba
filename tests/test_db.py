"""Opening, closing, read-only mode and the life of a DB object."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from daemon_db import (
    DB,
    ClosedError,
    DaemonDBError,
    DatabaseError,
    InvalidRecordError,
    ReadOnlyError,
    RunStatus,
    UnitStatus,
    new_run_id,
)
from tests.helpers import dump, new_run, new_unit, report

# Every method of the API, called with valid arguments.
Call = Callable[[DB, str], Awaitable[object]]
READS: dict[str, Call] = {
    "get_run": lambda db, run_id: db.get_run(run_id),
    "get_run_by_branch": lambda db, _: db.get_run_by_branch("feature/x", "/srv/x"),
    "list_runs_by_status": lambda db, _: db.list_runs_by_status(RunStatus.PENDING),
    "list_incomplete_runs": lambda db, _: db.list_incomplete_runs(),
    "list_runs": lambda db, _: db.list_runs(status="pending", limit=5),
    "get_unit": lambda db, run_id: db.get_unit(f"{run_id}_u"),
    "list_units_by_run": lambda db, run_id: db.list_units_by_run(run_id),
    "list_units_by_status": lambda db, run_id: db.list_units_by_status(run_id, UnitStatus.PENDING),
    "get_next_sequence": lambda db, run_id: db.get_next_sequence(run_id),
    "list_events": lambda db, run_id: db.list_events(run_id),
    "list_events_since": lambda db, run_id: db.list_events_since(run_id, 1),
    "resumable_runs": lambda db, _: db.resumable_runs(),
}
WRITES: dict[str, Call] = {
    "create_run": lambda db, _: db.create_run(new_run()),
    "update_run_status": lambda db, run_id: db.update_run_status(run_id, RunStatus.RUNNING),
    "delete_run": lambda db, run_id: db.delete_run(run_id),
    "create_unit": lambda db, run_id: db.create_unit(
        new_unit(new_run(id=run_id), "u2", status="running")
    ),
    "update_unit_status": lambda db, run_id: db.update_unit_status(f"{run_id}_u", "failed"),  # type: ignore[arg-type]
    "update_unit_branch": lambda db, run_id: db.update_unit_branch(f"{run_id}_u", "b", "/wt"),
    "append_event": lambda db, run_id: db.append_event(run_id, "tick", payload={"n": 1}),
    "complete_run": lambda db, run_id: db.complete_run(run_id, RunStatus.COMPLETED),
}


async def _populated(path: Path) -> str:
    async with DB.open(path) as db:
        run = await db.create_run(new_run())
        await db.create_unit(new_unit(run, "u"))
        await db.append_event(run.id, "tick")
        return run.id


async def test_open_is_awaitable_and_an_async_context_manager(db_path: Path) -> None:
    db = await DB.open(db_path)
    run = await db.create_run(new_run())
    await db.close()
    async with DB.open(db_path) as again:
        assert await again.get_run(run.id) == run
        assert again.path == str(db_path)
    with pytest.raises(ClosedError):
        await again.get_run(run.id)


async def test_an_opened_db_is_an_async_context_manager_too(db_path: Path) -> None:
    async with await DB.open(db_path) as db:  # as aiosqlite's and asyncpg's objects are
        run = await db.create_run(new_run())
    with pytest.raises(ClosedError):
        await db.get_run(run.id)
    db = await DB.open(db_path, readonly=True)
    async with db as same:
        assert same is db
        assert await db.get_run(run.id) == run
    with pytest.raises(ClosedError):  # not a second life
        async with db:
            pass


async def test_a_db_refuses_calls_from_another_event_loop(where: str | Path) -> None:
    async with DB.open(where) as db:
        run = await db.create_run(new_run(status="running"))

        async def elsewhere() -> None:
            # Its lease would stop with its own loop, and another daemon take its runs.
            with pytest.raises(DaemonDBError, match="opened on another event loop"):
                await db.get_run(run.id)
            with pytest.raises(DaemonDBError, match="opened on another event loop"):
                await db.append_event(run.id, "tick")
            with pytest.raises(DaemonDBError, match="opened on another event loop"):
                [item async for item in db.iter_runs()]
            with pytest.raises(DaemonDBError, match="opened on another event loop"):
                await db.close()

        await asyncio.to_thread(asyncio.run, elsewhere())
        assert await db.get_run(run.id) == run  # on its own loop, as before
        assert await db.get_next_sequence(run.id) == 1


async def test_a_db_used_without_await_says_what_is_missing(db_path: Path) -> None:
    opening = DB.open(db_path)
    with pytest.raises(AttributeError, match=r"'db = await DB.open\(...\)'"):
        opening.create_run  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'nothing'"):
        opening.nothing  # type: ignore[attr-defined]  # noqa: B018
    async with opening as db:  # and it still opens
        assert await db.list_runs() == []


def test_a_db_opened_with_a_plain_with_says_async_with(db_path: Path) -> None:
    # It said only "does not support the context manager protocol", and then
    # "coroutine was never awaited".
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a "never awaited" RuntimeWarning fails the test
        with pytest.raises(TypeError, match=r"'async with DB\.open"), DB.open(db_path):
            pass
        gc.collect()
    assert not db_path.exists()


@pytest.mark.parametrize("given", ["sqlite:///state.db", "sqlite3://state.db", "FILE:///state.db"])
async def test_a_url_of_another_scheme_is_refused_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    # Taken for a path, "sqlite:///state.db" made a folder "sqlite:" and a file in it.
    monkeypatch.chdir(tmp_path)
    for readonly in (False, True):
        with pytest.raises(InvalidRecordError, match="is a URL daemon_db does not open") as raised:
            await DB.open(given, readonly=readonly)
        assert raised.value.value == given
    assert list(tmp_path.iterdir()) == []


async def test_a_path_through_a_file_says_it_is_not_a_folder(tmp_path: Path) -> None:
    # SQLite said only "unable to open database file".
    (tmp_path / "state.db").write_bytes(b"")
    for inner in ("inner.db", "deeper/inner.db"):
        with pytest.raises(DatabaseError, match=r"state\.db is not a folder"):
            await DB.open(tmp_path / "state.db" / inner)


async def test_open_accepts_a_path_like_and_a_str(db_path: Path) -> None:
    async with DB.open(str(db_path)) as db:
        assert not db.readonly
    async with DB.open(db_path, readonly=True) as inspector:
        assert inspector.readonly


@pytest.mark.parametrize("name", ["file:state.db", "file:?mode=memory", "a b#c?d%20.db"])
async def test_a_name_is_a_file_name_never_a_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    # This SQLite reads a name starting with "file:" as a URI unless told not
    # to: "file:state.db" opened state.db, another file, readable by all.
    monkeypatch.chdir(tmp_path)
    async with DB.open(name) as db:
        run = await db.create_run(new_run())
    async with DB.open(name, readonly=True) as inspector:
        assert await inspector.get_run(run.id) == run
    # (and the empty -wal and -shm the inspector left, as readers do)
    assert {path.name for path in tmp_path.iterdir()} - {f"{name}-wal", f"{name}-shm"} == {name}
    assert (tmp_path / name).stat().st_mode & 0o077 == 0


async def test_a_link_to_a_file_yet_to_be_made_makes_it_owner_only(tmp_path: Path) -> None:
    link, real = tmp_path / "state.db", tmp_path / "real" / "state.db"
    link.symlink_to(real)
    async with DB.open(link) as db:
        await db.create_run(new_run())
    assert link.is_symlink()
    assert real.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("name", [*READS, *WRITES, "transaction", "follow_events"])
async def test_every_call_after_close_raises_closed_error(db_path: Path, name: str) -> None:
    run_id = await _populated(db_path)
    db = await DB.open(db_path)
    await db.close()
    with pytest.raises(ClosedError) as raised:
        if name == "transaction":
            async with db.transaction():
                pass
        elif name == "follow_events":
            db.follow_events(run_id)
        else:
            await {**READS, **WRITES}[name](db, run_id)
    assert str(db_path) in str(raised.value)


async def test_close_is_safe_twice_and_concurrently(db_path: Path) -> None:
    db = await DB.open(db_path)
    await asyncio.gather(db.close(), db.close())
    await db.close()


async def test_close_waits_for_writes_under_way(db_path: Path) -> None:
    db = await DB.open(db_path)
    run = await db.create_run(new_run())
    appends = [asyncio.create_task(db.append_event(run.id, "tick")) for _ in range(200)]
    await asyncio.sleep(0)  # the appends are queued, most not yet done
    await db.close()
    assert all(task.done() and task.exception() is None for task in appends)
    async with DB.open(db_path) as again:
        assert len(await again.list_events(run.id)) == 200


async def test_close_waits_for_a_transaction_under_way(where: str | Path) -> None:
    db = await DB.open(where)
    run = await db.create_run(new_run())
    inside = asyncio.Event()

    async def block() -> None:
        async with db.transaction() as tx:
            # The block holds the run's row (on PostgreSQL, its lock): ending
            # the lease at close() must not wait on it, nor deadlock with it.
            await tx.append_event(run.id, "in the block")
            inside.set()
            await asyncio.sleep(0.2)
            await tx.append_event(run.id, "still in the block")  # closing has begun
            await db.append_event(run.id, "joined")

    task = asyncio.create_task(block())
    await inside.wait()
    await db.close()
    assert task.done()
    assert task.exception() is None
    async with DB.open(where) as again:
        assert [e.event_type for e in await again.list_events(run.id)] == [
            "in the block",
            "still in the block",
            "joined",
        ]
        # And the lease ended as at any clean close: the run is free, no attempt counted.
        claimed = await again.claim_resumable_runs()
        assert [(item.run.id, item.attempt) for item in claimed.resumed] == [(run.id, 0)]


async def test_close_inside_a_transaction_block_is_refused(db: DB) -> None:
    async with db.transaction():
        with pytest.raises(DaemonDBError):
            await db.close()


async def test_read_only_db_reads_and_refuses_every_write(db_path: Path) -> None:
    run_id = await _populated(db_path)
    before = dump(db_path)
    async with DB.open(db_path, readonly=True) as inspector:
        for read in READS.values():
            await read(inspector, run_id)
        assert await inspector.get_run(run_id) is not None
        for write in WRITES.values():
            with pytest.raises(ReadOnlyError):
                await write(inspector, run_id)
    assert dump(db_path) == before


async def test_read_only_db_sees_what_a_running_daemon_commits(db_path: Path) -> None:
    async with DB.open(db_path) as daemon, DB.open(db_path, readonly=True) as inspector:
        run = await daemon.create_run(new_run(status="running"))
        assert await inspector.list_incomplete_runs() == [run]
        await daemon.complete_run(run.id, RunStatus.COMPLETED)
        assert await inspector.list_incomplete_runs() == []
        assert len(await inspector.list_events(run.id)) == 1


async def test_many_db_objects_on_one_file(db_path: Path) -> None:
    dbs = [await DB.open(db_path) for _ in range(5)]
    try:
        run = await dbs[0].create_run(new_run())
        await asyncio.gather(*(db.append_event(run.id, "tick") for db in dbs for _ in range(20)))
        assert [e.sequence for e in await dbs[-1].list_events(run.id)] == list(range(1, 101))
    finally:
        for db in dbs:
            await db.close()


async def test_repr_names_the_path_and_state(db_path: Path) -> None:
    db = await DB.open(db_path)
    assert repr(db) == f"<DB {str(db_path)!r} open>"
    await db.close()
    assert repr(db) == f"<DB {str(db_path)!r} closed>"


def test_a_db_never_closed_warns_and_does_not_hang_exit(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, gc, warnings
        from daemon_db import DB, Run
        warnings.simplefilter("always")
        leaked = []

        async def main():
            db = await DB.open({str(tmp_path / "state.db")!r})
            await db.create_run(Run(feature_branch="f", repo_path="/r", target_branch="main",
                                    tasks_dir="t", parallelism=1))
            leaked.append(db)

        asyncio.run(main())
        leaked.clear()
        gc.collect()
        print("exiting")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "exiting" in result.stdout
    assert "ResourceWarning" in result.stderr
    assert "was never closed" in result.stderr
    report("lifecycle: a DB never closed warns (ResourceWarning) and does not hang exit;")
    report("  close() finishes the writes and blocks under way; many DB objects share a file")


async def test_open_refuses_bad_settings(db_path: Path) -> None:
    from daemon_db import InvalidRecordError

    for kwargs in [
        {"synchronous": "FAST"},
        {"busy_timeout": -1},
        {"busy_timeout": "5"},
        {"busy_timeout": float("nan")},
        {"readonly": "yes"},
    ]:
        with pytest.raises(InvalidRecordError):
            DB.open(db_path, **kwargs)  # type: ignore[arg-type]
    for path in ["", "   ", 5, b"bytes.db"]:
        with pytest.raises(InvalidRecordError):
            DB.open(path)  # type: ignore[arg-type]
    assert not os.path.exists(db_path)


async def test_unknown_run_ids_are_fine_for_reads(db: DB) -> None:
    missing = new_run_id()
    assert await db.get_run(missing) is None
    assert await db.delete_run(missing) is False
