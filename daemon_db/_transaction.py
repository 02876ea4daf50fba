"""The object a transaction block hands out: the DB's operations, inside one transaction."""

from __future__ import annotations

from functools import partial
from typing import TypeVar

import aiosqlite

from . import _engine as engine
from ._cancellation import settle
from ._errors import DaemonDBError, DatabaseError
from ._operations import Operations
from ._sqlite import bridge, owners, queries, work
from ._sqlite.work import Work

__all__ = ["Transaction"]

T = TypeVar("T")


class Transaction(Operations):
    """The run, unit and event methods of a DB, inside ``async with db.transaction() as tx``.

    ``tx`` has every method of DB except ``open``, ``close``, ``transaction``,
    ``follow_events`` and the maintenance calls, with the same arguments, results
    and errors. Everything done through it (or through the DB by the task that
    opened the block, and by tasks started inside the block) commits together
    when the block ends, or not at all. A call that raises undoes only its own
    effect, and the block may go on, unless SQLite itself gave the whole
    transaction up (a full disk, an I/O error): then every later call raises
    DatabaseError, and so does leaving the block, since nothing in it can be
    committed. Do not make one yourself: ``DB.transaction()`` hands it out.

    Raises:
        DaemonDBError: From any call once its block has ended.
        DatabaseError: From any call, and from leaving the block, once SQLite has
            rolled the block's transaction back by itself.
    """

    __slots__ = ("_block", "_ended", "_owner", "_path", "connection")

    def __init__(self, connection: aiosqlite.Connection, path: str, owner: owners.Owner) -> None:
        self.connection = connection
        self._path = path
        self._owner = owner
        self._block = work.Block()
        self._ended = False

    @property
    def ended(self) -> bool:
        """True once the block has been left (or abandoned and rolled back)."""
        return self._ended

    @property
    def lost(self) -> str | None:
        """Why SQLite rolled the transaction back by itself, or None if it has not."""
        return self._block.lost

    _queries = queries.QUERIES

    async def _read(self, work_: engine.Work[T]) -> T:
        return await self._sqlite_read(work_.call)

    async def _write(self, work_: engine.Work[T]) -> T:
        return await self._sqlite_write(work_.call)

    async def _sqlite_read(self, work_: Work[T]) -> T:
        self._check_usable()
        return await bridge.submit(
            self.connection,
            partial(work.in_block, work=work_, path=self._path, block=self._block, write=False),
        )

    async def _sqlite_write(self, work_: Work[T]) -> T:
        self._check_usable()
        return await settle(
            bridge.submit(
                self.connection,
                partial(work.in_block, work=work_, path=self._path, block=self._block, write=True),
            )
        )

    def _check_usable(self) -> None:
        if self._ended:
            raise DaemonDBError("this transaction block has ended")
        if self._block.lost is not None:
            raise self.lost_error()

    def lost_error(self) -> DatabaseError:
        """The error for a block whose transaction SQLite rolled back."""
        return DatabaseError(self._path, work.nothing_committed(self._block.lost or ""))

    def end(self) -> None:
        """Mark the block ended: later calls through this object raise DaemonDBError."""
        self._ended = True
