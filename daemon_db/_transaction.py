"""The object a transaction block hands out: the DB's operations, inside one transaction."""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TypeVar

import aiosqlite

from ._cancellation import settle
from ._errors import DaemonDBError
from ._operations import Operations
from ._sqlite import bridge, work
from ._sqlite.work import Work

__all__ = ["Transaction"]

T = TypeVar("T")


class Transaction(Operations):
    """The run, unit and event methods of a DB, inside ``async with db.transaction() as tx``.

    ``tx`` has every method of DB except ``open``, ``close``, ``transaction``,
    ``follow_events`` and the maintenance calls, with the same arguments, results
    and errors. Everything done through it (or through the DB by the task that
    opened the block) commits together when the block ends, or not at all. A call
    that raises undoes only its own effect, and the block may go on. Do not make
    one yourself: ``DB.transaction()`` hands it out.

    Raises:
        DaemonDBError: From any call once its block has ended.
    """

    __slots__ = ("_active", "_path", "connection", "owner")

    def __init__(self, connection: aiosqlite.Connection, path: str, owner: asyncio.Task[object]):
        self.connection = connection
        self._path = path
        self._active = True
        self.owner = owner

    async def _read(self, work_: Work[T]) -> T:
        self._check_active()
        return await bridge.submit(self.connection, partial(work.read, work=work_, path=self._path))

    async def _write(self, work_: Work[T]) -> T:
        self._check_active()
        return await settle(
            bridge.submit(self.connection, partial(work.in_savepoint, work=work_, path=self._path))
        )

    def _check_active(self) -> None:
        if not self._active:
            raise DaemonDBError("this transaction block has ended")

    def end(self) -> None:
        """Mark the block ended: later calls through this object raise DaemonDBError."""
        self._active = False
