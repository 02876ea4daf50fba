"""The DB of a SQLite store: its connections, group commit, checkpoints and maintenance.

A file database has two connections, each on its own thread: a writer, fed by
the group-commit Writer, and a reader (opened read-only), so that reads see the
last committed state without waiting behind writes (WAL mode). ``":memory:"``
has only the writer, and its reads queue with the writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Final, TypeVar

import aiosqlite

from .. import _engine as engine
from .. import _timestamps as timestamps
from .. import _validation as check
from .._cancellation import settle, wait_out
from .._db import DB, Progress, PruneTally, _location, pruned, weakly
from .._errors import DaemonDBError, DatabaseError, InvalidRecordError, ReadOnlyError
from .._operations import PAGE_SIZE
from .._owner import Held, Owner
from .._records import PrunedRuns, Run, Stats
from .._transaction import _TransactionBlock
from . import bridge, maintenance, owners, queries, rows, runs, schema, work
from .checkpointer import Checkpointer
from .transaction import SQLiteTransaction, SQLiteTransactionBlock
from .work import Work
from .writer import Writer

__all__ = ["SQLiteDB"]

T = TypeVar("T")

FOLLOW_POLL_SECONDS: Final = 0.1
"""How often follow_events looks for events appended by other processes."""

MAX_BUSY_TIMEOUT: Final = 2_147_483.647
"""The longest wait SQLite can be given, in seconds (its limit is a C int of milliseconds).

Longer ``busy_timeout`` values, infinity included, wait this long (24.8 days):
past it, SQLite's count would overflow and it would not wait at all.
"""

PRUNE_BATCH_EVENTS: Final = 5000
"""prune_runs deletes runs with about this many events per transaction."""

PRUNE_BATCH_SECONDS: Final = 0.01
"""...and stops a transaction's deleting after this long, so other writes wait little."""

PRUNE_PAUSE_SECONDS: Final = 0.5
"""Between batches, prune_runs waits at most this long for checkpoints to catch up."""

PROGRESS_WAIT: Final = 1.0
"""How often backup(), waiting at each step for its progress callback, looks that the loop runs."""


class _Stopped(Exception):
    """Raised on a backup's thread to stop the copy: its progress raised, or its caller was
    cancelled."""


def _anchored(path: str) -> str:
    """``path``, absolute: every later use of it (sizes, the log, backup's checks)
    means the file opened now, whatever directory the daemon moves to (daemonizing).

    Joined, not normalized: "link/../x.db" is beside the link's target, as the
    kernel reads it, not "x.db" (as ``os.path.abspath`` reads it).
    """
    if path == schema.MEMORY or os.path.isabs(path):
        return path
    try:
        return os.path.join(os.getcwd(), path)
    except OSError as exc:  # the working directory was removed
        raise DatabaseError(path, f"a relative path, in no folder: {exc.strerror}") from None


