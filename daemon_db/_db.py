"""DB: opening and closing the store, routing calls, transactions and following events.

A file database has two connections, each on its own thread: a writer, fed by
the group-commit Writer, and a reader (opened read-only), so that reads see the
last committed state without waiting behind writes (WAL mode). ``":memory:"``
has only the writer, and its reads queue with the writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import warnings
from collections.abc import AsyncIterator, Callable, Coroutine, Generator
from datetime import datetime
from functools import partial
from types import TracebackType
from typing import Any, Final, TypeVar

import aiosqlite

from . import _engine as engine
from . import _process
from . import _timestamps as timestamps
from . import _validation as check
from ._cancellation import settle
from ._errors import (
    ClosedError,
    DaemonDBError,
    DatabaseError,
    InvalidRecordError,
    ReadOnlyError,
    RunNotFoundError,
)
from ._ids import new_run_id
from ._operations import PAGE_SIZE, Operations
from ._postgres import url
from ._records import FINISHED_RUN_STATUSES, EventRecord, Run, Stats
from ._sqlite import bridge, events, maintenance, orphans, owners, queries, runs, schema, work
from ._sqlite.checkpointer import Checkpointer
from ._sqlite.work import Work
from ._sqlite.writer import Writer
from ._transaction import Transaction

__all__ = ["DB"]

T = TypeVar("T")

FOLLOW_POLL_SECONDS: Final = 0.1
"""How often follow_events looks for events appended by other processes."""

MAX_BUSY_TIMEOUT: Final = 2_147_483.647
"""The longest wait SQLite can be given, in seconds (its limit is a C int of milliseconds).

Longer ``busy_timeout`` values, infinity included, wait this long (24.8 days):
past it, SQLite's count would overflow and it would not wait at all.
"""

MIN_LEASE: Final = 1.0
"""The shortest lease an owner may take, in seconds."""

MAX_LEASE: Final = 365 * 24 * 3600.0
"""The longest lease an owner may take, in seconds: a year."""

PRUNE_BATCH_EVENTS: Final = 5000
"""prune_runs deletes runs with about this many events per transaction."""

PRUNE_BATCH_SECONDS: Final = 0.01
"""...and stops a transaction's deleting after this long, so other writes wait little."""


