"""The DB of a PostgreSQL store: an asyncpg pool, transactions, and LISTEN/NOTIFY.

Every call takes a connection from the pool for one transaction (reads in a
read-only REPEATABLE READ one, so the statements of a call see one snapshot).
A transaction block holds one connection until it ends; each call inside it
runs in a savepoint, so a call that fails undoes only itself. ``follow_events``
listens on a connection of its own, taken when first needed: an append's
NOTIFY, delivered by PostgreSQL when the append commits on whatever host,
wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import urllib.parse
from collections.abc import Callable
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Any, Final, TypeVar

import asyncpg

from .. import _validation as check
from .._cancellation import settle
from .._db import DB, Progress, PruneTally, weakly
from .._engine import Work
from .._errors import (
    DaemonDBError,
    DatabaseError,
    ReadOnlyError,
    schema_changed,
)
from .._owner import Held, Owner
from .._records import PrunedRuns, Run, RunStatus, Stats, UnitStatus
from .._transaction import Block, Transaction, _TransactionBlock
from . import damage, events, maintenance, owners, queries, runs, schema
from .errors import CONNECTION_ERRORS, closed, discard, session_lost, translate
from .url import shown_url

__all__ = ["PostgresDB"]

T = TypeVar("T")

POOL_SIZE: Final = 10
"""Connections a DB keeps at most: calls beyond this many at once wait for one."""

FOLLOW_SAFETY_SECONDS: Final = 5.0
"""How long a follower waits on NOTIFY before reading anyway.

Only a guard: a notification is lost if the listening connection drops and
reconnects; every append is otherwise announced when it commits.
"""

PRUNE_BATCH_RUNS: Final = 500
"""prune_runs deletes at most this many runs per transaction."""

_FINISHED = "status IN ('cancelled', 'completed', 'failed')"


_POSTGRES_ERRORS = (asyncpg.PostgresError, *CONNECTION_ERRORS)

_SESSION_SETTINGS = {
    "application_name": "daemon_db",
    # What the store's SQL assumes, whatever a database or role sets by default:
    # a damaged row's timestamps are read as ISO text, and appends, claims and
    # the fence count on each statement seeing what committed before it (under
    # a stricter level, three appends in four from two daemons failed, 40001).
    "timezone": "UTC",
    "DateStyle": "ISO, MDY",
    "default_transaction_isolation": "read committed",
    # A session whose client the network lost (a NAT or firewall dropping it)
    # holds its transaction's locks until the server notices: with the system's
    # TCP keepalive, after two hours. These make it two minutes, for ours only.
    "tcp_keepalives_idle": "60",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "6",
}

_CLIENT_TCP_OPTIONS = (
    ("TCP_KEEPIDLE", 60),
    ("TCP_KEEPINTVL", 10),
    ("TCP_KEEPCNT", 6),
    ("TCP_USER_TIMEOUT", 120_000),  # ms: data sent and not acknowledged for two minutes
)


async def _bound_silence(conn: Any) -> None:
    """Have the client notice, too, a server the network lost: within about two minutes.

    asyncpg sets no keepalive of its own: a call waiting for a server behind a
    cut network waited for good, its caller's timeout and ``close()`` with it.
    The socket is reached as asyncpg's maintainers advise (MagicStack/asyncpg#606).
    """
    transport = getattr(conn, "_transport", None)
    sock = None if transport is None else transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # a Unix socket: no network to lose
    # Best effort: a system refusing an option still connects, as before.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in _CLIENT_TCP_OPTIONS:
        option = getattr(socket, name, None)  # Linux's; others have some or none
        if option is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, option, value)


async def _refuse_changed_schema(conn: Any, url: str) -> None:
    problems = await maintenance.changed_at_open(conn)
    if problems:
        raise schema_changed(url, problems)


def _parameters(url: str) -> set[str]:
    """The names of the URL's query parameters (which asyncpg sends as settings)."""
    with contextlib.suppress(ValueError):
        return {
            name.lower() for name, _ in urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query)
        }
    return set()


def _milliseconds(seconds: float) -> int:
    """``seconds`` as a ``lock_timeout``: 0 there means no limit, and the most is 2**31 - 1."""
    return min(max(1, round(seconds * 1000)), 2**31 - 1)


async def _translated(call: Callable[[], Any], url: str) -> Any:
    try:
        return await call()
    except DaemonDBError:
        raise
    except damage.DamagedRow as exc:
        raise exc.error(url) from None
    except (*_POSTGRES_ERRORS, UnicodeError, OverflowError) as exc:
        raise translate(exc, url) from None


