"""Transactions whose event loop closed under them: rolled back from a watcher thread.

A transaction block holds SQLite's write lock until the block ends, and the
block ends on its event loop. If that loop is closed while a block is open
(its task never finished), nothing on the loop will ever end it, and the lock
would stay held for the life of the process: every other connection to the
file, in this process or another, waits and then fails with SQLITE_BUSY.

So while a block is open, it is watched: a daemon thread looks at the watched
loops a few times a second, and for each one found closed, queues a rollback
on the block's connection thread, which runs whatever the loop's state.
A block whose task merely finished without leaving it is found on the loop
itself (see ``_transaction``); this is for the loop that is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Final

__all__ = ["watch"]

POLL_SECONDS: Final = 0.2

_watched: dict[object, tuple[asyncio.AbstractEventLoop, Callable[[], None]]] = {}
_changed = threading.Condition()
_thread: threading.Thread | None = None


def watch(loop: asyncio.AbstractEventLoop, on_closed: Callable[[], None]) -> Callable[[], None]:
    """Call ``on_closed()`` from another thread if ``loop`` closes; return the way to stop."""
    global _thread
    key = object()
    with _changed:
        _watched[key] = (loop, on_closed)
        if _thread is None:
            _thread = threading.Thread(target=_look, name="daemon_db orphans", daemon=True)
            _thread.start()
        _changed.notify()

    def unwatch() -> None:
        with _changed:
            _watched.pop(key, None)

    return unwatch


def _look() -> None:
    while True:
        with _changed:
            while not _watched:
                _changed.wait()
            _changed.wait(POLL_SECONDS)
            closed = [key for key, (loop, _) in _watched.items() if loop.is_closed()]
            callbacks = [_watched.pop(key)[1] for key in closed]
        for callback in callbacks:
            with contextlib.suppress(Exception):  # one failure must not stop the watch
                callback()
