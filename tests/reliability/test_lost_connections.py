"""When PostgreSQL ends a transaction by itself, nothing may look committed.

SQLite's version of this is test_lost_transactions.py. On PostgreSQL the
server ends a transaction by ending its session: an administrator's
``pg_terminate_backend``, ``idle_in_transaction_session_timeout``, a server
restart, a network cut. Whatever asyncpg raises then (and it raises several
kinds, depending on whether it had noticed the socket close), the caller must
see a DatabaseError, a block must say nothing of it was committed, and the
pool must hand out working connections again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from daemon_db import DB, DaemonDBError, DatabaseError, Run, RunStatus
from daemon_db._postgres import events, owners
from tests import postgres_server
from tests.helpers import new_run, report

NOTHING = "nothing done in this transaction block is committed"
NOTHING_IN_A_WRITE = "nothing done in this write is committed"


@pytest.fixture
async def admin(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, as an administrator's psql would be."""
    conn = await asyncpg.connect(postgres_url)
    try:
        yield conn
    finally:
        await conn.close()


async def _terminate(admin: asyncpg.Connection, pid: int) -> None:
    """End the session ``pid`` as an administrator would, and wait until it is gone."""
    assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    for _ in range(500):
        if not await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} still runs")


async def _waiting_pid(admin: asyncpg.Connection) -> int:
    """The pid of the daemon_db session waiting for a row lock."""
    for _ in range(500):
        pid = await admin.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'daemon_db'"
            " AND wait_event_type = 'Lock'"
        )
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.01)
    raise AssertionError("no daemon_db session waits for the lock")


async def _works(db: DB, run: Run) -> None:
    """The pool hands out working connections: lone calls and a block both succeed."""
    await db.append_event(run.id, "lone")
    async with db.transaction() as tx:
        await tx.append_event(run.id, "in a block")
    events = await db.list_events(run.id)
    assert [e.event_type for e in events][-2:] == ["lone", "in a block"]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert await db.check() == []


def _not_asyncpg(error: BaseException) -> None:
    """The error and everything it chains to are daemon_db's, not asyncpg's."""
    assert isinstance(error, DatabaseError), repr(error)
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


@pytest.mark.parametrize("noticed", [False, True], ids=["at-once", "after-the-close-is-seen"])
async def test_a_block_whose_session_is_terminated_raises_and_commits_nothing(
    postgres_url: str, admin: asyncpg.Connection, noticed: bool
) -> None:
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run(status="running"))
        with pytest.raises(DatabaseError, match=NOTHING) as left:
            async with db.transaction() as tx:
                await tx.append_event(run.id, "first")
                await tx.update_run_status(run.id, RunStatus.FAILED)
                connection = tx._connection  # type: ignore[attr-defined]
                await _terminate(admin, connection.get_server_pid())
                if noticed:
                    await asyncio.sleep(0.3)  # the event loop sees the socket close
                with pytest.raises(DatabaseError, match=NOTHING) as lost:
                    await tx.append_event(run.id, "second")
                _not_asyncpg(lost.value)
                # The block is dead: every later call raises, reads and joined calls too.
                with pytest.raises(DatabaseError, match=NOTHING):
                    await tx.get_run(run.id)
                with pytest.raises(DatabaseError, match=NOTHING):
                    await db.complete_run(run.id, RunStatus.COMPLETED)
        _not_asyncpg(left.value)
        assert left.value.path == db.path
        assert await db.get_run(run.id) == run
        assert await db.list_events(run.id) == []
        await _works(db, run)


@pytest.mark.parametrize("noticed", [False, True], ids=["at-once", "after-the-close-is-seen"])
async def test_a_block_whose_session_ends_before_it_commits_raises_on_leaving(
    postgres_url: str, admin: asyncpg.Connection, noticed: bool
) -> None:
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run(status="running"))
        with pytest.raises(DatabaseError) as left:
            async with db.transaction() as tx:
                await tx.append_event(run.id, "written")
                await _terminate(admin, tx._connection.get_server_pid())  # type: ignore[attr-defined]
                if noticed:
                    await asyncio.sleep(0.3)
        _not_asyncpg(left.value)
        if noticed:  # known lost before COMMIT was sent: certain
            assert NOTHING in str(left.value)
        else:
            # COMMIT went out on a socket the server had closed: from the client's
            # side its outcome is unknown, and the error says so rather than guess.
            assert NOTHING in str(left.value) or "is unknown" in str(left.value)
        assert await db.list_events(run.id) == []
        await _works(db, run)


