"""backup() never replaces the file it copies, nor anything that is not a file to replace.

Renaming a copy over the live database (the same file through any link, or its
-wal or -shm) corrupts it under the connections that hold it open.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from daemon_db import DB, DatabaseError, _process
from daemon_db._sqlite import maintenance
from tests.helpers import dump, new_run, report

# What these check is the SQLite engine's own (its file, writer, thread or
# limits); the PostgreSQL engine is checked by the contract tests and test_hosts.py.
pytestmark = pytest.mark.sqlite_only


async def test_backup_refuses_its_own_database_however_it_is_named(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with DB.open(path) as db:
        run = await db.create_run(new_run(status="running"))
        await db.append_event(run.id, "first")
        os.symlink(path, tmp_path / "link.db")
        os.link(path, tmp_path / "hard.db")
        same = [
            path,
            str(path),
            tmp_path / "." / "state.db",
            tmp_path / "link.db",
            tmp_path / "hard.db",
            Path(f"{path}-wal"),
            Path(f"{path}-shm"),
            Path(f"{path}-journal"),  # not there now, but SQLite would take it for the journal
        ]
        for destination in same:
            # Compared as content: the checkpointer may copy WAL pages into the
            # file meanwhile, which changes its bytes but not what it holds.
            before = dump(path)
            with pytest.raises(DatabaseError, match="is the database being copied") as raised:
                await db.backup(destination, overwrite=True)
            assert raised.value.path == str(destination)
            assert dump(path) == before
        assert not Path(f"{path}-journal").exists()

        # The daemon goes on writing: the file was never replaced under it.
        for n in range(3000):
            await db.append_event(run.id, "after", payload={"n": n})
        assert await db.check() == []
        assert len(await db.list_events(run.id)) == 3001
    report(
        f"backup safety: {len(same)} names of the live database (links, -wal, -shm) refused,"
        " file unchanged; 3,000 writes after it all stored, check clean"
    )


async def test_a_db_opened_by_a_relative_path_keeps_its_file_after_a_chdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A daemon that opens "state.db" from its config and then changes directory
    # (daemonizing to /): backup() took its own -wal for another file and
    # replaced it, losing acknowledged writes; stats() gave another file's size.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "state.db").write_bytes(b"x" * 12345)
    monkeypatch.chdir(tmp_path)
    async with DB.open("state.db") as db:
        assert db.path == str(tmp_path / "state.db")
        run = await db.create_run(new_run(status="running"))
        monkeypatch.chdir(tmp_path / "elsewhere")
        stats = await db.stats()
        # Its own file, in whole pages (the checkpointer may grow it meanwhile), not
        # the other state.db of 12,345 bytes.
        assert stats.file_bytes >= 4096
        assert stats.file_bytes % 4096 == 0
        for own in ("state.db-wal", "state.db-shm"):
            with pytest.raises(DatabaseError, match="is the database being copied"):
                await db.backup(tmp_path / own, overwrite=True)
        await db.backup("copy.db")  # a relative destination is where the caller is now
        for n in range(500):
            await db.append_event(run.id, "after", payload={"n": n})
    async with DB.open(tmp_path / "state.db", readonly=True) as db:
        assert len(await db.list_events(run.id)) == 500
    async with DB.open(tmp_path / "elsewhere" / "copy.db", readonly=True) as copy:
        assert await copy.get_run(run.id) == run
    # As the kernel reads it: the link first, then "..", not "..": first (abspath).
    (tmp_path / "deep" / "er").mkdir(parents=True)
    (tmp_path / "elsewhere" / "link").symlink_to(tmp_path / "deep" / "er")
    async with DB.open("link/../state.db") as db:  # deep/state.db, a new one
        assert await db.get_run(run.id) is None
    assert (tmp_path / "deep" / "state.db").exists()
    monkeypatch.chdir(tmp_path / "deep" / "er")
    async with DB.open("../../state.db", readonly=True) as db:
        assert await db.get_run(run.id) == run
    (tmp_path / "gone").mkdir()
    monkeypatch.chdir(tmp_path / "gone")
    (tmp_path / "gone").rmdir()
    with pytest.raises(DatabaseError, match="a relative path, in no folder"):
        await DB.open("state.db")


async def test_a_file_with_two_names_is_not_opened(tmp_path: Path) -> None:
    # SQLite keeps a log beside each name a file is opened by: a process writing
    # through link.db while another wrote through state.db lost that one's writes.
    path = tmp_path / "state.db"
    async with DB.open(path) as db:
        await db.create_run(new_run())
    os.link(path, tmp_path / "link.db")
    before = sorted(p.name for p in tmp_path.iterdir())
    for name in ("state.db", "link.db"):
        for readonly in (False, True):
            with pytest.raises(DatabaseError, match=r"has 2 names \(hard links\)") as raised:
                await DB.open(tmp_path / name, readonly=readonly)
            assert raised.value.path == str(tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no log made beside either
    os.unlink(tmp_path / "link.db")
    async with DB.open(path) as db:
        assert len(await db.list_runs()) == 1


async def test_backup_refuses_a_folder_and_anything_that_is_not_a_regular_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    async with DB.open(path) as db:
        await db.create_run(new_run())
        with pytest.raises(DatabaseError, match="is a folder"):
            await db.backup(tmp_path, overwrite=True)
        with pytest.raises(DatabaseError, match="not a regular file"):
            await db.backup(fifo, overwrite=True)
        if os.path.exists("/dev/null"):
            with pytest.raises(DatabaseError, match="not a regular file"):
                await db.backup("/dev/null", overwrite=True)
    assert fifo.is_fifo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe", "state.db"]


async def test_backup_refuses_a_database_that_may_be_in_use(tmp_path: Path) -> None:
    source, other = tmp_path / "state.db", tmp_path / "other.db"
    async with DB.open(source) as db, DB.open(other) as in_use:
        await db.create_run(new_run())
        await in_use.create_run(new_run())
        before = dump(other)
        with pytest.raises(DatabaseError, match="-wal file beside it"):
            await db.backup(other, overwrite=True)
        assert len(await in_use.list_runs()) == 1
        assert dump(other) == before
    async with DB.open(source) as db:  # closed, its -wal and -shm gone: replacing it is fine
        await db.backup(other, overwrite=True)
        assert dump(other) == dump(source)


async def test_backup_beside_a_writing_process_is_refused_on_the_command_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    async with DB.open(path) as db:
        run = await db.create_run(new_run(status="running"))
        writing = asyncio.create_task(_append(db, run.id, 500))
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "daemon_db", "backup", str(path), "--db", str(path), "--force"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        await writing
        assert result.returncode == 1
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1
        assert "is the database being copied" in lines[0]
        assert await db.check() == []
        assert len(await db.list_events(run.id)) == 500


async def _append(db: DB, run_id: str, count: int) -> None:
    for n in range(count):
        await db.append_event(run_id, "tick", payload=n)


_FILLING = """
import asyncio, resource, signal, sys
from daemon_db import DB, DatabaseError
# Writes past this size fail, as on a full disk (the file being copied is only read).
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))
async def main(source, destination):
    async with DB.open(source, readonly=True) as db:
        try:
            await db.backup(destination)
        except DatabaseError as exc:
            print(exc.path)
