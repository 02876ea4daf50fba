"""The write path: one connection, writes in order, grouped into shared transactions.

A write that finds the connection idle goes straight to its thread as a batch
of one, and its caller awaits that batch's future: one round trip, no task.
Writes that arrive while a batch is on the thread queue up and go together as
the next batch, in one transaction (``work.write_batch``): group commit, so
concurrent writers share each commit, while each caller still gets its own
result or its own error. Batches are sent and delivered from future callbacks.

A transaction block takes the connection for itself with ``reserve()``: its
place in the queue is kept, so writes queued before it go first and writes
queued after it wait until ``release()``.

Each batch holds ``gate`` (a lock shared with this file's checkpointer) while
it runs, and first calls ``before`` (see checkpointer.py): the checkpointer
takes the gate while it truncates the WAL, so that a batch then waits for
exactly that long, rather than in SQLite's busy handler.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sqlite3
from collections.abc import Callable
from functools import partial
from typing import Any, Final, TypeVar

import aiosqlite

from .._cancellation import wait_out
from . import bridge
from .work import Failure, Work, write_batch, write_one

__all__ = ["Writer"]

T = TypeVar("T")

MAX_BATCH: Final = 512
"""Writes per transaction at most, so that one batch never holds the write lock long."""


def _nothing(conn: object) -> None:
    """Queued behind a batch whose future was cancelled: done means that batch is done."""


def _gated(
    gate: contextlib.AbstractContextManager[object],
    before: Callable[[sqlite3.Connection], None] | None,
    work: Work[T],
    conn: sqlite3.Connection,
) -> T:
    """Run a batch on the connection's thread, holding the gate, after ``before``.

    A function of the module, not a method: the connection's thread keeps its
    last item referenced, and that must not keep the Writer (and its DB) alive.
    """
    with gate:
        if before is not None:
            before(conn)
        return work(conn)


class _Write:
    __slots__ = ("batch", "future", "work")

    def __init__(self, work: Work[Any], future: asyncio.Future[Any]) -> None:
        self.work = work
        self.future = future
        self.batch: asyncio.Future[Any] | None = None  # set when sent


class _Reservation:
    """A transaction block's place in the queue; its future is granted the connection."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[aiosqlite.Connection]) -> None:
        self.future = future


