"""Opening a store: as any coroutine is opened, and never failing at once beside another opener."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from pathlib import Path

import pytest

from daemon_db import DB, DaemonDBError
from daemon_db._sqlite import schema
from tests.helpers import new_run, report


def test_asyncio_run_takes_db_open(db_path: Path) -> None:
    db = asyncio.run(DB.open(db_path))
    assert isinstance(db, DB)
    asyncio.run(db.close())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_db_whose_loop_closed_without_cancelling_its_tasks_closes_from_another(
    db_path: Path,
) -> None:
    # The lease renewal, a task of the dead loop, could not be cancelled there:
    # close() raised RuntimeError, every time, and the threads kept the file open.
    before = set(threading.enumerate())
    loop = asyncio.new_event_loop()
    db = loop.run_until_complete(DB.open(db_path))
    started = set(threading.enumerate()) - before
    loop.close()
    asyncio.run(db.close())
    assert [t.name for t in started if t.is_alive() and "orphans" not in t.name] == []
    with pytest.raises(DaemonDBError, match="closed"):
        asyncio.run(db.get_run("r"))


@pytest.mark.filterwarnings(
    "ignore::ResourceWarning", "ignore::pytest.PytestUnraisableExceptionWarning"
)
def test_a_postgresql_db_whose_loop_closed_says_so_when_closed(postgres_url: str) -> None:
    # asyncpg's connections belong to the loop that made them: asyncio.run ended
    # them with it. close() on another loop raised a raw RuntimeError.
    db = asyncio.run(DB.open(postgres_url))
    with pytest.raises(DaemonDBError, match="opened on an event loop that has closed"):
        asyncio.run(db.close())
    del db
    gc.collect()  # its sockets' and its own never-closed warnings, here rather than later


async def test_create_task_and_gather_take_db_open(db_path: Path) -> None:
    db = await asyncio.create_task(DB.open(db_path))
    await db.close()
    first, second = await asyncio.gather(DB.open(db_path), DB.open(db_path, readonly=True))
    await asyncio.gather(first.close(), second.close())


async def test_a_cancelled_open_leaves_nothing_behind_and_warns_nothing(db_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine was never awaited" included
        for _ in range(20):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(DB.open(db_path), 0)
            gc.collect()
    async with DB.open(db_path) as db:  # the file is usable
        await db.create_run(new_run())


def test_threads_opening_one_new_file_at_once_never_get_sqlite_busy(tmp_path: Path) -> None:
    # Switching a new file to WAL can fail at once with SQLITE_BUSY beside another
    # connection doing the same: SQLite does not call the busy handler there. Without
    # the retry, this failed in about 1 round of 300 on a loaded machine.
    rounds, openers = 150, 8
    failures: list[BaseException] = []

    def open_and_close(path: Path) -> None:
        try:
            schema.open_writer(str(path), busy_timeout=5.0, synchronous="NORMAL").close()
        except BaseException as exc:
            failures.append(exc)

    for n in range(rounds):
        path = tmp_path / f"{n}.db"
        threads = [threading.Thread(target=open_and_close, args=(path,)) for _ in range(openers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []


async def test_many_db_objects_open_one_new_file_at_once_again_and_again(tmp_path: Path) -> None:
    rounds = 40
    for n in range(rounds):
        path = tmp_path / f"{n}.db"
        dbs = await asyncio.gather(*(DB.open(path) for _ in range(6)))
        await asyncio.gather(*(db.create_run(new_run()) for db in dbs))
        assert len(await dbs[0].list_runs()) == 6
        await asyncio.gather(*(db.close() for db in dbs))
    report(f"opening: {rounds} new files each opened by 6 DB objects at once, none refused")
