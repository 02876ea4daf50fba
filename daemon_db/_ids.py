"""Run ids: ULIDs that sort in the order they were made."""

from __future__ import annotations

import os
import threading
import time

from ulid import ULID

__all__ = ["new_run_id"]

_lock = threading.Lock()
_last = 0


def new_run_id() -> str:
    """Make a fresh run id: a ULID, whose text sorts in the order ids were made.

    A ULID is 48 bits of milliseconds then 80 random bits. Within one millisecond,
    or if the clock steps back, the new id is the previous one plus one, so the
    order holds for every id this process makes, from any thread.

    Returns:
        A 26-character ULID string.
    """
    global _last
    with _lock:
        candidate = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10))
        _last = max(candidate, _last + 1)
        return str(ULID.from_int(_last))