async def test_leaving_a_dead_block_with_an_error_also_says_nothing_was_committed(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run(status="running"))
        with pytest.raises(DatabaseError, match=NOTHING) as left:
            async with db.transaction() as tx:
                await tx.append_event(run.id, "written")
                await _terminate(admin, tx._connection.get_server_pid())  # type: ignore[attr-defined]
                try:
                    await tx.append_event(run.id, "lost")
                except DatabaseError:
                    raise KeyError("the caller's own error") from None
        assert isinstance(left.value.__context__, KeyError)
        assert await db.list_events(run.id) == []
        await _works(db, run)


async def test_cancelling_a_block_whose_session_died_still_raises_cancelled_error(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run(status="running"))
        dead = asyncio.Event()

        async def work() -> None:
            async with db.transaction() as tx:
                await tx.append_event(run.id, "written")
                await _terminate(admin, tx._connection.get_server_pid())  # type: ignore[attr-defined]
                with pytest.raises(DatabaseError):
                    await tx.append_event(run.id, "lost")
                dead.set()
                await asyncio.sleep(3600)

        task = asyncio.create_task(work())
        await dead.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await db.list_events(run.id) == []
        await _works(db, run)


async def test_an_idle_in_transaction_timeout_ends_the_block_and_says_so(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    database = await admin.fetchval("SELECT current_database()")
    await admin.execute(
        f'ALTER DATABASE "{database}" SET idle_in_transaction_session_timeout = 200'
    )
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run(status="running"))
        with pytest.raises(DatabaseError, match=NOTHING) as left:
            async with db.transaction() as tx:
                await tx.append_event(run.id, "written")
                await asyncio.sleep(1)  # the server ends the session meanwhile
                with pytest.raises(DatabaseError, match=NOTHING) as lost:
                    await tx.append_event(run.id, "too late")
                _not_asyncpg(lost.value)
                # What happened, not asyncpg's words for a pooled connection
                # ("released back to the pool"), which read as the caller's misuse.
                assert lost.value.reason.startswith("the session ended while the block waited")
                assert "can never commit" in lost.value.reason
                assert "pool" not in lost.value.reason
        _not_asyncpg(left.value)
        assert await db.list_events(run.id) == []
        await _works(db, run)


async def test_a_lone_write_whose_session_is_terminated_raises_and_a_retry_works(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    # Begun, it is not run again by itself: were the session cut by the network
    # alone, the server would hold its locks until it noticed, and a second try
    # would wait behind the first. It says nothing was committed (it raised
    # asyncpg's "connection was closed in the middle of operation").
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run(status="running"))
        await db.append_event(run.id, "before")
        locker = await asyncpg.connect(postgres_url)
        try:
            async with locker.transaction():
                # Hold the run's row, so the write waits where it can be seen and ended.
                await locker.execute("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", run.id)
                write = asyncio.create_task(db.append_event(run.id, "lost"))
                await _terminate(admin, await _waiting_pid(admin))
                with pytest.raises(DatabaseError, match=NOTHING_IN_A_WRITE) as raised:
                    await write
        finally:
            await locker.close()
        _not_asyncpg(raised.value)
        assert [e.event_type for e in await db.list_events(run.id)] == ["before"]
        retried = await db.append_event(run.id, "retried")
        assert retried.sequence == 2
        await _works(db, run)


async def test_a_write_whose_commit_was_never_sent_says_nothing_was_committed(
    postgres_url: str, admin: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The server ended the session between the write's last statement and its
    # COMMIT (an idle-in-transaction timeout, the loop busy meanwhile): asyncpg
    # would not even send the COMMIT, yet the outcome was called unknown.
    name = await admin.fetchval("SELECT current_database()")
    await admin.execute(f'ALTER DATABASE "{name}" SET idle_in_transaction_session_timeout = 30')
    announce = events.announce
    stalls = [0.0, 0.1]  # the second append's loop is busy, as in a long GC pause

    async def busy_after(conn: asyncpg.Connection, run_id: str) -> None:
        await announce(conn, run_id)
        time.sleep(stalls.pop(0) if stalls else 0)  # noqa: ASYNC251 - the loop stalls on purpose
        for _ in range(10):  # it then reads what the server sent meanwhile
            await asyncio.sleep(0)

    monkeypatch.setattr(events, "announce", busy_after)
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run(status="running"))
        await db.append_event(run.id, "kept")
        with pytest.raises(DatabaseError, match=f"before COMMIT.*{NOTHING_IN_A_WRITE}"):
            await db.append_event(run.id, "never sent")
        assert [e.event_type for e in await db.list_events(run.id)] == ["kept"]
        await _works(db, run)