async def _commit(started: Any, conn: Any, url: str, what: str) -> None:
    """Commit ``started``; a session lost on the way makes the outcome unknown, and says so.

    Unless asyncpg refused to send the COMMIT at all (it found the connection
    closed, or its protocol broken): then the transaction can never commit.
    """
    try:
        await started.commit()
    except _POSTGRES_ERRORS as exc:
        if not session_lost(conn, exc):
            raise
        discard(conn)
        if _never_sent(exc):
            raise _not_committed(url, exc, what) from None
        raise DatabaseError(
            url,
            f"the connection was lost during COMMIT: whether PostgreSQL committed {what}"
            " is unknown",
        ) from None


def _never_sent(exc: BaseException) -> bool:
    """Whether a COMMIT that raised ``exc`` can have done nothing.

    asyncpg raises InterfaceError (the connection found closed) and
    InternalClientError (its protocol broken) before sending anything; and the
    server ends a session idle in a transaction (25P03) only while no COMMIT
    has come. Anything else may have reached the server and committed.
    """
    if isinstance(exc, asyncpg.InterfaceError | asyncpg.InternalClientError):
        return True
    return getattr(exc, "sqlstate", None) == "25P03"


def _not_committed(url: str, exc: BaseException, what: str) -> DatabaseError:
    """The error of a call whose session ended before its COMMIT was sent."""
    return DatabaseError(
        url,
        f"the connection was lost before COMMIT ({translate(exc, url).reason}); its"
        f" transaction can never commit: nothing done in {what} is committed",
    )


async def _rolled_back(started: Any) -> None:
    """Roll ``started`` back; a lost session rolled it back already (and is not reused)."""
    with contextlib.suppress(*_POSTGRES_ERRORS):
        await started.rollback()


async def _begun(db: PostgresDB) -> tuple[Any, Any]:
    """A pooled connection in a block's transaction, begun: ``(connection, transaction)``.

    Waiting for a pooled connection can be cancelled; BEGIN, once sent, is
    waited for, and if the caller was cancelled meanwhile, the transaction is
    ended and the connection given back before CancelledError is raised. A
    session the server ended while idle in the pool did nothing: the block
    begins on the next connection, as a lone call does (see ``_run``).
    """
    for tries_left in range(POOL_SIZE, -1, -1):
        conn = await _acquired(db)  # its errors are daemon_db's already
        started = None
        try:
            # A read-only DB's block reads one snapshot, as its calls do. (The
            # proxy of a session found ended refuses even to make one.)
            started = (
                conn.transaction(isolation="repeatable_read", readonly=True)
                if db._is_readonly
                else conn.transaction()
            )
            await settle(asyncio.ensure_future(_begin(conn, started, snapshot=db._is_readonly)))
        except BaseException as exc:
            lost = isinstance(exc, _POSTGRES_ERRORS) and session_lost(conn, exc)
            if lost:
                discard(conn)
            # Cancelled while giving the connection back: the block must not go
            # on to the next one (settle raises CancelledError once it is back).
            await settle(asyncio.ensure_future(_given_back(db, conn, started)))
            if lost and tries_left:
                continue
            if isinstance(exc, (*_POSTGRES_ERRORS, UnicodeError, OverflowError)):
                raise translate(exc, db._path) from None
            raise
        return conn, started
    raise AssertionError("unreachable: the last try returns or raises")


async def _begin(conn: Any, started: Any, *, snapshot: bool) -> None:
    await started.start()
    if snapshot:  # the snapshot is taken now, as on SQLite, not at a first read
        await conn.execute("SELECT 1")


async def _acquired(db: PostgresDB) -> Any:
    """A pooled connection; a caller cancelled while waiting for one raises at once.

    asyncpg itself is not interrupted: cancelled while it connects, it leaves
    an error no one retrieves. A connection that comes for a caller who is
    gone goes back to the pool.
    """
    acquiring = asyncio.ensure_future(db._pool.acquire())
    try:
        return await asyncio.shield(acquiring)
    except asyncio.CancelledError:
        acquiring.add_done_callback(db._unneeded)
        raise
    except _POSTGRES_ERRORS as exc:  # no session to be had: the server is down, say
        reason = translate(exc, db._path).reason
        raise DatabaseError(db._path, f"cannot connect: {reason}") from None