class DB(Operations):
    """An open daemon_db store. Open one with ``DB.open(path)``.

    Every method is safe to call from many tasks at once. A DB belongs to the
    event loop it was opened on. After ``close()``, every call raises ClosedError.
    Besides the methods below, a DB has the run, unit and event operations
    (``create_run``, ``append_event``, ``resumable_runs`` and the others).
    """

    _queries = queries.QUERIES

    def __init__(
        self,
        path: str,
        writer: aiosqlite.Connection | None,
        reader: aiosqlite.Connection | None,
        owner: owners.Owner,
    ) -> None:
        """Use ``DB.open()``; this only assembles connections it has opened."""
        self._path = path
        self._owner = owner
        self._renewing: asyncio.Task[None] | None = None
        # Checkpoints run beside the writer, never inside its commits.
        self._checkpointer = (
            Checkpointer(path) if writer is not None and path != schema.MEMORY else None
        )
        checkpointer = self._checkpointer
        self._writer = (
            None
            if writer is None
            else Writer(
                writer,
                path,
                self._notify,
                gate=None if checkpointer is None else checkpointer.gate,
                before=None if checkpointer is None else checkpointer.before_write,
            )
        )
        self._reader = reader
        # The block a task is in. Tasks copy their context when created, so a
        # task started inside a block (by gather, or wait_for on Python 3.11)
        # is in it too: its calls join the block instead of waiting for it.
        self._block: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar(
            "daemon_db_block", default=None
        )
        self._closing: asyncio.Task[None] | None = None
        self._change: asyncio.Future[None] | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        busy_timeout: float = 5.0,
        synchronous: str = "NORMAL",
        owner: str | None = None,
        lease: float = 30.0,
    ) -> _Opening:
        """Open the database at ``path``, creating and migrating it as needed.

        Await the result (``db = await DB.open(path)``, then ``await db.close()``), or
        use it with ``async with DB.open(path) as db:`` to close it on exit. A new
        file, and any missing parent folders, are created; the file is readable
        by its owner only. Opening read-write applies pending schema migrations.
        With ``readonly=True`` nothing is ever written, not even a migration:
        that is how an inspector opens a database a daemon is using.

        A read-write DB is an *owner*: the runs it creates and claims are held by
        it, so that no other daemon's ``claim_resumable_runs()`` takes them while
        it lives. It renews its lease from the event loop while open (a write
        every ``lease / 3`` seconds, through the same queue as every write), so a
        daemon whose loop hangs loses its lease; ``close()`` hands back what it
        holds, unfinished and uncounted. Leaving ``async with`` by an exception
        (not a cancellation, ``KeyboardInterrupt`` or ``SystemExit``) is a crash:
        the runs stay held by this owner, now dead, and the next claim counts
        the takeover as an attempt, as after ``kill -9``.

        Args:
            path: A file path, or ``":memory:"`` for a database that lives as long
                as the DB object, or a ``postgresql://`` (or ``postgres://``) URL:
                a PostgreSQL database, through an asyncpg pool (the ``postgres``
                extra); then ``busy_timeout`` and ``synchronous`` do not apply.
            readonly: Never write: every write raises ReadOnlyError. The file must
                exist at this release's schema version.
            busy_timeout: Seconds to wait for another process's write lock.
            synchronous: SQLite's ``synchronous`` setting: ``"OFF"``, ``"NORMAL"``,
                ``"FULL"`` or ``"EXTRA"``.
            owner: The owner's name, as ``resumable_runs()`` and ``daemon-db`` show
                it; by default this process's host, pid and start time. Names are
                for people: each open DB is an owner of its own, whatever its name.
            lease: Seconds an owner counts as alive after each renewal, whatever
                its process does (on this machine, a dead process is found at once);
                from 1 second to a year.

        Returns:
            DB: The open DB, once awaited; or, with ``async with``, the DB of the
                block, closed when the block ends.

        Raises:
            DatabaseError: The file is not a daemon_db database (not SQLite, or
                another application's), cannot be created or written, or, with
                ``readonly=True``, does not exist or is ``":memory:"``. Nothing in
                the file is changed; the error names the path.
            SchemaVersionError: The file's schema is newer than this release, or,
                with ``readonly=True``, older (it needs migrating).
            InvalidRecordError: An argument is invalid (raised by ``DB.open()``
                itself, before anything is awaited).
        """
        location = _location(path)
        if not isinstance(readonly, bool):
            raise InvalidRecordError("readonly", readonly, "must be a bool")
        if isinstance(busy_timeout, bool) or not isinstance(busy_timeout, int | float):
            raise InvalidRecordError("busy_timeout", busy_timeout, "must be a number of seconds")
        if not busy_timeout >= 0:  # NaN too
            raise InvalidRecordError("busy_timeout", busy_timeout, "must be >= 0 seconds")
        mode = synchronous.upper() if isinstance(synchronous, str) else synchronous
        if mode not in schema.SYNCHRONOUS_MODES:
            allowed = ", ".join(sorted(schema.SYNCHRONOUS_MODES))
            raise InvalidRecordError("synchronous", synchronous, f"must be one of {allowed}")
        waited = min(float(busy_timeout), MAX_BUSY_TIMEOUT)
        if owner is not None and readonly:
            raise InvalidRecordError("owner", owner, "a read-only DB holds no runs")
        process = _process.this_process()
        name = check.optional_name("owner", owner) or process.default_owner()
        if isinstance(lease, bool) or not isinstance(lease, int | float):
            raise InvalidRecordError("lease", lease, "must be a number of seconds")
        if not MIN_LEASE <= lease <= MAX_LEASE:
            # Below a second the renewals (every third of it) would keep a core
            # busy and still lose the lease; past a year its expiry overflows.
            raise InvalidRecordError(
                "lease", lease, f"must be from {MIN_LEASE:g} to {MAX_LEASE:g} seconds (a year)"
            )
        me = owners.Owner(new_run_id(), name, process, float(lease))
        if url.is_url(location):
            return _Opening(_open_postgres(location, readonly, me))
        return _Opening(cls._connect(location, readonly, waited, str(mode), me))

    @classmethod
    async def _connect(
        cls, path: str, readonly: bool, busy_timeout: float, synchronous: str, owner: owners.Owner
    ) -> DB:
        writer = reader = None
        try:
            if not readonly:
                writer = await bridge.connect(
                    partial(
                        schema.open_writer,
                        path,
                        busy_timeout=busy_timeout,
                        synchronous=synchronous,
                    )
                )
            if path != schema.MEMORY or readonly:
                reader = await bridge.connect(
                    partial(schema.open_reader, path, busy_timeout=busy_timeout)
                )
        except BaseException:
            if writer is not None:
                await writer.close()
            raise
        db = cls(path, writer, reader, owner)
        if db._writer is not None:
            try:
                await db._writer.submit(partial(owners.ensure, owner=owner))
            except BaseException:
                await db.close()
                raise
            db._renewing = asyncio.get_running_loop().create_task(db._renew())
        return db

    @property
    def path(self) -> str:
        """The path the database was opened with, or ``":memory:"``."""
        return self._path

    @property
    def readonly(self) -> bool:
        """True if the database was opened with ``readonly=True``."""
        return self._writer is None

    def __repr__(self) -> str:
        state = "closed" if self._closing is not None else "open"
        mode = ", readonly" if self.readonly else ""
        return f"<DB {self._path!r} {state}{mode}>"

    async def close(self) -> None:
        """Close the database after the writes and transactions already under way.

        Safe to call twice; calls made once closing has begun raise ClosedError.

        Raises:
            DaemonDBError: Called inside a transaction block, which it would wait for.
        """
        await self._close(crashed=False)

    async def _close(self, *, crashed: bool) -> None:
        if self._joined() is not None:
            raise DaemonDBError("close() inside a transaction block would wait for itself")
        if self._closing is None:
            self._closing = asyncio.create_task(self._shut_down(crashed=crashed))
        await asyncio.shield(self._closing)

    async def _shut_down(self, *, crashed: bool) -> None:
        self._notify()  # followers wake up and find the DB closed
        # Not done unless its loop cancelled it on the way out (asyncio.run does).
        if self._renewing is not None and not self._renewing.done():
            self._renewing.cancel()
            await asyncio.wait([self._renewing])
        try:
            if self._writer is not None:
                await self._writer.drain()
                await self._release(crashed=crashed)
        finally:
            if self._checkpointer is not None:  # its connection closes before the writer's
                await asyncio.to_thread(self._checkpointer.stop)
            # The writer closes last: as the last connection to the file, it can
            # checkpoint the WAL into the database and remove it.
            try:
                if self._reader is not None:
                    await self._reader.close()
            finally:
                if self._writer is not None:
                    await self._writer.connection.close()

    async def _renew(self) -> None:
        """Renew this owner's lease every third of it, while the DB is open."""
        assert self._writer is not None
        while True:
            await asyncio.sleep(self._owner.lease / 3)
            # A failure (a full disk) is not the caller's: the next renewal tries again,
            # and meanwhile the lease still runs.
            with contextlib.suppress(DaemonDBError):
                await self._writer.submit(partial(owners.ensure, owner=self._owner))

    async def _release(self, *, crashed: bool) -> None:
        """Hand back the runs this owner holds, unfinished: a clean close counts no attempt.

        After a crash the runs stay held by this owner, now dead (its lease ended),
        so that the next claim counts the takeover: a run whose resumption raises
        does not crash-loop the daemon past ``max_attempts``.
        """
        assert self._writer is not None
        end = owners.expire if crashed else owners.release
        # If it fails (a full disk), the runs are found when the lease expires; closing
        # must not fail for it.
        with contextlib.suppress(DaemonDBError):
            await self._writer.submit(partial(end, owner=self._owner))

    def __del__(self) -> None:
        if getattr(self, "_closing", True) is None:
            warnings.warn(
                f"{self!r} was never closed; use 'async with DB.open(...)' or 'await db.close()'",
                ResourceWarning,
                stacklevel=2,
                source=self,
            )

    # Looking after the file

    async def prune_runs(self, completed_before: datetime, *, dry_run: bool = False) -> list[Run]:
        """Delete finished runs, with their units and events, completed before a moment.

        Active runs are never touched, whatever their age. The runs go oldest
        first, in batches of at most a few thousand events and a few
        milliseconds, each batch its own short transaction (a run is never
        half-deleted), so that the daemon's writes go on in between. The file
        does not shrink: SQLite reuses the freed pages; ``vacuum()`` gives
        them back to the system.

        Args:
            completed_before: A timezone-aware moment: runs completed, failed or
                cancelled before it go.
            dry_run: Delete nothing; return what would be deleted. Works on a
                read-only DB.

        Returns:
            The runs removed (or, with ``dry_run``, that would be), oldest first.

        Raises:
            InvalidRecordError: ``completed_before`` is not a timezone-aware datetime.
            ReadOnlyError: The DB was opened read-only (and ``dry_run`` is False).
            ClosedError: The DB is closed.
            DatabaseError: SQLite failed.
        """
        moment = check.timestamp("completed_before", completed_before)
        if moment is None:
            raise InvalidRecordError("completed_before", None, "is required")
        cutoff = timestamps.to_text(moment)
        if dry_run:
            return await self._prunable(cutoff)
        removed: list[Run] = []
        while batch := await self._sqlite_write(
            partial(
                maintenance.delete_finished,
                cutoff=cutoff,
                max_events=PRUNE_BATCH_EVENTS,
                max_seconds=PRUNE_BATCH_SECONDS,
            )
        ):
            removed += [run for run, _ in batch]
        return removed

    async def _prunable(self, cutoff: str) -> list[Run]:
        found: dict[str, Run] = {}
        after: tuple[str, str] | None = None
        while True:
            page = await self._sqlite_read(
                partial(maintenance.finished_before, cutoff=cutoff, after=after, limit=PAGE_SIZE)
            )
            # Pages are read in turn, not from one snapshot: a run finished again
            # meanwhile (a new completed_at) may come up on a later page too.
            for run, _ in page:
                found.setdefault(run.id, run)
            if len(page) < PAGE_SIZE:
                return list(found.values())
            last = page[-1][0]
            assert last.completed_at is not None
            after = (timestamps.to_text(last.completed_at), last.id)

    async def stats(self) -> Stats:
        """Count what the database holds, from one snapshot.

        Returns:
            Runs and units by status, the number of events, the file and WAL
            sizes, and the schema version.

        Raises:
            ClosedError: The DB is closed.
            DatabaseError: SQLite failed.
        """
        return await self._sqlite_read(partial(maintenance.stats, path=self._path))

    async def check(self, *, quick: bool = False) -> list[str]:
        """Check the database, from one snapshot.

        Checks SQLite's integrity and foreign keys, the application id and schema
        version, at most one active run per branch and repo, event sequences
        gap-free from 1, stored values, and the counts ``stats()`` reports.
        Reads the whole file.

        Args:
            quick: Use SQLite's ``quick_check`` rather than ``integrity_check``:
                every page and record is still read, but indexes are not
                compared with their tables, which is most of the time a full
                check takes on a large file. The store's own checks run either way.

        Returns:
            One line per problem found, naming where; [] when all is well.

        Raises:
            InvalidRecordError: ``quick`` is not a bool.
            ClosedError: The DB is closed.
            DatabaseError: SQLite failed.
        """
        if not isinstance(quick, bool):
            raise InvalidRecordError("quick", quick, "must be a bool")
        return await self._sqlite_read(partial(maintenance.check, quick=quick))

    async def vacuum(self) -> int:
        """Give the space freed by deleted runs back to the system.

        Rewrites the whole file (SQLite's ``VACUUM``), so it holds the write
        lock for as long as that takes (seconds per gigabyte): every other write,
        in this process or another, waits. Run it after a large ``prune_runs``,
        when the daemon is quiet. Reads go on meanwhile.

        Returns:
            The bytes the file shrank by.

        Raises:
            DaemonDBError: Called inside a transaction block.
            ReadOnlyError: The DB was opened read-only.
            ClosedError: The DB is closed.
            DatabaseError: SQLite failed (the disk needs room for a copy of the file).
        """
        if self._joined() is not None:
            raise DaemonDBError("vacuum() cannot run inside a transaction block")
        self._check_open()
        if self._writer is None:
            raise ReadOnlyError(self._path)
        # VACUUM cannot run inside a transaction: take the writer between batches.
        connection = await self._writer.reserve()
        try:
            return await settle(
                bridge.submit(connection, partial(maintenance.vacuum, path=self._path))
            )
        finally:
            self._writer.release()

    async def backup(
        self,
        destination: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        progress: Callable[[int, int], object] | None = None,
    ) -> int:
        """Copy the database, as one consistent snapshot, into a new file.

        Safe beside a running daemon, and on a read-only DB: the daemon's writes
        go on during the copy. The copy is written to an owner-only temporary file
        beside ``destination`` and renamed into place, so a failure never leaves
        half a file there.

        Args:
            destination: The file to write (not ``":memory:"``).
            overwrite: Replace ``destination`` if it exists.
            progress: Called as ``progress(copied, total)`` (in pages) on the event
                loop as the copy goes.

        Returns:
            The number of pages copied.

        Raises:
            DatabaseError: ``destination`` exists (without ``overwrite``) or cannot
                be written; or, whatever ``overwrite`` says, it is this database or
                one of its files (through any link), a folder, not a regular file,
                or has a ``-wal`` or ``-shm`` file beside it (a database that may be
                in use); or SQLite failed.
            InvalidRecordError: ``destination`` is not a file path.
            DaemonDBError: Called inside a transaction block, which it would copy
                unfinished.
            ClosedError: The DB is closed.
        """
        target = _location(destination)
        if target == schema.MEMORY:
            raise InvalidRecordError("destination", target, "must be a file path")
        loop = asyncio.get_running_loop()

        def report(copied: int, total: int) -> None:  # runs on the connection's thread
            if progress is not None:
                loop.call_soon_threadsafe(progress, copied, total)

        copy = partial(
            maintenance.backup_to,
            source=self._path,
            destination=target,
            overwrite=overwrite,
            progress=report,
        )
        if self._joined() is not None:
            raise DaemonDBError("backup() inside a transaction block would copy it unfinished")
        self._check_open()
        if self._reader is not None:
            return await self._sqlite_read(copy)
        # In memory the only connection is the writer, and SQLite cannot copy a
        # database from inside a write transaction: take it between batches.
        assert self._writer is not None
        connection = await self._writer.reserve()
        try:
            return await settle(
                bridge.submit(connection, partial(work.read, work=copy, path=self._path))
            )
        finally:
            self._writer.release()

    def transaction(self) -> _TransactionBlock:
        """A block whose writes commit together, or not at all.

        ``async with db.transaction() as tx:`` -- ``tx`` has the run, unit and event
        methods of the DB, and calls on the DB by the task that opened the block,
        or by tasks started inside it (``gather``, ``create_task``, ``wait_for``),
        join it too, so they never wait for the block that waits for them. A call
        that raises inside the block undoes only its own effect, and the block
        may go on. An exception leaving the block (cancellation included) rolls
        it back and propagates. Tasks started before the block never see its
        uncommitted writes; their writes wait until it ends, and on a file
        database their reads do not wait and see the last committed state.

        If SQLite rolls the whole transaction back by itself (a full disk, an I/O
        error), every later call in the block raises DatabaseError, and so does
        leaving it, normally or not: a block never ends as committed when its
        work was not. A block whose task ends inside it, or whose event loop is
        closed under it, is rolled back, and its lock freed.

        Returns:
            Transaction: With ``async with``: the transaction, begun on entering the
                block and committed (or rolled back) on leaving it.

        Raises:
            DaemonDBError: On entering, if this task is already in a block (blocks
                do not nest).
            ReadOnlyError: On entering, if the DB was opened read-only.
            ClosedError: On entering, if the DB is closed.
            DatabaseError: SQLite failed to begin or commit the transaction, or
                rolled it back by itself: nothing in the block was committed.
        """
        return _TransactionBlock(self)

    def follow_events(self, run_id: str, since: int = 0) -> AsyncIterator[EventRecord]:
        """Follow a run's event log: the events after ``since``, then each new one.

        Use it as ``async for event in db.follow_events(run_id):``. Appends through
        this DB are seen at once, appends by other processes within a poll
        interval (0.1 s). The iteration ends once the run has reached a finished
        status and every event appended by then has been yielded, or when the
        run is deleted.

        Args:
            run_id: The run's id.
            since: Start after this sequence (0: from the first event).

        Returns:
            An async iterator of the run's events, in sequence order.

        Raises:
            RunNotFoundError: The run does not exist (raised by the first step of
                the iteration).
            InvalidRecordError: An argument is invalid (raised by the call itself).
            ClosedError: The DB is closed (raised by the call, or by the next step
                once the DB closes).
            DatabaseError: SQLite failed.
        """
        run_id = check.name("run_id", run_id)
        since = check.count("since", since, minimum=0)
        self._check_open()
        return self._follow(run_id, since)

    async def _follow(self, run_id: str, after: int) -> AsyncIterator[EventRecord]:
        found = False
        while True:
            change = self._next_change()  # taken before reading, so no append is missed
            status, batch = await self._sqlite_read(
                partial(events.follow_page, run_id=run_id, after=after, limit=PAGE_SIZE)
            )
            if status is None:
                if not found:
                    raise RunNotFoundError(run_id)
                return
            found = True
            for event in batch:
                yield event
                after = event.sequence
            if len(batch) == PAGE_SIZE:
                continue
            if status in FINISHED_RUN_STATUSES:
                return
            await asyncio.wait((change,), timeout=FOLLOW_POLL_SECONDS)

    def _next_change(self) -> asyncio.Future[None]:
        if self._change is None:
            self._change = asyncio.get_running_loop().create_future()
        return self._change

    def _notify(self) -> None:
        """Called after each commit: followers look for new events, the checkpointer wakes."""
        if self._checkpointer is not None:
            self._checkpointer.committed()
        change, self._change = self._change, None
        if change is not None and not change.done():
            change.set_result(None)

    # For the command line: private, not part of the API.

    async def _owners_of(self, run_ids: list[str]) -> dict[str, owners.Held]:
        """For the command line: who holds each run, alive or not, and its attempts."""
        return await self._sqlite_read(partial(owners.ownership, run_ids=run_ids))

    async def _find_run_ids(self, typed: str, *, limit: int) -> tuple[list[str], int]:
        """Run ids matching ``typed`` as people type them (see ``runs.find_ids``)."""
        typed = check.name("run_id", typed)
        return await self._sqlite_read(partial(runs.find_ids, typed=typed, limit=limit))

    # Routing: the methods of Operations end up here.

    def _joined(self) -> Transaction | None:
        """The open block the calling task is in: its own, or the one it was started in."""
        tx = self._block.get()
        return None if tx is None or tx.ended else tx

    def _check_open(self) -> None:
        if self._closing is not None:
            raise ClosedError(self._path)

    async def _read(self, work_: engine.Work[T]) -> T:
        return await self._sqlite_read(work_.call)

    async def _write(self, work_: engine.Work[T]) -> T:
        return await self._sqlite_write(work_.call)

    async def _sqlite_read(self, work_: Work[T]) -> T:
        tx = self._joined()
        if tx is not None:
            return await tx._sqlite_read(work_)
        self._check_open()
        if self._reader is not None:
            return await bridge.submit(
                self._reader, partial(work.read, work=work_, path=self._path)
            )
        assert self._writer is not None
        return await self._writer.submit(work_)

    async def _sqlite_write(self, work_: Work[T]) -> T:
        tx = self._joined()
        if tx is not None:
            return await tx._sqlite_write(work_)
        self._check_open()
        if self._writer is None:
            raise ReadOnlyError(self._path)
        return await self._writer.submit(work_)