class Writer:
    """Serialises the writes of one connection and commits them in groups."""

    def __init__(
        self,
        connection: aiosqlite.Connection,
        path: str,
        on_commit: Callable[[], None],
        gate: contextlib.AbstractContextManager[object] | None = None,
        before: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        self.connection = connection
        self._gate = contextlib.nullcontext() if gate is None else gate
        self._before = before
        self._path = path
        self._on_commit = on_commit
        self._queue: collections.deque[_Write | _Reservation] = collections.deque()
        self._batch: asyncio.Future[Any] | None = None  # on the thread now
        self._reserved = False  # a transaction block holds the connection
        self._gathering = False  # a batch just ended: its callers are about to write again

    async def submit(self, work: Work[T]) -> T:
        """Run ``work`` in a write transaction, shared with other queued writes."""
        if self._batch is None and not self._reserved and not self._gathering and not self._queue:
            return await self._alone(work)
        write = _Write(work, asyncio.get_running_loop().create_future())
        self._queue.append(write)
        self._next()
        try:
            result: T = await write.future
        except asyncio.CancelledError:
            # Still queued, its future cancelled: it will be skipped, never run.
            # Already sent: its batch runs to the end; wait for it to settle.
            if write.batch is not None:
                await wait_out(write.batch)
            raise
        return result

    async def _alone(self, work: Work[T]) -> T:
        # The writer is idle: this write is a batch of one, and its caller awaits
        # the batch's own future, a loop iteration sooner than a delivery.
        batch = bridge.submit(
            self.connection,
            partial(
                _gated, self._gate, self._before, partial(write_one, work=work, path=self._path)
            ),
        )
        self._batch = batch
        batch.add_done_callback(self._after_alone)
        try:
            return await batch
        except asyncio.CancelledError:
            if batch.cancelled():  # cancelled by us: wait for the work behind a no-op
                await wait_out(bridge.submit(self.connection, _nothing))
            raise

    def _after_alone(self, batch: asyncio.Future[Any]) -> None:
        # Even if the batch was cancelled and may still be running, sending the
        # next one is safe: the connection's thread runs its queue in order.
        self._batch = None
        if not batch.cancelled() and batch.exception() is None:
            self._on_commit()
        self._next()

    async def reserve(self) -> aiosqlite.Connection:
        """Take the connection for a transaction block, until ``release()``."""
        reservation = _Reservation(asyncio.get_running_loop().create_future())
        self._queue.append(reservation)
        self._next()
        try:
            return await reservation.future
        except asyncio.CancelledError:
            if reservation.future.done() and not reservation.future.cancelled():
                self.release()  # granted just as the caller was cancelled
            raise

    def gated(self, work: Work[T]) -> Callable[[sqlite3.Connection], T]:
        """``work`` as a batch runs it, holding the gate after ``before``: a block's BEGIN.

        A block's writes are no batch, so without this a daemon writing only in
        blocks never ran the RESTART the checkpointer waits for, and its WAL grew.
        """
        return partial(_gated, self._gate, self._before, work)

    def release(self) -> None:
        """Give the connection back after a transaction block."""
        self._reserved = False
        self._next()

    async def drain(self) -> None:
        """Wait until every write and transaction block queued so far has ended."""
        await self.reserve()
        self.release()

    def _next(self) -> None:
        """If the connection is free, grant the next reservation or send the next batch."""
        if self._batch is not None or self._reserved or self._gathering:
            return
        queue = self._queue
        while queue and queue[0].future.done():  # cancelled while queued
            queue.popleft()
        if not queue:
            return
        if isinstance(queue[0], _Reservation):
            self._reserved = True
            queue.popleft().future.set_result(self.connection)
            return
        writes: list[_Write] = []
        while queue and len(writes) < MAX_BATCH:
            write = queue[0]
            if not isinstance(write, _Write):
                break  # a reservation: the batch ends before it
            queue.popleft()
            if not write.future.done():
                writes.append(write)
        batch = bridge.submit(
            self.connection,
            partial(
                _gated,
                self._gate,
                self._before,
                partial(write_batch, works=[write.work for write in writes], path=self._path),
            ),
        )
        for write in writes:
            write.batch = batch
        self._batch = batch
        batch.add_done_callback(partial(self._deliver, writes))

    def _deliver(self, writes: list[_Write], batch: asyncio.Future[Any]) -> None:
        self._batch = None
        if batch.cancelled():  # only if the loop is torn down under us
            outcomes: list[Any] = [Failure(asyncio.CancelledError())] * len(writes)
        elif (error := batch.exception()) is not None:
            outcomes = [Failure(error)] * len(writes)
        else:
            outcomes = batch.result()
        for write, outcome in zip(writes, outcomes, strict=True):
            if write.future.done():  # its caller was cancelled; the outcome stands
                continue
            if isinstance(outcome, Failure):
                write.future.set_exception(outcome.error)
            else:
                write.future.set_result(outcome)
        self._on_commit()
        if len(writes) > 1:
            self._gather()
        else:
            self._next()

    def _gather(self) -> None:
        """Send the next batch one loop iteration from now, not at once.

        The many callers just answered resume in this iteration, and most write
        again at once: waiting for them makes their writes one batch, rather
        than a batch of the first one and another of the rest. (After a lone
        write there is nobody to wait for.)
        """
        self._gathering = True
        asyncio.get_running_loop().call_soon(self._gathered)

    def _gathered(self) -> None:
        self._gathering = False
        self._next()
