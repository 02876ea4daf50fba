"""The write path: one connection, writes in order, grouped into shared transactions.

Each write is queued with a future. A flusher task takes everything queued so
far and runs it on the connection's thread as one batch: one transaction with a
savepoint per write (``work.write_batch``). Writes that arrive while a batch is
on the thread wait and go together into the next one (group commit), so many
concurrent writers share each commit, while each caller still gets its own
result or its own error.

A transaction block takes the connection for itself through ``reserve()``;
queued writes wait until it ends.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from functools import partial
from typing import Any, Final, TypeVar

import aiosqlite

from . import bridge
from .cancellation import wait_out
from .work import Failure, Work, write_batch

__all__ = ["Writer"]

T = TypeVar("T")

MAX_BATCH: Final = 512
"""Writes per transaction at most, so that one batch never holds the write lock long."""


class _Write:
    __slots__ = ("future", "sent", "work")

    def __init__(self, work: Work[Any], future: asyncio.Future[Any]) -> None:
        self.work = work
        self.future = future
        self.sent = False


class Writer:
    """Serialises the writes of one connection and commits them in groups."""

    def __init__(
        self, connection: aiosqlite.Connection, path: str, on_commit: Callable[[], None]
    ) -> None:
        self.connection = connection
        self._path = path
        self._on_commit = on_commit
        self._queue: collections.deque[_Write] = collections.deque()
        self._flusher: asyncio.Task[None] | None = None
        # Held by the flusher for each batch and by a transaction block for its
        # whole length; asyncio.Lock is first come, first served.
        self._lock = asyncio.Lock()

    async def submit(self, work: Work[T]) -> T:
        """Run ``work`` in a write transaction, shared with other queued writes."""
        write = _Write(work, asyncio.get_running_loop().create_future())
        self._queue.append(write)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush())
        try:
            result: T = await asyncio.shield(write.future)
        except asyncio.CancelledError:
            if write.sent:
                await wait_out(write.future)
            else:
                write.future.cancel()  # still queued: it will never run
            raise
        return result

    async def reserve(self) -> aiosqlite.Connection:
        """Take the connection for a transaction block, until ``release()``.

        Writes queued before this call go first; writes queued after it wait.
        """
        await self._lock.acquire()
        return self.connection

    def release(self) -> None:
        """Give the connection back after a transaction block."""
        self._lock.release()

    async def drain(self) -> None:
        """Wait until every queued write and every transaction block has ended."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)
        async with self._lock:
            pass

    async def _flush(self) -> None:
        try:
            while self._queue:
                async with self._lock:
                    batch = self._take_batch()
                    if batch:
                        await self._run(batch)
                self._on_commit()
        finally:
            self._flusher = None

    def _take_batch(self) -> list[_Write]:
        batch: list[_Write] = []
        while self._queue and len(batch) < MAX_BATCH:
            write = self._queue.popleft()
            if not write.future.done():  # done here means cancelled while queued
                write.sent = True
                batch.append(write)
        return batch

    async def _run(self, batch: list[_Write]) -> None:
        works = [write.work for write in batch]
        try:
            outcomes = await bridge.run(
                self.connection, partial(write_batch, works=works, path=self._path)
            )
        except Exception as exc:
            outcomes = [Failure(exc)] * len(batch)
        except asyncio.CancelledError:
            # Only when the event loop itself is shutting down: the outcome is unknown.
            for write in batch:
                write.future.cancel()
            raise
        for write, outcome in zip(batch, outcomes, strict=True):
            if write.future.done():
                continue
            if isinstance(outcome, Failure):
                write.future.set_exception(outcome.error)
            else:
                write.future.set_result(outcome)