class _SessionLost(Exception):
    """A call found its session gone before it did anything (``error`` says how): try again."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


class _UnderWay:
    """A count of calls under way, which ``close()`` waits to see end."""

    __slots__ = ("_count", "_none")

    def __init__(self) -> None:
        self._count = 0
        self._none = asyncio.Event()
        self._none.set()

    def begin(self) -> None:
        self._count += 1
        self._none.clear()

    def end(self) -> None:
        self._count -= 1
        if self._count == 0:
            self._none.set()

    def __enter__(self) -> None:
        self.begin()

    def __exit__(self, *exc_info: object) -> None:
        self.end()

    async def finished(self) -> None:
        await self._none.wait()


READ_CANCEL_GRACE_SECONDS: Final = 1.0
"""How long a cancelled read waits for its snapshot to end before it ends its session."""


async def _read(conn: Any, call: Callable[[Any], Any]) -> Any:
    """``call(conn)`` in a read-only snapshot of its own."""
    snapshot = conn.transaction(isolation="repeatable_read", readonly=True)
    begun = False
    try:
        await snapshot.start()
        begun = True
        result = await call(conn)
        await snapshot.commit()
    except asyncio.CancelledError:
        await _let_go(conn, snapshot if begun else None)
        raise
    except BaseException:
        if begun and not closed(conn):
            await snapshot.rollback()
        raise
    return result


async def _let_go(conn: Any, snapshot: Any) -> None:
    """End a cancelled read's snapshot, or its session if the server does not answer soon.

    A read has nothing to settle, but its statement must not go on without it:
    asyncpg, cancelled, asks the server to cancel it (a CancelRequest, from a
    task of its own), and the ROLLBACK is then answered at once. A server that
    never answers (a stopped one) had the caller wait for good. Ending the
    session at once was no better: it went before asyncpg's request, and the
    statement went on on the server, waiting for a lock with its slot held,
    until the server ran out of them (an adversary pass). So the wait is
    bounded, and a caller cancelled again waits out the rest of it all the
    same (ending the session then had the same effect: the next pass).
    """
    if snapshot is None:  # cancelled in its BEGIN: nothing runs on the server
        discard(conn)
        return
    await settle(asyncio.ensure_future(_snapshot_ended(conn, snapshot)))


async def _snapshot_ended(conn: Any, snapshot: Any) -> None:
    try:
        async with asyncio.timeout(READ_CANCEL_GRACE_SECONDS):
            await snapshot.rollback()
    except (TimeoutError, *_POSTGRES_ERRORS):
        discard(conn)


async def _given_back(db: PostgresDB, conn: Any, started: Any) -> None:
    """End a block's transaction (if it began) without committing, and release its connection."""
    try:
        if started is not None:
            await _rolled_back(started)
    finally:
        await db._give_back(conn)


_closing_pools: set[asyncio.Future[None]] = set()
"""Pools made for openers who were cancelled meanwhile, as they close."""


def _unneeded_pool(creating: asyncio.Future[Any]) -> None:
    """Close the pool made for an opener who was cancelled meanwhile (or see its error)."""
    if creating.cancelled() or creating.exception() is not None:
        return
    closing = asyncio.ensure_future(_closed_quietly(creating.result()))
    _closing_pools.add(closing)
    closing.add_done_callback(_closing_pools.discard)


async def _closed_quietly(pool: Any) -> None:
    with contextlib.suppress(*_POSTGRES_ERRORS):
        await pool.close()


async def _released(pool: Any, conn: Any) -> None:
    # asyncpg resets a connection it takes back; if the session died meanwhile,
    # it drops the connection and raises. The call's work was done by then
    # (committed, rolled back or read): that error is not the call's.
    with contextlib.suppress(*_POSTGRES_ERRORS):
        await pool.release(conn)


