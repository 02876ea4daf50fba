"""A SQLite transaction block: the writer's connection, reserved until the block ends.

On a read-only DB, a connection of the block's own, reading one snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

import aiosqlite

from .. import _engine as engine
from .._cancellation import settle, wait_out
from .._errors import DaemonDBError, DatabaseError, ReadOnlyError
from .._owner import Owner
from .._transaction import Transaction, _TransactionBlock
from . import bridge, orphans, queries, schema, work
from .work import Work
from .writer import Writer

if TYPE_CHECKING:
    from .db import SQLiteDB

__all__ = ["SQLiteTransaction"]

T = TypeVar("T")


class SQLiteTransaction(Transaction):
    """The Transaction of a SQLite block: its calls run on the connection held for it."""

    __slots__ = ()

    _queries = queries.QUERIES
    _block: work.Block

    def __init__(
        self, connection: aiosqlite.Connection, path: str, owner: Owner, *, readonly: bool
    ) -> None:
        self._connection = connection
        self._path = path
        self._owner = owner
        self._readonly = readonly
        self._block = work.Block()
        self._ended = False

    async def _read(self, work_: engine.Work[T]) -> T:
        return await self._sqlite_read(work_.call)

    async def _write(self, work_: engine.Work[T]) -> T:
        return await self._sqlite_write(work_.call)

    async def _sqlite_read(self, work_: Work[T]) -> T:
        self._check_usable()
        return await bridge.submit(
            self._connection,
            partial(work.in_block, work=work_, path=self._path, block=self._block, write=False),
        )

    async def _sqlite_write(self, work_: Work[T]) -> T:
        self._check_usable()
        if self._readonly:
            raise ReadOnlyError(self._path)
        return await settle(
            bridge.submit(
                self._connection,
                partial(work.in_block, work=work_, path=self._path, block=self._block, write=True),
            )
        )

    def _lost_error(self) -> DatabaseError:
        """The error for a block whose transaction SQLite rolled back."""
        return DatabaseError(self._path, work.nothing_committed(self._block.lost or ""))


class SQLiteTransactionBlock(_TransactionBlock):
    """``DB.transaction()`` of a SQLite DB: the writer reserved for the block.

    A read-only DB has no writer: its block reads one snapshot through a
    connection of its own, opened for the block. The DB's reader is shared by
    every task, whose reads must neither wait for the block nor see its snapshot.
    """

    __slots__ = ("_done",)

    _db: SQLiteDB
    _done: asyncio.Future[None]  # a read-only DB's block: set when it has ended

    async def __aenter__(self) -> Transaction:
        entered_in = sys._getframe(1)
        db = self._db
        if db._joined() is not None:
            raise DaemonDBError("transaction blocks do not nest: this task is already in one")
        db._check_open()
        owner = asyncio.current_task()
        assert owner is not None, "a transaction block runs in a task"
        writer = db._writer
        connection = await (self._reading() if writer is None else self._writing(writer))
        tx = self._tx = SQLiteTransaction(connection, db._path, db._owner, readonly=writer is None)
        tx._opened(entered_in, owner)
        self._token = db._block.set(tx)
        # A block must end even if its task never leaves it (the task returned,
        # or its loop was closed): otherwise SQLite's write lock stays held.
        self._owner = owner
        owner.add_done_callback(self._abandoned)
        self._unwatch = orphans.watch(asyncio.get_running_loop(), self._abandon)
        return tx

    async def _writing(self, writer: Writer) -> aiosqlite.Connection:
        """The writer's connection, reserved, in a write transaction."""
        path = self._db._path
        connection = await writer.reserve()
        try:
            await settle(bridge.submit(connection, writer.gated(partial(work.begin, path=path))))
        except BaseException:
            # Cancelled once BEGIN had run: the transaction is open, end it.
            try:
                await settle(bridge.submit(connection, partial(work.end, path=path, commit=False)))
            finally:
                writer.release()
            raise
        return connection

    async def _reading(self) -> aiosqlite.Connection:
        """A connection of the block's own, in a read transaction on one snapshot."""
        db = self._db
        connection = await bridge.connect(
            partial(schema.open_reader, db._path, busy_timeout=db._busy_timeout)
        )
        try:
            await settle(bridge.submit(connection, partial(work.begin_reading, path=db._path)))
        except BaseException:
            await wait_out(asyncio.ensure_future(connection.close()))
            raise
        self._done = asyncio.get_running_loop().create_future()
        db._snapshots.add(self._done)  # close() waits for the block to end
        return connection

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        db, tx, writer = self._db, self._tx, self._db._writer
        assert tx is not None
        if exc_type is GeneratorExit:  # the task was destroyed: nothing can be awaited now
            self._abandon()
            return
        self._stop_watching()
        tx._end()  # from here, calls by tasks started inside the block go outside it
        lost = tx.lost
        try:
            commit = exc_type is None and lost is None
            await settle(
                bridge.submit(tx._connection, partial(work.end, path=db._path, commit=commit))
            )
        finally:
            with contextlib.suppress(ValueError):  # left in another context than entered
                db._block.reset(self._token)
            if writer is None:
                try:  # a cancellation meanwhile is raised once the connection is closed
                    await settle(asyncio.ensure_future(tx._connection.close()))
                finally:
                    self._ended_reading()
            else:
                writer.release()
                db._notify()
        if lost is not None and (exc_type is None or issubclass(exc_type, Exception)):
            raise tx._lost_error()

    def _abandon(self) -> None:
        """Roll back a block nobody will leave, and give its connection back.

        Called on the loop when the block's task ends inside it, or from the
        watcher thread when the loop has closed: the rollback is queued on the
        connection's thread either way, and runs whatever the loop's state.
        """
        tx, writer = self._tx, self._db._writer
        if tx is None or tx.ended:
            return
        self._stop_watching()
        tx._end()
        bridge.run_detached(tx._connection, partial(work.end, path=self._db._path, commit=False))
        if writer is None:
            tx._connection.stop()  # closes the block's own connection, and its thread ends
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                self._ended_reading()
            return
        with contextlib.suppress(RuntimeError):  # the loop is gone: nothing waits for the writer
            writer.release()
            self._db._notify()

    def _ended_reading(self) -> None:
        self._db._snapshots.discard(self._done)
        if not self._done.done():
            self._done.set_result(None)