class SQLiteDB(DB):
    """The DB ``DB.open()`` returns for a file path or ``":memory:"``."""

    _queries = queries.QUERIES

    def __init__(
        self,
        path: str,
        writer: aiosqlite.Connection | None,
        reader: aiosqlite.Connection | None,
        owner: Owner,
        busy_timeout: float = 5.0,
    ) -> None:
        """Use ``DB.open()``; this only assembles connections it has opened."""
        super().__init__(path, owner)
        self._busy_timeout = busy_timeout
        self._snapshots: set[asyncio.Future[None]] = set()
        """The transaction blocks of a read-only DB under way: each ends its future."""
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
                weakly(self._notify),  # the writer is the DB's: no cycle keeps a dropped DB
                gate=None if checkpointer is None else checkpointer.gate,
                before=None if checkpointer is None else checkpointer.before_write,
            )
        )
        self._reader = reader

    @classmethod
    async def _connect(
        cls, path: str, readonly: bool, busy_timeout: float, synchronous: str, owner: Owner
    ) -> SQLiteDB:
        busy_timeout = min(busy_timeout, MAX_BUSY_TIMEOUT)
        path = _anchored(path)
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
        db = cls(path, writer, reader, owner, busy_timeout)
        if db._writer is not None:
            try:
                await db._writer.submit(partial(owners.ensure, owner=owner))
            except BaseException:
                await db._close(crashed=False, quiet=True)  # it never held anything
                raise
            db._start_renewing()
        return db

    @property
    def readonly(self) -> bool:
        return self._writer is None

    # Opening and closing

    async def _disconnect(self, *, crashed: bool) -> None:
        for block in list(self._snapshots):  # a read-only DB's blocks under way
            await wait_out(block)
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

    def _abandoned(self) -> None:
        # Stopped here, not left to aiosqlite's own finalizer, which leaves the
        # thread running when a warnings filter makes its warning an error.
        if self._checkpointer is not None:
            self._checkpointer.stop_soon()
        for connection in (self._reader, None if self._writer is None else self._writer.connection):
            if connection is not None:
                connection.stop()

    async def _renew_lease(self) -> bool:
        assert self._writer is not None
        return await self._writer.submit(partial(owners.renew, owner=self._owner))

    async def _end_lease(self, *, crashed: bool) -> None:
        assert self._writer is not None
        end = owners.expire if crashed else owners.release
        await self._writer.submit(partial(end, owner=self._owner))

    # Looking after the file

    async def _prune(
        self, moment: datetime, *, dry_run: bool, progress: Progress | None = None
    ) -> PrunedRuns:
        cutoff = timestamps.to_text(moment)
        if dry_run:
            return await self._prunable(cutoff)
        tally = PruneTally(progress)
        after: maintenance.Key | None = None
        # Inside a transaction block nothing commits until it ends: no pausing
        # for checkpoints, which could only wait for the block.
        checkpointer = self._checkpointer if self._joined() is None else None
        while True:
            with contextlib.nullcontext() if checkpointer is None else checkpointer.bulk_batch():
                if checkpointer is not None:  # a file: its pages may have to come from disk
                    warm = partial(maintenance.warm_finished, cutoff=cutoff, after=after)
                    await self._sqlite_read(partial(_holding, checkpointer.reading_ahead, warm))
                batch, passed, after = await self._sqlite_write(
                    partial(
                        maintenance.delete_finished,
                        cutoff=cutoff,
                        after=after,
                        max_events=PRUNE_BATCH_EVENTS,
                        max_seconds=PRUNE_BATCH_SECONDS,
                    )
                )
            if tally.add([run for run, _ in batch], passed, after):
                return tally.result(self._path)
            if after is not None and checkpointer is not None and batch:
                await self._let_checkpoints_catch_up(checkpointer)

    async def _let_checkpoints_catch_up(self, checkpointer: Checkpointer) -> None:
        # Deleting writes pages faster than the disk syncs them: pausing while
        # the checkpointer is behind keeps the WAL's RESTART short, which every
        # other writer would wait for (a prune is in no hurry; they may be).
        waited = 0.0
        while checkpointer.behind and not checkpointer.restart_pending:
            if waited >= PRUNE_PAUSE_SECONDS:
                return  # a reader pins the WAL, say: pausing longer would not help
            await asyncio.sleep(0.01)
            waited += 0.01
        if checkpointer.restart_pending:
            # Only a write runs the RESTART (before its batch). Left to the
            # next one after the prune's read ahead, it synced while the disk
            # still served that read's readahead: 20 to 70 ms of every write
            # held up, against a few now, while the disk is quiet.
            await self._sqlite_write(_nothing)

    async def _prunable(self, cutoff: str) -> PrunedRuns:
        """A dry run: the pages of runs a prune would take, each read after the one before."""
        found: dict[str, Run] = {}
        damaged: dict[object, rows.DamagedRow] = {}
        after: maintenance.Key | None = None
        while True:
            page = await self._sqlite_read(
                partial(maintenance.finished_before, cutoff=cutoff, after=after, limit=PAGE_SIZE)
            )
            # Pages are read in turn, not from one snapshot: a run finished again
            # meanwhile (a new completed_at) may come up on a later page too.
            for _, run, _ in page:
                if isinstance(run, Run):
                    found.setdefault(run.id, run)
                else:
                    damaged.setdefault(run.record_id, run)
            if len(page) < PAGE_SIZE:
                return pruned(list(found.values()), damaged.values(), self._path)
            after = page[-1][0]

    async def stats(self) -> Stats:
        return await self._sqlite_read(partial(maintenance.stats, path=self._path))

    async def _check(self, *, quick: bool) -> list[str]:
        return await self._sqlite_read(partial(maintenance.check, quick=quick))

    async def vacuum(self) -> int:
        if self._joined() is not None:
            raise DaemonDBError("vacuum() cannot run inside a transaction block")
        self._check_open()
        if self._writer is None:
            raise ReadOnlyError(self._path)
        work: Work[int] = partial(maintenance.vacuum, path=self._path)
        checkpointer = self._checkpointer
        if checkpointer is not None:  # its checkpoint waits for a pass of ours to end
            work = partial(_holding, checkpointer.checkpointing, work)
        # VACUUM cannot run inside a transaction: take the writer between batches.
        connection = await self._writer.reserve()
        try:
            return await settle(bridge.submit(connection, work))
        finally:
            self._writer.release()
            if checkpointer is not None:  # a reader kept the file from shrinking: once idle
                checkpointer.committed()

    async def backup(
        self,
        destination: str | os.PathLike[str],
        *,
        overwrite: bool = False,
        progress: Callable[[int, int], object] | None = None,
    ) -> int:
        if not isinstance(overwrite, bool):  # "false" must not replace a file
            raise InvalidRecordError("overwrite", overwrite, "must be a bool")
        if progress is not None and not callable(progress):
            raise InvalidRecordError("progress", progress, "must be a callable, or None")
        if inspect.iscoroutinefunction(progress):
            raise InvalidRecordError(
                "progress", progress, "must be a plain function: it is called, never awaited"
            )
        target = _location(destination)
        if target == schema.MEMORY:
            raise InvalidRecordError("destination", target, "must be a file path")
        loop = asyncio.get_running_loop()
        raised: list[BaseException] = []  # by progress, or the caller's cancellation

        def told(copied: int, total: int, done: threading.Event) -> None:  # on the loop
            assert progress is not None
            try:
                progress(copied, total)
            except BaseException as exc:  # an operator's "stop", or a mistake
                raised.append(exc)
                if isinstance(exc, KeyboardInterrupt | SystemExit):
                    raise  # the loop's to stop on
            finally:
                done.set()

        def report(copied: int, total: int) -> None:  # on the connection's thread
            if progress is not None and not raised:
                # In step with the loop (a step copies 4 MB), so that a "stop" stops
                # this copy, however long the callback takes; unless the loop has
                # stopped, when nothing will ever call it.
                done = threading.Event()
                loop.call_soon_threadsafe(told, copied, total, done)
                while not done.wait(PROGRESS_WAIT) and loop.is_running():
                    pass
            if raised:
                raise _Stopped  # sqlite3 ends the backup; backup_to removes the copy

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
        copying = asyncio.ensure_future(
            self._sqlite_read(copy) if self._reader is not None else self._copy_in_memory(copy)
        )
        try:
            pages = await asyncio.shield(copying)
        except asyncio.CancelledError as exc:
            # As a cancelled write does, it returns once its work is settled: the
            # copy stops at its next step and is removed, rather than landing later.
            raised.append(exc)
            await wait_out(copying)
            raise
        except _Stopped:
            raise raised[0] from None
        if raised:  # the loop had stopped: the copy was whole, and is in place
            raise raised[0]
        return pages

    async def _copy_in_memory(self, copy: Work[int]) -> int:
        # The only connection is the writer, and SQLite cannot copy a database
        # from inside a write transaction: take it between batches.
        assert self._writer is not None
        connection = await self._writer.reserve()
        try:
            return await settle(
                bridge.submit(connection, partial(work.read, work=copy, path=self._path))
            )
        finally:
            self._writer.release()

    def transaction(self) -> _TransactionBlock:
        return SQLiteTransactionBlock(self)

    # Following events

    async def _wait_for_change(self, change: asyncio.Future[None]) -> None:
        # Appends of this DB wake it; another process's, the poll finds.
        await asyncio.wait((change,), timeout=FOLLOW_POLL_SECONDS)

    def _notify(self) -> None:
        """Called after each commit: followers look for new events, the checkpointer wakes."""
        if self._checkpointer is not None:
            self._checkpointer.committed()
        super()._notify()

    # For the command line: private, not part of the API.

    async def _owners_of(self, run_ids: list[str]) -> dict[str, Held]:
        return await self._sqlite_read(partial(owners.ownership, run_ids=run_ids))

    async def _find_run_ids(self, typed: str, *, limit: int) -> tuple[list[str], int]:
        typed = check.name("run_id", typed)
        return await self._sqlite_read(partial(runs.find_ids, typed=typed, limit=limit))

    # Routing: the methods of Operations end up here.

    async def _read(self, work_: engine.Work[T]) -> T:
        return await self._sqlite_read(work_.call)

    async def _write(self, work_: engine.Work[T]) -> T:
        return await self._sqlite_write(work_.call)

    async def _sqlite_read(self, work_: Work[T]) -> T:
        tx = self._joined()
        if tx is not None:
            assert isinstance(tx, SQLiteTransaction)
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
            assert isinstance(tx, SQLiteTransaction)
            return await tx._sqlite_write(work_)
        self._check_open()
        if self._writer is None:
            raise ReadOnlyError(self._path)
        return await self._writer.submit(work_)


def _holding(lock: threading.Lock, work: Work[T], conn: sqlite3.Connection) -> T:
    """Run ``work`` on a connection's thread, holding ``lock``."""
    with lock:
        return work(conn)


def _nothing(conn: sqlite3.Connection) -> None:
    """A write of nothing: its batch runs what the checkpointer asked for first."""