async def test_a_statement_timeout_fails_only_its_call(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    database = await admin.fetchval("SELECT current_database()")
    await admin.execute(f'ALTER DATABASE "{database}" SET statement_timeout = 300')
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run(status="running"))
        async with admin.transaction():
            await admin.execute("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", run.id)
            with pytest.raises(DatabaseError, match="statement timeout") as lone:
                await db.append_event(run.id, "timed out")
            _not_asyncpg(lone.value)
            async with db.transaction() as tx:
                other = await tx.create_run(new_run(status="running"))
                with pytest.raises(DatabaseError, match="statement timeout") as inside:
                    await tx.append_event(run.id, "timed out")
                _not_asyncpg(inside.value)
                # A failed call undoes only itself (its savepoint): the block goes on.
                await tx.append_event(other.id, "kept")
        assert [e.event_type for e in await db.list_events(other.id)] == ["kept"]
        assert await db.list_events(run.id) == []
        await _works(db, run)


async def test_every_session_of_the_pool_terminated_at_once_is_replaced(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run(status="running"))
        # Several pooled connections, all idle, then all ended together.
        await asyncio.gather(*(db.append_event(run.id, f"e{n}") for n in range(6)))
        pids = await admin.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'daemon_db'"
        )
        assert pids
        for (pid,) in pids:
            await _terminate(admin, pid)
        outcomes = await asyncio.gather(
            *(db.append_event(run.id, f"after{n}") for n in range(6)), return_exceptions=True
        )
        # A call that took a connection before its close was seen may fail, as DatabaseError.
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                _not_asyncpg(outcome)
        await _works(db, run)
    report(
        "lost sessions (PostgreSQL): blocks and lone writes whose sessions the server ended"
        " raise DatabaseError saying nothing was committed, reads run again on another"
        " session; nothing unstored was acknowledged; the pool recovers at once"
    )