class PostgresDB(DB):
    """The DB ``DB.open()`` returns for a ``postgresql://`` URL (a DB in every respect)."""

    _queries = queries.QUERIES
    _connections_die_with_the_loop = True

    def __init__(self, url: str, pool: Any, owner: Owner, readonly: bool) -> None:
        """Use ``DB.open()``; this only assembles the pool it has opened."""
        super().__init__(shown_url(url), owner)
        self._url = url
        self._pool = pool
        self._is_readonly = readonly
        self._listener: Any = None
        self._listening = asyncio.Lock()
        self._calls = _UnderWay()
        self._releasing: set[asyncio.Future[None]] = set()

    @classmethod
    async def _open_url(cls, url: str, readonly: bool, busy_timeout: float, owner: Owner) -> DB:
        shown = shown_url(url)
        settings = dict(_SESSION_SETTINGS)
        # Else a write waits for another session's lock for as long as that
        # session lives (one idle in a transaction, for good), and a cancelled
        # or timed-out caller with it: SQLite's busy_timeout bounds the same wait.
        if "lock_timeout" not in _parameters(url):
            settings["lock_timeout"] = str(_milliseconds(busy_timeout))
        if readonly:
            settings["default_transaction_read_only"] = "on"
        creating = asyncio.ensure_future(
            # One connection at once (DB.open uses it), but no floor kept: asyncpg
            # restores a floor in a task of its own, which close() cancelled
            # mid-connect, leaving an error no one retrieved.
            asyncpg.create_pool(
                url,
                init_size=1,
                min_size=0,
                max_size=POOL_SIZE,
                server_settings=settings,
                init=_bound_silence,
            )
        )
        try:
            # asyncpg cancelled mid-connect leaves an error no one retrieves: an
            # opener cancelled meanwhile (a timeout) leaves it to finish, then close.
            pool = await asyncio.shield(creating)
        except asyncio.CancelledError:
            creating.add_done_callback(_unneeded_pool)
            raise
        except DaemonDBError:
            raise
        except (asyncpg.PostgresError, ValueError, OverflowError, *CONNECTION_ERRORS) as exc:
            raise DatabaseError(shown, f"cannot connect: {translate(exc, shown).reason}") from None
        try:
            async with pool.acquire() as conn:
                if readonly:
                    await _translated(lambda: schema.verify(conn, shown), shown)
                else:
                    await _translated(lambda: schema.migrate(conn, shown), shown)
                    await _translated(lambda: _refuse_changed_schema(conn, shown), shown)
                    async with conn.transaction():
                        await _translated(lambda: owners.ensure(conn, owner=owner), shown)
        except BaseException:
            await pool.close()
            raise
        db = cls(url, pool, owner, readonly)
        if not readonly:
            db._start_renewing()
        return db

    @property
    def readonly(self) -> bool:
        """True if the database was opened with ``readonly=True``."""
        return self._is_readonly

    # Routing: the methods of Operations end up here.

    async def _read(self, work_: Work[T]) -> T:
        tx = self._joined()
        if tx is not None:
            return await tx._read(work_)
        self._check_open()
        result: T = await self._run(work_.call, write=False)
        return result

    async def _write(self, work_: Work[T]) -> T:
        tx = self._joined()
        if tx is not None:
            return await tx._write(work_)
        self._check_open()
        if self._is_readonly:
            raise ReadOnlyError(self._path)
        result: T = await self._run(work_.call, write=True)
        return result

    async def _run(self, call: Callable[[Any], Any], *, write: bool) -> Any:
        """Run ``call(connection)`` in a transaction of its own, on a pooled connection.

        A write runs to its end (commit or rollback) even if its caller is
        cancelled meanwhile, as on SQLite: the next call sees a settled database.
        """

        async def attempt(conn: Any) -> Any:
            if not write:
                return await _read(conn, call)
            try:
                started = conn.transaction()
                await started.start()
            except _POSTGRES_ERRORS as exc:
                if not session_lost(conn, exc):
                    raise
                discard(conn)
                raise _SessionLost(exc) from None  # before BEGIN: nothing was done
            try:
                result = await call(conn)
            except BaseException:
                await _rolled_back(started)
                raise
            await _commit(started, conn, self._path, "this write")
            return result

        async def transaction(conn: Any) -> Any:
            try:
                return await damage.readable(conn, partial(attempt, conn))
            except _POSTGRES_ERRORS as exc:
                if isinstance(exc.__context__, asyncio.CancelledError):
                    # Cancelled, and the transaction's end failed as it unwound
                    # (the session went meanwhile): the cancellation is the news.
                    if session_lost(conn, exc):
                        discard(conn)
                    raise exc.__context__ from None
                if not session_lost(conn, exc):
                    raise
                discard(conn)  # asyncpg's state may be broken: never reuse it
                if write:
                    # Begun, so not run again here: were the session cut by the
                    # network alone, the server would hold its locks until it
                    # noticed, and the second try wait for the first, uncancelled.
                    raise _not_committed(self._path, exc, "this write") from None
                raise _SessionLost(exc) from None

        async def run(conn: Any) -> Any:
            if not write:
                return await transaction(conn)
            try:
                return await settle(asyncio.ensure_future(transaction(conn)))
            finally:
                self._notify()  # followers look at once, without waiting for NOTIFY

        return await self._on_a_session(run)

    async def _on_a_session(self, call: Callable[[Any], Any]) -> Any:
        """``call(connection)`` on a pooled connection, given back after; counted for close().

        Sessions the server ended while they sat idle in the pool (a restart,
        pg_terminate_backend) fail the call that takes them, each in turn: a
        call that raises ``_SessionLost`` (nothing it did survives) goes on to
        the next connection, a new one at the latest once the pool's dead ones
        are spent. Waiting for a connection can be cancelled. close() waits
        for the call, retries included.
        """
        with self._calls:
            for tries_left in range(POOL_SIZE, -1, -1):
                try:
                    return await _translated(partial(self._on_a_connection, call), self._path)
                except _SessionLost as lost:
                    if not tries_left:
                        reason = translate(lost.error, self._path).reason
                        raise DatabaseError(
                            self._path,
                            f"the session ended before the call was done, on {POOL_SIZE + 1}"
                            f" connections in turn (the last: {reason}); nothing it did"
                            " was committed",
                        ) from None
        raise AssertionError("unreachable: the last try returns or raises")

    async def _on_a_connection(self, call: Callable[[Any], Any]) -> Any:
        conn = await _acquired(self)
        try:
            return await call(conn)
        finally:
            await self._give_back(conn)

    def _unneeded(self, acquiring: asyncio.Future[Any]) -> None:
        """Give back a connection acquired for a caller who was cancelled meanwhile."""
        if not acquiring.cancelled() and acquiring.exception() is None:
            self._releasing_of(acquiring.result())

    async def _give_back(self, conn: Any) -> None:
        """Give ``conn`` back to the pool, to the end even if the caller is cancelled."""
        await asyncio.shield(self._releasing_of(conn))

    def _releasing_of(self, conn: Any) -> asyncio.Future[None]:
        release = asyncio.ensure_future(_released(self._pool, conn))
        self._releasing.add(release)  # a reference, until it is done
        release.add_done_callback(self._releasing.discard)
        return release

    # Opening and closing

    async def _disconnect(self, *, crashed: bool) -> None:
        # Calls that began before close() (waiting for a pooled connection, or
        # for BEGIN) finish first; the pool's close then waits for held ones.
        await self._calls.finished()
        try:
            if not self._is_readonly:
                await self._release(crashed=crashed)
        finally:
            try:
                async with self._listening:  # a follower's connect under way ends first
                    listener, self._listener = self._listener, None
                if listener is not None:
                    with contextlib.suppress(*_POSTGRES_ERRORS):
                        await listener.close()
            finally:
                with contextlib.suppress(*_POSTGRES_ERRORS):
                    await self._pool.close()

    def _abandoned(self) -> None:
        # asyncpg's connections belong to the loop: they are let go there, and only there.
        with contextlib.suppress(RuntimeError):  # the loop is closed: they went with it
            self._loop.call_soon_threadsafe(_terminate, self._pool, self._listener)

    async def _renew_lease(self) -> bool:
        lapsed: bool = await self._run(partial(owners.renew, owner=self._owner), write=True)
        return lapsed

    async def _end_lease(self, *, crashed: bool) -> None:
        end = owners.expire if crashed else owners.release
        try:
            await self._run(partial(end, owner=self._owner), write=True)
        except DatabaseError as exc:
            if "SQLSTATE 55P03" not in exc.reason:  # not the wait's own bound
                raise
            waited = owners.LEASE_END_WAIT_MS / 1000
            raise DatabaseError(
                self._path,
                f"another session held a row of this DB's for more than {waited:g} s,"
                " the most closing waits (SQLSTATE 55P03)",
            ) from None

    # Looking after the database

    async def _prune(
        self, moment: datetime, *, dry_run: bool, progress: Progress | None = None
    ) -> PrunedRuns:
        if dry_run:
            found = await self._read(Work[list[Any]](partial(_finished_before, moment=moment)))
            runs_, damaged = _sorted_out(found)
            return PrunedRuns(runs_, (row.error(self._path) for row in damaged))
        tally = PruneTally(progress)  # sweeps twice: a batch skips a run another session holds
        after: tuple[str, str] | None = None
        while True:
            prune = partial(_delete_finished, moment=moment, after=after)
            batch, passed, after = await self._write(Work[_Batch](prune))
            if tally.add(batch, passed, after):
                return tally.result(self._path)

    async def stats(self) -> Stats:
        return await self._read(Work[Stats](partial(_stats, path=self._path)))

    async def _check(self, *, quick: bool) -> list[str]:
        return await self._read(Work[list[str]](maintenance.check))

    async def vacuum(self) -> int:
        if self._joined() is not None:
            raise DaemonDBError("vacuum() cannot run inside a transaction block")
        self._check_open()
        if self._is_readonly:
            raise ReadOnlyError(self._path)

        async def vacuum(conn: Any) -> int:
            try:
                before = await conn.fetchval("SELECT pg_database_size(current_database())")
                await conn.execute("VACUUM")  # outside a transaction, as VACUUM must be
                after = await conn.fetchval("SELECT pg_database_size(current_database())")
            except _POSTGRES_ERRORS as exc:
                if not session_lost(conn, exc):
                    raise
                discard(conn)
                raise _SessionLost(exc) from None  # VACUUM changes no row: run it again
            return max(0, int(before) - int(after))

        result: int = await self._on_a_session(vacuum)
        return result

    async def backup(
        self,
        destination: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        progress: Callable[[int, int], object] | None = None,
    ) -> int:
        raise DatabaseError(
            self._path,
            "backup() copies SQLite files; back a PostgreSQL database up with pg_dump"
            " (pg_dump --format=custom --file=BACKUP DBNAME)",
        )

    def transaction(self) -> _TransactionBlock:
        return _PostgresTransactionBlock(self)

    # Following events

    async def _wait_for_change(self, change: asyncio.Future[None]) -> None:
        if self._listener is None:
            # Listening starts only now, so the first page comes at once; what
            # was appended meanwhile, the next read finds.
            await self._listen()
            return
        await asyncio.wait((change,), timeout=FOLLOW_SAFETY_SECONDS)

    async def _listen(self) -> None:
        """LISTEN for appends, on a connection of this DB's own (once)."""
        async with self._listening:
            if self._listener is not None or self._closing is not None:
                return  # listening, or closed: the follower's next read says so

            async def connect() -> Any:
                conn = await asyncpg.connect(self._url, server_settings=_SESSION_SETTINGS)
                await _bound_silence(conn)
                # The connection lives in the loop: callbacks bound to this DB
                # would keep a DB its daemon dropped unclosed alive.
                await conn.add_listener(events.CHANNEL, weakly(self._notified))
                conn.add_termination_listener(weakly(self._listener_lost))
                return conn

            # asyncpg cancelled mid-connect leaves an error no one retrieves: a
            # follower cancelled meanwhile waits for the connect, which is kept.
            connecting = asyncio.ensure_future(_translated(connect, self._path))
            try:
                await settle(connecting)
            finally:
                if not connecting.cancelled() and connecting.exception() is None:
                    self._listener = connecting.result()

    def _notified(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self._notify()

    def _listener_lost(self, connection: Any) -> None:
        # Notifications sent meanwhile are lost: followers read again, and listen anew.
        if self._listener is connection:
            self._listener = None
        self._notify()

    # For the command line: private, not part of the API.

    async def _owners_of(self, run_ids: list[str]) -> dict[str, Held]:
        return await self._read(Work[dict[str, Held]](partial(owners.ownership, run_ids=run_ids)))

    async def _find_run_ids(self, typed: str, *, limit: int) -> tuple[list[str], int]:
        typed = check.name("run_id", typed)
        find = partial(runs.find_ids, typed=typed, limit=limit)
        return await self._read(Work[tuple[list[str], int]](find))


def _terminate(pool: Any, listener: Any) -> None:
    """Close the connections of a DB collected unclosed, at once (nothing awaits them)."""
    pool.terminate()
    if listener is not None:
        listener.terminate()


class PostgresTransaction(Transaction):
    """The Transaction of a PostgreSQL block: one pooled connection, a savepoint a call."""

    __slots__ = ("_lock",)

    _queries = queries.QUERIES

    def __init__(self, connection: Any, path: str, owner: Owner, *, readonly: bool) -> None:
        self._connection = connection
        self._path = path
        self._owner = owner
        self._readonly = readonly
        self._block = Block()  # the base class's holder of why a block was lost
        self._ended = False
        # Tasks started inside the block share its connection, which runs one
        # statement at a time.
        self._lock = asyncio.Lock()

    async def _read(self, work_: Work[T]) -> T:
        return await self._call(work_)

    async def _write(self, work_: Work[T]) -> T:
        if self._readonly:
            self._check_usable()
            raise ReadOnlyError(self._path)
        return await self._call(work_)

    async def _call(self, work_: Work[T]) -> T:
        self._check_usable()

        async def in_savepoint() -> Any:
            async with self._lock:
                # Called before the block ended, it runs in the block: the block's
                # COMMIT waits for this lock, as SQLite's waits in the thread's queue.
                if self._block.lost is not None:
                    raise self._lost_error()
                connection: Any = self._connection  # an asyncpg connection here
                if closed(connection):
                    # asyncpg would say the connection was "released back to
                    # the pool", as if the caller had misused it.
                    self._block.lost = _ENDED_WHILE_IDLE
                    raise self._lost_error()

                async def attempt() -> Any:
                    async with connection.transaction():
                        return await work_.call(connection)

                return await damage.readable(connection, attempt)

        try:
            result: T = await settle(asyncio.ensure_future(in_savepoint()))
        except DaemonDBError:
            raise
        except damage.DamagedRow as exc:
            raise exc.error(self._path) from None
        except (asyncpg.PostgresError, UnicodeError, OverflowError, *CONNECTION_ERRORS) as exc:
            if not session_lost(self._connection, exc):
                raise translate(exc, self._path) from None
            self._block.lost = f"the connection was lost ({translate(exc, self._path).reason})"
            discard(self._connection)
            raise self._lost_error() from None
        return result

    def _lost_error(self) -> DatabaseError:
        """The error for a block whose transaction ended without us."""
        return DatabaseError(
            self._path,
            f"{self._block.lost}; its transaction can never commit:"
            " nothing done in this transaction block is committed",
        )


class _PostgresTransactionBlock(_TransactionBlock):
    """``DB.transaction()`` of a PostgreSQL DB: a pooled connection held for the block."""

    __slots__ = ("_conn", "_counted", "_ending", "_started")

    def __init__(self, db: DB) -> None:
        super().__init__(db)
        self._counted = False

    async def __aenter__(self) -> Transaction:
        entered_in = sys._getframe(1)
        db = self._db
        assert isinstance(db, PostgresDB)
        if db._joined() is not None:
            raise DaemonDBError("transaction blocks do not nest: this task is already in one")
        db._check_open()
        if self._counted:
            raise DaemonDBError(
                "this transaction block is in use by another task: each block needs its own"
                " db.transaction()"
            )

        # close() waits for a block from its first step to its end: ending the
        # lease meanwhile would wait on the block's row locks, and deadlock
        # with its next write.
        db._calls.begin()
        self._counted = True
        try:
            self._conn, self._started = await _begun(db)
        except BaseException:
            self._uncount()
            raise
        tx = self._tx = PostgresTransaction(
            self._conn, db._path, db._owner, readonly=db._is_readonly
        )
        # A block must end even if its task never leaves it: otherwise its
        # connection is never given back, and close() would wait for it.
        owner = asyncio.current_task()
        assert owner is not None, "a transaction block runs in a task"
        tx._opened(entered_in, owner)
        self._token = db._block.set(tx)
        self._owner = owner
        owner.add_done_callback(self._abandoned)
        self._unwatch = _nothing
        return tx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        db, tx = self._db, self._tx
        assert isinstance(db, PostgresDB)
        assert isinstance(tx, PostgresTransaction)
        if exc_type is GeneratorExit:  # the task was destroyed: nothing can be awaited now
            self._abandon()
            return
        self._stop_watching()
        tx._end()  # from here, calls by tasks started inside the block go outside it

        async def end() -> None:
            # A call a task started inside the block made before it ended, and
            # still under way, ends first: a COMMIT beside it found the
            # connection busy, and the block lost what that task had done.
            async with tx._lock:
                if tx.lost is None and closed(self._conn):
                    tx._block.lost = _ENDED_WHILE_IDLE
                if exc_type is not None or tx.lost is not None:
                    await _given_back(db, self._conn, self._started)
                    return
                try:
                    await _commit(self._started, self._conn, db._path, "this transaction block")
                finally:
                    await db._give_back(self._conn)

        try:
            await settle(asyncio.ensure_future(_translated(end, db._path)))
        finally:
            with contextlib.suppress(ValueError):
                db._block.reset(self._token)
            self._uncount()
            db._notify()
        if tx.lost is not None and (exc_type is None or issubclass(exc_type, Exception)):
            raise tx._lost_error()

    def _abandon(self) -> None:
        """Roll back a block nobody will leave, and give its connection back."""
        db, tx = self._db, self._tx
        assert isinstance(db, PostgresDB)
        if not isinstance(tx, PostgresTransaction) or tx.ended:
            return
        self._stop_watching()
        tx._end()

        async def end() -> None:
            async with tx._lock:  # a call under way by a task started inside it ends first
                await _given_back(db, self._conn, self._started)

        try:
            self._ending = asyncio.get_running_loop().create_task(end())
        except RuntimeError:  # the loop is gone: so is the pool
            self._uncount()
        else:
            self._ending.add_done_callback(lambda _: self._uncount())
            db._notify()

    def _uncount(self) -> None:
        """The block has ended, or will never end: close() need not wait for it."""
        if self._counted:
            self._counted = False
            db = self._db
            assert isinstance(db, PostgresDB)
            db._calls.end()


_ENDED_WHILE_IDLE = (
    "the session ended while the block waited (the server's idle-in-transaction timeout,"
    " a restart or pg_terminate_backend, or the network)"
)


def _nothing() -> None:
    """Stop watching nothing: a PostgreSQL block needs no watcher thread."""


def _sorted_out(found: list[Any]) -> tuple[list[Run], list[damage.DamagedRow]]:
    """The runs a prune found, and those it cannot read (left where they are)."""
    healthy: list[Run] = []
    damaged: list[damage.DamagedRow] = []
    for row in found:
        try:
            healthy.append(runs.from_row(row))
        except damage.DamagedRow as exc:
            damaged.append(exc)
    return healthy, damaged


_FINISHED_BEFORE = (
    # The completion time as the server writes it out: a batch's key, which
    # gives back the value read, however Python would hold it (-infinity).
    f"SELECT {runs.COLUMNS}, completed_at::text AS key FROM runs"
    f" WHERE {_FINISHED} AND completed_at < $1"
)
_ORDER = ' ORDER BY completed_at, id COLLATE "C"'


async def _finished_before(conn: Any, *, moment: datetime) -> list[Any]:
    return list(await conn.fetch(_FINISHED_BEFORE + _ORDER, moment))


_Batch = tuple[list[Run], list[damage.DamagedRow], tuple[str, str] | None]
"""A prune batch: the runs it deleted, those it passed over, and the key of the last run it
read (None: it found none)."""


async def _delete_finished(conn: Any, *, moment: datetime, after: tuple[str, str] | None) -> _Batch:
    # Read before deleting: a run whose row cannot be read is left where it is,
    # and the next batch starts after the last run this one read.
    after_it = ' AND (completed_at, id COLLATE "C") > ($3::text::timestamptz, $4::text)'
    found = await conn.fetch(
        _FINISHED_BEFORE
        + (after_it if after else "")
        + _ORDER
        + " LIMIT $2 FOR UPDATE SKIP LOCKED",
        moment,
        PRUNE_BATCH_RUNS,
        *(after or ()),
    )
    if not found:
        return [], [], None
    removed, damaged = _sorted_out(found)
    if removed:
        ids = [run.id for run in removed]
        await conn.execute("DELETE FROM runs WHERE id = ANY($1::text[])", ids)
    return removed, damaged, (found[-1][12], found[-1][0])


async def _stats(conn: Any, *, path: str) -> Stats:
    by_status: dict[str, dict[str, int]] = {}
    for table in ("runs", "units"):
        by_status[table] = {
            row[0]: int(row[1])
            for row in await conn.fetch(f"SELECT status, COUNT(*) FROM {table} GROUP BY status")
        }
    event_count = await conn.fetchval("SELECT COUNT(*) FROM events")
    version = await conn.fetchval("SELECT version FROM daemon_db_meta")
    size = await conn.fetchval("SELECT pg_database_size(current_database())")
    return Stats(
        path=path,
        schema_version=int(version),
        runs={status.value: by_status["runs"].get(status.value, 0) for status in RunStatus},
        units={status.value: by_status["units"].get(status.value, 0) for status in UnitStatus},
        events=int(event_count),
        file_bytes=int(size),
        wal_bytes=0,  # the server's write-ahead log is shared by every database: not ours
    )
