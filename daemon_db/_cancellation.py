"""Awaiting work that must finish even when the awaiting task is cancelled.

Work sent to a connection's thread cannot be stopped half-way, and must not be:
a cancelled caller raises CancelledError only once its work has committed or
rolled back, so that the next call sees a settled database.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, TypeVar

__all__ = ["settle", "wait_out"]

T = TypeVar("T")


async def settle(future: asyncio.Future[T]) -> T:
    """Await ``future``; if cancelled meanwhile, let it finish, then raise CancelledError."""
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await wait_out(future)
        raise


async def wait_out(future: asyncio.Future[Any]) -> None:
    """Wait until ``future`` is done, through any number of cancellations."""
    while not future.done():
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait((future,))
    if not future.cancelled():
        future.exception()  # its caller is gone: mark the error seen so asyncio does not log it