async def test_a_follower_whose_listening_session_is_terminated_listens_again(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    async with DB.open(postgres_url) as follower, DB.open(postgres_url) as writer:
        run = await writer.create_run(new_run(status="running"))
        seen: asyncio.Queue[str] = asyncio.Queue()

        async def follow() -> None:
            async for event in follower.follow_events(run.id):
                await seen.put(event.event_type)

        task = asyncio.create_task(follow())
        try:
            await writer.append_event(run.id, "first")
            assert await asyncio.wait_for(seen.get(), 10) == "first"
            listener = follower._listener  # type: ignore[attr-defined]
            assert listener is not None
            await _terminate(admin, listener.get_server_pid())
            await asyncio.sleep(0.3)
            # Another DB's append wakes this follower only through NOTIFY: well
            # within the 5 s the follower waits before reading anyway.
            await writer.append_event(run.id, "second")
            assert await asyncio.wait_for(seen.get(), 2) == "second"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class _CutAfter:
    """A TCP proxy in front of the server that, once armed with a statement,
    forwards it and then cuts the session: the server runs it, the client never
    hears (armed with COMMIT, the server commits)."""

    def __init__(self, url: str) -> None:
        self._target = urlsplit(url)
        self.armed = b""
        self._writers: list[asyncio.StreamWriter] = []
        self._forwarding: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return urlunsplit(self._target._replace(netloc=f"postgres@127.0.0.1:{port}"))

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        await asyncio.gather(*self._forwarding, return_exceptions=True)
        await self._server.wait_closed()

    async def _forward(self, client_in: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        assert self._target.port is not None
        task = asyncio.current_task()
        assert task is not None
        self._forwarding.add(task)
        server_in, server = await asyncio.open_connection("127.0.0.1", self._target.port)
        self._writers += [client, server]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
                    if sink is server and self.armed and self.armed in data:
                        self.armed = b""
                        client.transport.abort()  # the reply never comes
                        await asyncio.sleep(0.3)  # while the server runs the COMMIT
                        server.transport.abort()
            sink.close()

        await asyncio.gather(pipe(client_in, server), pipe(server_in, client))


async def test_a_write_whose_commit_reply_is_lost_says_its_outcome_is_unknown(
    postgres_url: str,
) -> None:
    # It committed: an error reading "connection closed" sent the caller to retry
    # it, and a daemon logged a second unit_completed, or met its own run as a
    # RunExistsError. A block's COMMIT said so already; a lone write now does too.
    proxy = _CutAfter(postgres_url)
    async with proxy as proxied, DB.open(proxied) as db:
        run = await db.create_run(new_run(status="running"))
        proxy.armed = b"COMMIT"
        with pytest.raises(DatabaseError, match="committed this write is unknown") as raised:
            await db.append_event(run.id, "unit_completed")
        _not_asyncpg(raised.value)
        assert [e.event_type for e in await db.list_events(run.id)] == ["unit_completed"]
        await _works(db, run)


async def test_sessions_the_server_ended_while_idle_fail_no_call(
    postgres: postgres_server.Server, postgres_url: str
) -> None:
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run(status="running"))
        for _ in range(3):
            await asyncio.gather(*(db.get_run(run.id) for _ in range(10)))  # sessions in the pool
            # A restart, as asyncio has not yet seen it: the loop does not run meanwhile.
            _end_idle_sessions_unseen(postgres, postgres_url)
            # Reads, and writes and blocks that had not begun, go on to live sessions.
            found = await asyncio.gather(
                db.get_run(run.id),
                db.list_events(run.id),
                db.resumable_runs(),
                db.append_event(run.id, "after the restart"),
                _append_in_a_block(db, run),
            )
            assert found[0] == run
        assert len(await db.list_events(run.id)) == 6


async def _append_in_a_block(db: DB, run: Run) -> None:
    async with db.transaction() as tx:
        await tx.append_event(run.id, "in a block")


async def test_a_call_done_before_its_connection_died_returns_its_result(
    postgres_url: str,
) -> None:
    # The session dies as the pool resets the connection handed back: the write
    # had committed and the read had read, yet each raised "connection was closed".
    proxy = _CutAfter(postgres_url)
    async with proxy as proxied, DB.open(proxied) as db:
        run = await db.create_run(new_run(status="running"))
        proxy.armed = b"RESET ALL"
        event = await db.append_event(run.id, "committed")
        proxy.armed = b"RESET ALL"
        assert await db.get_run(run.id) == run
        proxy.armed = b"RESET ALL"
        async with db.transaction() as tx:
            await tx.append_event(run.id, "in a block")
        assert [e.event_type for e in await db.list_events(run.id)] == ["committed", "in a block"]
        assert event.sequence == 1
        await _works(db, run)


def _end_idle_sessions_unseen(postgres: postgres_server.Server, url: str) -> None:
    """End the daemon_db sessions idle in the pool, as a restart would, unseen by the loop."""
    # Blocking on purpose: the loop must not see it happen.
    subprocess.run(
        [
            str(postgres.bindir / "psql"),
            url,
            "-c",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'daemon_db'",
        ],
        check=True,
        capture_output=True,
    )
    time.sleep(0.2)  # the sessions end, unseen by the loop


async def test_a_block_cancelled_as_it_moves_past_a_dead_session_never_runs(
    postgres: postgres_server.Server, postgres_url: str
) -> None:
    # Giving the dead connection back swallowed the cancellation: the block went
    # on to the next connection, ran its body and committed.
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run(status="running"))
        for steps in range(12):
            await db.get_run(run.id)
            _end_idle_sessions_unseen(postgres, postgres_url)
            task = asyncio.ensure_future(_append_in_a_block(db, run))
            for _ in range(steps):
                await asyncio.sleep(0)
            if not task.cancel():
                continue  # done already: its block committed, as it should
            with contextlib.suppress(asyncio.CancelledError, DatabaseError):
                await task
            assert task.cancelled(), f"cancelled after {steps} steps, the block went on"
            assert [e.event_type for e in await db.list_events(run.id)] == [], steps
        await _works(db, run)


async def test_a_read_cancelled_as_its_session_dies_raises_cancelled_error(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    # asyncpg's ROLLBACK, failing as the cancellation unwound, raised in its place;
    # taken for a lost session, the read ran again and returned.
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run(status="running"))
        for steps in range(30):
            await db.list_events(run.id)
            pid = await admin.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'daemon_db'"
            )
            task = asyncio.ensure_future(db.list_events(run.id))
            for _ in range(steps):
                await asyncio.sleep(0)
            if task.done():
                continue
            os.kill(pid, signal.SIGTERM)  # what pg_terminate_backend does, at once
            assert task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert task.cancelled(), f"cancelled after {steps} steps, the read returned"
        await _works(db, run)