class _Opening(Coroutine[Any, Any, "DB"]):
    """What ``DB.open()`` returns: await it for a DB, or ``async with`` it.

    It is a coroutine, so ``asyncio.run(DB.open(path))``, ``create_task`` and
    ``wait_for`` take it as they take any other.
    """

    __slots__ = ("_connecting", "_db")

    def __init__(self, connecting: Coroutine[Any, Any, DB]) -> None:
        self._connecting = connecting
        self._db: DB | None = None

    def send(self, value: Any) -> Any:
        return self._connecting.send(value)

    def throw(self, *args: Any) -> Any:
        return self._connecting.throw(*args)

    def close(self) -> None:
        self._connecting.close()

    def __await__(self) -> Generator[Any, None, DB]:
        return self._connecting.__await__()

    async def __aenter__(self) -> DB:
        self._db = await self
        return self._db

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._db is not None
        # An exception leaving the block is a crash of the daemon; a cancellation,
        # KeyboardInterrupt or SystemExit is how a daemon is stopped.
        await self._db._close(crashed=isinstance(exc, Exception))


class _TransactionBlock:
    """The async context manager ``DB.transaction()`` returns."""

    __slots__ = ("_db", "_owner", "_token", "_tx", "_unwatch")

    def __init__(self, db: DB) -> None:
        self._db = db
        self._tx: Transaction | None = None

    async def __aenter__(self) -> Transaction:
        db = self._db
        if db._joined() is not None:
            raise DaemonDBError("transaction blocks do not nest: this task is already in one")
        db._check_open()
        writer = db._writer
        if writer is None:
            raise ReadOnlyError(db._path)
        owner = asyncio.current_task()
        assert owner is not None, "a transaction block runs in a task"
        connection = await writer.reserve()
        try:
            await settle(bridge.submit(connection, partial(work.begin, path=db._path)))
        except BaseException:
            # Cancelled once BEGIN had run: the transaction is open, end it.
            try:
                await settle(
                    bridge.submit(connection, partial(work.end, path=db._path, commit=False))
                )
            finally:
                writer.release()
            raise
        tx = self._tx = Transaction(connection, db._path, db._owner)
        self._token = db._block.set(tx)
        # A block must end even if its task never leaves it (the task returned,
        # or its loop was closed): otherwise SQLite's write lock stays held.
        self._owner = owner
        owner.add_done_callback(self._abandoned)
        self._unwatch = orphans.watch(asyncio.get_running_loop(), self._abandon)
        return tx

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        db, tx, writer = self._db, self._tx, self._db._writer
        assert tx is not None
        assert writer is not None
        if exc_type is GeneratorExit:  # the task was destroyed: nothing can be awaited now
            self._abandon()
            return
        self._stop_watching()
        tx.end()  # from here, calls by tasks started inside the block go outside it
        lost = tx.lost
        try:
            commit = exc_type is None and lost is None
            await settle(
                bridge.submit(tx.connection, partial(work.end, path=db._path, commit=commit))
            )
        finally:
            with contextlib.suppress(ValueError):  # left in another context than entered
                db._block.reset(self._token)
            writer.release()
            db._notify()
        if lost is not None and (exc_type is None or issubclass(exc_type, Exception)):
            raise tx.lost_error()

    def _stop_watching(self) -> None:
        self._owner.remove_done_callback(self._abandoned)
        self._unwatch()

    def _abandoned(self, owner: asyncio.Task[Any]) -> None:
        if self._tx is not None and not self._tx.ended:
            self._abandon()
            warnings.warn(
                f"a transaction block of {self._db!r} was never left (its task ended inside"
                " it); it has been rolled back",
                ResourceWarning,
                stacklevel=1,
            )

    def _abandon(self) -> None:
        """Roll back a block nobody will leave, and give the writer back.

        Called on the loop when the block's task ends inside it, or from the
        watcher thread when the loop has closed: the rollback is queued on the
        connection's thread either way, and runs whatever the loop's state.
        """
        tx, writer = self._tx, self._db._writer
        if tx is None or tx.ended or writer is None:
            return
        self._stop_watching()
        tx.end()
        bridge.run_detached(tx.connection, partial(work.end, path=self._db._path, commit=False))
        with contextlib.suppress(RuntimeError):  # the loop is gone: nothing waits for the writer
            writer.release()
            self._db._notify()


async def _open_postgres(location: str, readonly: bool, owner: owners.Owner) -> DB:
    """Open the PostgreSQL engine, imported only now: asyncpg is an optional extra."""
    try:
        from ._postgres.db import PostgresDB
    except ImportError as exc:
        reason = f"PostgreSQL needs asyncpg: pip install 'daemon_db[postgres]' ({exc})"
        raise DatabaseError(url.shown_url(location), reason) from None
    return await PostgresDB._open_url(location, readonly, owner)


def _location(path: object) -> str:
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise InvalidRecordError("path", path, "must be a str or os.PathLike[str]")
    if path != schema.MEMORY:
        check.name("path", path)
    return path
