"""DB: the front of the store, whichever engine is behind it.

``DB.open()`` checks its arguments, then opens the SQLite engine for a path
(``_sqlite/db.py``) or the PostgreSQL engine for a URL (``_postgres/db.py``),
each a subclass of DB holding its own connections. What they share is here:
closing (cleanly or as a crash), the lease timer, transaction-block
membership, and waking the followers of the event log.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import contextvars
import os
import re
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, NoReturn, ParamSpec, Self

from . import _process
from . import _validation as check
from ._errors import (
    ClosedError,
    DaemonDBError,
    DamagedRow,
    DatabaseError,
    InvalidRecordError,
    RunNotFoundError,
)
from ._ids import new_run_id
from ._operations import PAGE_SIZE, Operations
from ._owner import Held, Owner
from ._postgres import url
from ._records import FINISHED_RUN_STATUSES, EventRecord, PrunedRuns, Run, Stats

# DB.open() checks SQLite's own arguments whatever the location, as it always has.
from ._sqlite.schema import MEMORY, SYNCHRONOUS_MODES
from ._transaction import Transaction, _TransactionBlock

__all__ = ["DB"]

MIN_LEASE: Final = 1.0
"""The shortest lease an owner may take, in seconds."""

MAX_LEASE: Final = 365 * 24 * 3600.0
"""The longest lease an owner may take, in seconds: a year."""


P = ParamSpec("P")

Progress = Callable[[int], None]
"""Told how many runs a prune has removed so far, after each batch that removed some."""


class PruneTally:
    """What a prune's batches add up to, for either engine.

    Each batch starts after the last run the one before read, so that runs
    passed over are not read again; once the batches find nothing, a second
    sweep from the oldest takes what finished behind the key meanwhile (and,
    on PostgreSQL, a run another session held locked as its batch passed).
    """

    __slots__ = ("_damaged", "_progress", "_sweeps", "removed")

    def __init__(self, progress: Progress | None) -> None:
        self.removed: list[Run] = []
        self._damaged: dict[object, DamagedRow] = {}
        self._progress = progress
        self._sweeps = 0

    def add(self, removed: list[Run], damaged: Iterable[DamagedRow], after: object) -> bool:
        """Count a batch (``after``: the key it ended on, None if it found nothing); True: done."""
        self.removed += removed
        for row in damaged:
            self._damaged.setdefault(row.record_id, row)
        if removed and self._progress is not None:
            self._progress(len(self.removed))
        if after is not None:
            return False
        self._sweeps += 1
        return self._sweeps == 2

    def result(self, path: str) -> PrunedRuns:
        return pruned(self.removed, self._damaged.values(), path)


def pruned(runs: list[Run], damaged: Iterable[DamagedRow], path: str) -> PrunedRuns:
    """What a prune returns: its runs oldest first (a second sweep may find older ones)."""
    runs.sort(key=lambda run: (run.completed_at, run.id))
    return PrunedRuns(runs, (row.error(path) for row in damaged))


class DB(Operations):
    """An open daemon_db store. Open one with ``DB.open(path)``.

    Every method is safe to call from many tasks at once. A DB belongs to the
    event loop it was opened on: a call from another raises DaemonDBError.
    After ``close()``, every call raises ClosedError.
    Besides the methods below, a DB has the run, unit and event operations
    (``create_run``, ``append_event``, ``resumable_runs`` and the others).
    """

    _connections_die_with_the_loop = False
    """Whether the engine's connections belong to the loop (asyncpg's), not to threads."""

    def __init__(self, path: str, owner: Owner) -> None:
        """Use ``DB.open()``; an engine's DB calls this once its connections are open."""
        self._path = path
        self._owner = owner
        self._renewing: asyncio.Task[None] | None = None
        # The block a task is in. Tasks copy their context when created, so a
        # task started inside a block (by gather, or wait_for on Python 3.11)
        # is in it too: its calls join the block instead of waiting for it.
        self._block: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar(
            "daemon_db_block", default=None
        )
        self._closing: asyncio.Task[None] | None = None
        self._kept: DaemonDBError | None = None  # why a clean close could not end its lease
        self._change: asyncio.Future[None] | None = None
        self._loop = asyncio.get_running_loop()

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
        daemon whose loop hangs loses its lease (the renewal after it warns with
        ``RuntimeWarning``, and ``holds()`` says which runs are still its own);
        ``close()`` hands back what it
        holds, unfinished and uncounted. Leaving ``async with`` by an exception
        (not a cancellation, ``KeyboardInterrupt`` or ``SystemExit``) is a crash:
        the runs stay held by this owner, now dead, and the next claim counts
        the takeover as an attempt, as after ``kill -9``.

        Args:
            path: A file path, or ``":memory:"`` for a database that lives as long
                as the DB object, or a ``postgresql://`` (or ``postgres://``) URL:
                a PostgreSQL database, through an asyncpg pool (the ``postgres``
                extra); then ``synchronous`` does not apply.
            readonly: Never write: every write raises ReadOnlyError. The file must
                exist at this release's schema version.
            busy_timeout: Seconds to wait for another process's write lock; on
                PostgreSQL, for any lock another session holds (its
                ``lock_timeout``, unless the URL sets one).
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
                another application's), cannot be created or written, has
                more than one name (hard links: SQLite keeps a log beside each),
                has a schema another tool changed (opened read-write), or, with
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
        if mode not in SYNCHRONOUS_MODES:
            allowed = ", ".join(sorted(SYNCHRONOUS_MODES))
            raise InvalidRecordError("synchronous", synchronous, f"must be one of {allowed}")
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
                "lease", lease, f"must be from {MIN_LEASE:g} to {MAX_LEASE:,.0f} seconds (a year)"
            )
        me = Owner(new_run_id(), name, process, float(lease))
        if url.is_url(location):
            return _Opening(_open_postgres(location, readonly, float(busy_timeout), me))
        from ._sqlite.db import SQLiteDB  # not above: it is a subclass of DB

        return _Opening(SQLiteDB._connect(location, readonly, float(busy_timeout), str(mode), me))

    @property
    def path(self) -> str:
        """The database file's absolute path (as it was when opened), ``":memory:"``, or the URL."""
        return self._path

    @property
    @abc.abstractmethod
    def readonly(self) -> bool:
        """True if the database was opened with ``readonly=True``."""

    def __repr__(self) -> str:
        state = "closed" if self._closing is not None else "open"
        mode = ", readonly" if self.readonly else ""
        return f"<DB {self._path!r} {state}{mode}>"

    async def __aenter__(self) -> Self:
        """``async with db:`` (or ``async with await DB.open(path) as db:``): closed on exit.

        Raises:
            ClosedError: The DB is closed.
        """
        self._check_open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # An exception leaving the block is a crash of the daemon; a cancellation,
        # KeyboardInterrupt or SystemExit is how a daemon is stopped.
        await self._close(crashed=isinstance(exc, Exception))

    async def close(self) -> None:
        """Close the database after the writes and transactions already under way.

        Safe to call twice; calls made once closing has begun raise ClosedError.
        The runs this DB holds are handed back; if ending its lease fails (a
        full disk, a lock held past ``busy_timeout``), a ``RuntimeWarning`` says
        so, and a claim takes them once the lease runs out, counting an attempt.

        Raises:
            DaemonDBError: Called inside a transaction block, which it would wait for.
        """
        await self._close(crashed=False)

    async def _close(self, *, crashed: bool, quiet: bool = False) -> None:
        if not self._loop.is_closed():  # else (asyncio.run(DB.open(p))) only another can
            self._check_loop()
        elif self._connections_die_with_the_loop:
            raise DaemonDBError(
                f"{self._path} was opened on an event loop that has closed, and its"
                " connections closed with it: nothing is left to close (the runs it holds"
                " are taken by a claim once this process ends or its lease runs out)"
            )
        if self._joined() is not None:
            raise DaemonDBError("close() inside a transaction block would wait for itself")
        if self._closing is None:
            self._closing = asyncio.create_task(self._shut_down(crashed=crashed))
        await asyncio.shield(self._closing)
        kept, self._kept = self._kept, None
        if kept is not None and not quiet:
            warnings.warn(
                f"{self._path}: close() could not end this DB's lease"
                f" ({getattr(kept, 'reason', kept)}): a claim takes any runs it holds once"
                " the lease runs out, each counting an attempt",
                RuntimeWarning,
                stacklevel=3,
            )

    async def _shut_down(self, *, crashed: bool) -> None:
        self._notify()  # followers wake up and find the DB closed
        # Not done unless its loop cancelled it on the way out (asyncio.run does).
        # A loop closed without cancelling its tasks will never run it again.
        renewing = self._renewing
        if renewing is not None and not renewing.done() and not self._loop.is_closed():
            renewing.cancel()
            await asyncio.wait([renewing])
        await self._disconnect(crashed=crashed)

    @abc.abstractmethod
    async def _disconnect(self, *, crashed: bool) -> None:
        """Finish the writes under way, hand back the runs (``_release``), close the connections."""

    def _start_renewing(self) -> None:
        """Renew the lease from a task that holds this DB only weakly.

        A bound method's task would keep a DB its daemon dropped without
        closing alive for good, renewing the lease of runs nobody works, so no
        claim would ever take them. Collected, the DB warns, and the lease runs out.
        """
        self._renewing = self._loop.create_task(_renew(weakref.ref(self), self._owner.lease))

    def _lapsed(self, lapses: int) -> None:
        # The count makes each message new: Python's default filter shows a
        # message only once from one line, and every stall must show in the log.
        message = (
            f"{self._path}: the lease of this DB (owner {self._owner.name!r},"
            f" {self._owner.lease:g} s) ran out before it was renewed ({lapses} time"
            f"{'s' if lapses > 1 else ''} so far): its event loop was blocked, or its writes"
            " held up, for longer than that. Another daemon may have claimed the runs it"
            " held; holds(run_id) says which are still its own"
        )
        try:
            warnings.warn(message, RuntimeWarning, stacklevel=1)
        except RuntimeWarning as exc:
            # A filter made it an error (-W error), and nobody awaits this task: the
            # loop's handler logs it, and the renewals go on.
            self._loop.call_exception_handler({"message": message, "exception": exc})

    @abc.abstractmethod
    async def _renew_lease(self) -> bool:
        """Write this owner's lease anew, outside any transaction block; True if it had lapsed."""

    async def _release(self, *, crashed: bool) -> None:
        """Hand back the runs this owner holds, unfinished: a clean close counts no attempt.

        After a crash the runs stay held by this owner, now dead (its lease ended),
        so that the next claim counts the takeover: a run whose resumption raises
        does not crash-loop the daemon past ``max_attempts``.
        """
        # If it fails (a full disk, a lock held too long), the runs are found when the
        # lease expires; closing must not fail for it, but a clean close says so.
        try:
            await self._end_lease(crashed=crashed)
        except DaemonDBError as exc:
            if not crashed:
                self._kept = exc  # said by _close, once the connections are closed

    @abc.abstractmethod
    async def _end_lease(self, *, crashed: bool) -> None:
        """End this owner's lease: its runs released, or (after a crash) left to expire."""

    def __del__(self) -> None:
        if getattr(self, "_closing", True) is None:
            try:
                warnings.warn(
                    f"{self!r} was never closed; use 'async with DB.open(...)' or"
                    " 'await db.close()'",
                    ResourceWarning,
                    stacklevel=2,
                    source=self,
                )
            finally:  # also when a warnings filter made the warning an error
                self._abandoned()

    def _abandoned(self) -> None:
        """Let go of what outlives a DB collected unclosed, from whatever thread collects it.

        Its lease is left to run out, as after a crash: nothing can be awaited here.
        """

    # Looking after the file: each engine does it its own way.

    async def prune_runs(self, completed_before: datetime, *, dry_run: bool = False) -> PrunedRuns:
        """Delete finished runs, with their units and events, completed before a moment.

        Active runs are never touched, whatever their age. The runs go oldest
        first, in batches of at most a few thousand events and a few
        milliseconds (on PostgreSQL, 500 runs), each batch its own short
        transaction (a run is never half-deleted), so that the daemon's writes
        go on in between. The file
        does not shrink: SQLite reuses the freed pages; ``vacuum()`` gives
        them back to the system.

        Args:
            completed_before: A timezone-aware moment: runs completed, failed or
                cancelled before it go.
            dry_run: Delete nothing; return what would be deleted. Works on a
                read-only DB.

        A run whose row another tool broke is never deleted unseen: it is
        left where it is, the prune goes on past it, and its
        ``DamagedRecordError`` is in the result's ``damaged`` list.

        Returns:
            The runs removed (or, with ``dry_run``, that would be), oldest first;
            ``.damaged`` lists those left because their rows could not be read.

        Raises:
            InvalidRecordError: ``completed_before`` is not a timezone-aware datetime,
                or ``dry_run`` is not a bool.
            ReadOnlyError: The DB was opened read-only (and ``dry_run`` is False).
            ClosedError: The DB is closed.
            DatabaseError: The database failed. The batches before the failing
                one are committed: unlike other calls, a prune that raises may
                have deleted runs; a dry run lists those left.
        """
        moment = check.timestamp("completed_before", completed_before)
        if moment is None:
            raise InvalidRecordError("completed_before", None, "is required")
        if not isinstance(dry_run, bool):  # None or 0 must not delete for real
            raise InvalidRecordError("dry_run", dry_run, "must be a bool")
        return await self._prune(moment, dry_run=dry_run)

    @abc.abstractmethod
    async def _prune(
        self, moment: datetime, *, dry_run: bool, progress: Progress | None = None
    ) -> PrunedRuns:
        """``prune_runs`` with its arguments checked: ``moment`` is timezone-aware.

        ``progress`` is called after each batch that removed runs, with how many
        the prune has removed so far (for the command line's bar).
        """

    @abc.abstractmethod
    async def stats(self) -> Stats:
        """Count what the database holds, from one snapshot.

        Returns:
            Runs and units by status, the number of events, the file and WAL
            sizes, and the schema version.

        Raises:
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """

    async def check(self, *, quick: bool = False) -> list[str]:
        """Check the database, from one snapshot.

        Checks SQLite's integrity and foreign keys, the application id and schema
        version, the schema's tables, indexes and triggers, at most one active
        run per branch and repo, event sequences gap-free from 1, stored values,
        and the counts ``stats()`` reports.
        Reads the whole file.

        Args:
            quick: Use SQLite's ``quick_check`` rather than ``integrity_check``:
                every page and record is still read, but indexes are not
                compared with their tables, which is most of the time a full
                check takes on a large file. The store's own checks run either way,
                but for the search for text that is not UTF-8 (which reads every
                row's text).

        Returns:
            One line per problem found, naming where; [] when all is well.

        Raises:
            InvalidRecordError: ``quick`` is not a bool.
            ClosedError: The DB is closed.
            DatabaseError: The database failed.
        """
        if not isinstance(quick, bool):
            raise InvalidRecordError("quick", quick, "must be a bool")
        return await self._check(quick=quick)

    @abc.abstractmethod
    async def _check(self, *, quick: bool) -> list[str]:
        """``check`` with its argument checked."""

    @abc.abstractmethod
    async def vacuum(self) -> int:
        """Give the space freed by deleted runs back to the system.

        Rewrites the whole file (SQLite's ``VACUUM``), so it holds the write
        lock for as long as that takes (seconds per gigabyte): every other write,
        in this process or another, waits. Run it after a large ``prune_runs``,
        when the daemon is quiet. Reads go on meanwhile.

        Returns:
            The bytes the file shrank by: 0 while a reader of an older snapshot
            (a ``check``, a ``backup``, another process) still uses the old
            pages; the file then shrinks once the DB is idle.

        Raises:
            DaemonDBError: Called inside a transaction block.
            ReadOnlyError: The DB was opened read-only.
            ClosedError: The DB is closed.
            DatabaseError: The database failed (SQLite needs room on the disk for a copy
                of the file).
        """

    @abc.abstractmethod
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
                loop as the copy goes. An exception it raises stops the copy
                (nothing is left at ``destination``) and is raised by ``backup()``.

        Returns:
            The number of pages copied.

        Raises:
            DatabaseError: ``destination`` exists (without ``overwrite``) or cannot
                be written; or, whatever ``overwrite`` says, it is this database or
                one of its files (through any link), a folder, not a regular file,
                or has a ``-wal`` or ``-shm`` file beside it (a database that may be
                in use); or SQLite failed; on PostgreSQL, always (use ``pg_dump``).
            InvalidRecordError: ``destination`` is not a file path, ``overwrite``
                is not a bool, or ``progress`` is neither a plain function
                (not ``async def``) nor None.
            DaemonDBError: Called inside a transaction block, which it would copy
                unfinished.
            ClosedError: The DB is closed.
        """

    @abc.abstractmethod
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
        On a read-only DB the block reads the database as it was when the block
        began, and its writes raise ReadOnlyError.

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
            ReadOnlyError: A write inside the block, if the DB was opened read-only.
            ClosedError: On entering, if the DB is closed.
            DatabaseError: The database failed to begin or commit the transaction,
                or rolled it back by itself: nothing in the block was committed.
        """

    def follow_events(self, run_id: str, since: int = 0) -> AsyncIterator[EventRecord]:
        """Follow a run's event log: the events after ``since``, then each new one.

        Use it as ``async for event in db.follow_events(run_id):``. Appends through
        this DB are seen at once, appends by other processes within a poll
        interval (0.1 s); on PostgreSQL, at once from any host (``NOTIFY``).
        The iteration ends once the run has reached a finished status and every
        event appended by then has been yielded, or when the run is deleted.

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
            DatabaseError: The database failed.
        """
        run_id = check.name("run_id", run_id)
        since = check.count("since", since, minimum=0)
        self._check_open()
        return self._follow(run_id, since)

    async def _follow(self, run_id: str, after: int) -> AsyncIterator[EventRecord]:
        """The events after ``after``, then each new one, until the run finishes."""
        found = False
        while True:
            change = self._next_change()  # taken before reading, so no append is missed
            self._check_open()
            status, batch = await self._read(
                self._queries.follow_page(run_id=run_id, after=after, limit=PAGE_SIZE)
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
            await self._wait_for_change(change)

    @abc.abstractmethod
    async def _wait_for_change(self, change: asyncio.Future[None]) -> None:
        """Wait until ``change`` is done (an append was seen), or as long as the engine's
        way of seeing appends may miss one."""

    def _next_change(self) -> asyncio.Future[None]:
        if self._change is None:
            self._change = asyncio.get_running_loop().create_future()
        return self._change

    def _notify(self) -> None:
        """Called after each commit: followers look for new events."""
        change, self._change = self._change, None
        if change is not None and not change.done():
            change.set_result(None)

    # For the command line: private, not part of the API.

    @abc.abstractmethod
    async def _owners_of(self, run_ids: list[str]) -> dict[str, Held]:
        """For the command line: who holds each run, alive or not, and its attempts."""

    @abc.abstractmethod
    async def _find_run_ids(self, typed: str, *, limit: int) -> tuple[list[str], int]:
        """Run ids matching ``typed`` as people type them (see ``runs.find_ids``)."""

    # Routing: the methods of Operations end up in each engine's _read and _write.

    def _joined(self) -> Transaction | None:
        """The open block the calling task is in: its own, or the one it was started in."""
        tx = self._block.get()
        if tx is None or tx.ended:
            return None
        if tx._left_suspended():
            raise DaemonDBError(
                "this task is in a transaction block that an async generator opened and"
                " yielded inside of: the block stays open until the generator is closed,"
                " and a call made meanwhile would join it, and be rolled back with it."
                " Close the generator first ('await gen.aclose()', or"
                " 'async with contextlib.aclosing(gen)'), or end the block before yielding"
            )
        return tx

    def _in_write_block(self) -> bool:
        tx = self._joined()
        return tx is not None and tx._in_write_block()

    def _check_open(self) -> None:
        if self._closing is not None:
            raise ClosedError(self._path)
        self._check_loop()

    def _check_loop(self) -> None:
        # On another loop, the lease renewal (a task of the first loop) stops with
        # that loop, and another daemon would take this one's runs as it works.
        loop = asyncio._get_running_loop()
        if loop is not self._loop and loop is not None:
            raise DaemonDBError(
                f"{self._path} was opened on another event loop: a DB belongs to the loop"
                " it was opened on (open one on each loop)"
            )


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

    if not TYPE_CHECKING:  # a type checker refuses DB.open(...).get_run(...) by itself

        def __getattr__(self, name: str) -> NoReturn:
            # Only for names it lacks: a DB's method called on what was never awaited.
            if hasattr(DB, name):
                raise AttributeError(
                    f"DB.open() returns a coroutine, not a DB (it has no {name!r}): write"
                    " 'db = await DB.open(...)' or 'async with DB.open(...) as db'"
                )
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __enter__(self) -> NoReturn:
        self._connecting.close()  # never to be awaited: no "never awaited" warning
        raise TypeError(
            "DB.open() is asynchronous: write 'async with DB.open(...) as db', not 'with'"
        )

    def __exit__(self, *exc_info: object) -> None:  # 'with' asks for both before entering
        raise AssertionError("unreachable: __enter__ raises")

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
        await self._db.__aexit__(exc_type, exc, traceback)


def weakly(method: Callable[P, None]) -> Callable[P, None]:
    """``method``, called only while its object lives: a callback that keeps no DB alive.

    A DB its daemon dropped unclosed must be collected (see ``DB._start_renewing``).
    """
    ref = weakref.WeakMethod(method)

    def call(*args: P.args, **kwargs: P.kwargs) -> None:
        if (bound := ref()) is not None:
            bound(*args, **kwargs)

    return call


async def _renew(ref: weakref.ref[DB], lease: float) -> None:
    """Renew an owner's lease every third of it, while its DB is open and referred to.

    A renewal that finds the lease ran out first warns: the daemon's loop was
    blocked (or its writes held up) for longer than the lease, and a claim
    elsewhere may have taken its runs, which it would go on working unaware.
    """
    lapses = 0
    while True:
        await asyncio.sleep(lease / 3)
        db = ref()
        if db is None:
            return
        # A failure (a full disk) is not the caller's: the next renewal tries again,
        # and meanwhile the lease still runs.
        with contextlib.suppress(DaemonDBError):
            if await db._renew_lease():
                lapses += 1
                db._lapsed(lapses)
        del db  # while asleep, the task must not keep the DB alive


async def _open_postgres(location: str, readonly: bool, busy_timeout: float, owner: Owner) -> DB:
    """Open the PostgreSQL engine, imported only now: asyncpg is an optional extra."""
    try:
        from ._postgres.db import PostgresDB
    except ImportError as exc:
        reason = (
            "PostgreSQL needs asyncpg, the postgres extra: pip install '.[postgres]'"
            f" from a checkout ({exc})"
        )
        raise DatabaseError(url.shown_url(location), reason) from None
    return await PostgresDB._open_url(location, readonly, busy_timeout, owner)


def _location(path: object) -> str:
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise InvalidRecordError("path", path, "must be a str or os.PathLike[str]")
    if path != MEMORY:
        check.name("path", path)
    if _SCHEME.match(path) and not url.is_url(path):
        # A file of that name would be made in a folder named "sqlite:", say.
        raise InvalidRecordError(
            "path",
            path,
            "is a URL daemon_db does not open: give a file's path, or a postgresql:// URL",
        )
    return path


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
"""A URL's scheme, as in ``sqlite:///state.db`` (``file:state.db`` is a file's name, as tested)."""