async def test_close_of_a_read_only_db_waits_for_a_read_moving_past_a_dead_session(
    postgres: postgres_server.Server, postgres_url: str
) -> None:
    # Between two tries the count close() waits on fell to zero: close() closed
    # the pool under the read ("pool is closing").
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run(status="running"))
    db = await DB.open(postgres_url, readonly=True)
    await db.get_run(run.id)
    _end_idle_sessions_unseen(postgres, postgres_url)
    read = asyncio.ensure_future(db.get_run(run.id))
    await asyncio.sleep(0)  # the read begins, then close() is called
    await db.close()
    assert await read == run


async def test_vacuum_moves_past_sessions_the_server_ended(
    postgres: postgres_server.Server, postgres_url: str
) -> None:
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run(status="running"))
        _end_idle_sessions_unseen(postgres, postgres_url)
        assert await db.vacuum() >= 0
        await _works(db, run)


async def test_an_open_cancelled_as_it_connects_leaves_no_error_unread(postgres_url: str) -> None:
    # Cancelled mid-connect, asyncpg left "Future exception was never retrieved".
    await (await DB.open(postgres_url)).close()
    unread: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unread.append(str(context.get("message"))))
    try:
        for n in range(40):
            with contextlib.suppress(TimeoutError):
                opened = await asyncio.wait_for(DB.open(postgres_url), 0.0005 * (1 + n % 8))
                await opened.close()
        for _ in range(50):  # the pools made for the cancelled openers close meanwhile
            gc.collect()
            await asyncio.sleep(0.01)
    finally:
        loop.set_exception_handler(None)
    assert unread == []


async def test_a_call_that_cannot_have_a_session_says_it_cannot_connect(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    name = await admin.fetchval("SELECT current_database()")
    # A database cannot refuse connections from its own sessions' ALTER DATABASE.
    elsewhere = await asyncpg.connect(postgres_url.rsplit("/", 1)[0] + "/postgres")
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run(status="running"))
        await elsewhere.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            pids = await admin.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'daemon_db'"
            )
            for (pid,) in pids:
                await _terminate(admin, pid)
            for call in (
                db.get_run(run.id),
                db.append_event(run.id, "e"),
                _append_in_a_block(db, run),
            ):
                with pytest.raises(
                    DatabaseError, match=r"cannot connect: .*not currently accepting"
                ):
                    await call
        finally:
            await elsewhere.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await elsewhere.close()
        await _works(db, run)


async def test_close_while_a_follower_begins_to_listen_leaves_no_session(
    postgres_url: str, admin: asyncpg.Connection
) -> None:
    # close() closed only a listener already made: one connecting meanwhile
    # outlived the DB, its LISTEN session open.
    db = await DB.open(postgres_url)
    run = await db.create_run(new_run(status="running"))

    async def follow() -> None:
        async for _ in db.follow_events(run.id):
            pass

    follower = asyncio.ensure_future(follow())
    while not db._listening.locked():  # past its first page, connecting to LISTEN
        await asyncio.sleep(0)
    await db.close()
    with contextlib.suppress(DaemonDBError):
        await follower
    sessions = await admin.fetch(
        "SELECT pid FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    assert sessions == []


async def test_close_waits_a_bounded_time_for_a_row_another_session_locked(
    postgres_url: str, admin: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A session the network cut on our side may hold its locks at the server for
    # hours; close() handing the runs back waited for it. Past the wait, the
    # lease runs out by itself and a claim takes the runs.
    monkeypatch.setattr(owners, "LEASE_END_WAIT_MS", 200)
    db = await DB.open(postgres_url, owner="stuck")
    run = await db.create_run(new_run(status="running"))
    async with admin.transaction():
        await admin.execute("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", run.id)
        with pytest.warns(RuntimeWarning, match="more than 0.2 s, the most closing waits"):
            await asyncio.wait_for(db.close(), 10)
    held = await admin.fetchval(
        "SELECT owners.name FROM runs JOIN owners ON owners.id = runs.owner_id WHERE runs.id = $1",
        run.id,
    )
    assert held == "stuck"  # not handed back: the next claim takes it once the lease is over