asyncio.run(main(*sys.argv[1:]))
"""


async def test_a_copy_that_cannot_be_written_names_its_destination_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    # A full disk under the copy blamed the database being copied, and left a
    # -journal beside the destination.
    path, folder = tmp_path / "state.db", tmp_path / "copies"
    folder.mkdir()
    async with DB.open(path) as db:
        run = await db.create_run(new_run())
        async with db.transaction() as tx:
            for n in range(1000):
                await tx.append_event(run.id, "tick", payload={"n": n, "pad": "x" * 900})
    before = dump(path)
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _FILLING, str(path), str(folder / "copy.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"{folder / 'copy.db'}\n"
    assert list(folder.iterdir()) == []
    assert dump(path) == before


async def test_a_backup_removes_the_partial_copies_of_backups_killed_mid_copy(
    tmp_path: Path,
) -> None:
    # Killed before its rename, a backup left its hidden partial copy for good.
    path = tmp_path / "state.db"
    async with DB.open(path) as db:
        await db.create_run(new_run())
        me = _process.this_process()
        child = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
        await child.wait()
        parent = os.getppid()
        here = maintenance._tag(me)
        dead = tmp_path / f".backup-{me.host}-{here}-{child.pid}-12345-abcdefgh.db"
        started = _process._started(parent)
        alive = tmp_path / f".backup-{me.host}-{here}-{parent}-{started}-abcdefgh.db"
        elsewhere = tmp_path / f".backup-another-host-0123456789ab-{child.pid}-12345-abcdefgh.db"
        # A container sharing the host name and the folder: its pids are its own.
        container = tmp_path / f".backup-{me.host}-0123456789ab-{child.pid}-12345-abcdefgh.db"
        for partial in (dead, alive, elsewhere, container):
            partial.write_bytes(b"half a copy")
        await db.backup(tmp_path / "copy.db")
    left = {p.name for p in tmp_path.iterdir() if p.name.startswith(".backup-")}
    assert left == {alive.name, elsewhere.name, container.name}
