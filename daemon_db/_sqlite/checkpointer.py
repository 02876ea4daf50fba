"""Checkpoints off the commit path: a thread and a connection of their own.

In WAL mode every commit appends pages to the ``-wal`` file, and a checkpoint
copies them back into the database so that the WAL can start over. SQLite's
automatic checkpoint runs inside the commit that crosses ``wal_autocheckpoint``
(1,000 pages), so that one caller waits for the copy and its ``fsync``: tens of
milliseconds, and seconds on a large file. The writer connection therefore has
the automatic checkpoint off (``schema.open_writer``), and this thread does the
work instead, while the writer goes on:

- A PASSIVE checkpoint, at most every ``INTERVAL_SECONDS`` while commits
  happen. It takes no lock that a writer or reader waits for, and copies what
  the readers no longer need.
- A RESTART checkpoint when the WAL holds more than ``RESTART_BYTES``. A
  PASSIVE checkpoint never catches up with a writer that keeps writing, and
  readers that come and go keep the WAL from starting over. So once the WAL
  is that large, more PASSIVE passes copy what came during the one before,
  the database file is flushed to disk here (the RESTART syncs it while
  holding writes up), and the writer's own thread runs a RESTART before its
  next batch (``before_write``): it copies the few pages left, waits at most
  ``RESTART_WAIT_SECONDS`` for readers of older snapshots to finish, and the
  batch then starts the WAL from its beginning. It runs there rather than here because it holds the
  write lock: the writer would wait for it anyway, and this way it waits
  exactly that long, not in SQLite's busy handler, whose sleeps grow to tens
  of milliseconds.
- A TRUNCATE checkpoint once no commit has come for ``IDLE_SECONDS``: the WAL
  file is emptied to zero bytes.

Should the checkpointer fall behind all the same (no checkpoint finished for
``STALLED_SECONDS``: an ``fsync`` that stalls), the writer's thread truncates
the WAL itself once the file passes ``WAL_LIMIT_BYTES``: writes then wait for
the disk, and the WAL stays bounded.

A checkpoint that finds another under way (another process's), or readers it
cannot wait for, is simply tried again later. A reader that holds one snapshot
for long (a full ``check()`` of a large file, a backup) pins the pages written
since it began: the WAL grows until it ends, whatever checkpoints do.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from . import schema

__all__ = ["Checkpointer"]

_sync = getattr(os, "fdatasync", os.fsync)  # what SQLite uses: the data, not the times

INTERVAL_SECONDS: Final = 0.05
"""At most one PASSIVE checkpoint this often while commits come.

Short, so that the WAL grows little between two looks at it (a writer can
append some 80 MB a second), and each checkpoint's ``fsync`` has little to flush.
"""

RESTART_BYTES: Final = 24 * 1024 * 1024
"""A WAL holding more than this is restarted (then at most about twice this on disk)."""

RESTART_WAIT_SECONDS: Final = 0.005
"""How long a RESTART or TRUNCATE waits for a writer or readers, holding up writes meanwhile."""

CATCH_UP_PASSES: Final = 8
CAUGHT_UP_SECONDS: Final = 0.005
"""Before a RESTART, PASSIVE checkpoints are repeated (at most ``CATCH_UP_PASSES``) until one
takes less than this: then little came during it, and little is left for the RESTART."""

WAL_LIMIT_BYTES: Final = 56 * 1024 * 1024
"""A WAL file larger than this is truncated by the writer itself before its next batch...

...when the checkpointer has finished no checkpoint for ``STALLED_SECONDS`` (a
disk whose ``fsync`` stalls): the writer then waits for the disk, rather than
the WAL growing without bound. (The file's size is its high-water mark, not
what it holds, so size alone would fire long after the WAL has started over.)
"""

STALLED_SECONDS: Final = 1.0

LIMIT_CHECKED_EVERY: Final = 32
"""The writer looks at the WAL file's size once per this many batches."""

IDLE_SECONDS: Final = 1.0
"""No commit for this long: the WAL file is truncated to zero bytes."""


class Checkpointer:
    """Keeps one database file's WAL short, from a daemon thread of its own."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._file = str(Path(path).resolve())  # as the process's descriptors name it
        self._descriptor: int | None = None  # one SQLite holds on the file, found once
        self.gate = threading.Lock()
        """Held by the writer's batches; taken here for a TRUNCATE."""
        self.reading_ahead = threading.Lock()
        """Held while a bulk writer reads the pages of its next batch (a prune,
        on a reader), and by the writer's RESTART: the two never overlap. A
        RESTART waits for readers of older snapshots (up to
        ``RESTART_WAIT_SECONDS`` for each lock one holds) while holding every
        write up; beside a prune's reads on a large file those waits made
        RESTARTs of 54 to 70 ms. A read ahead waits for a RESTART instead (it
        holds up only the prune), and a RESTART that finds one under way is
        left for a later batch."""
        self._restart_wanted = False
        self._restart_after: int | None = None  # _bulk_done when asked for (None: regardless)
        self._bulk = 0  # bulk batches under way (see bulk_batch), counted on the event loop
        self._bulk_done = 0  # ...and ended
        self.checkpointing = threading.Lock()
        """Held by whichever thread is checkpointing: SQLite runs one checkpoint at a
        time and fails the others at once (a ``vacuum`` takes it for its own)."""
        self._batches = 0
        self._last_done = time.monotonic()  # when a checkpoint last finished
        self._wal = schema.wal_path(path)
        self._committed = threading.Event()
        self._stopping = threading.Event()
        self.behind = False
        """The WAL has grown past ``RESTART_BYTES`` and not started over yet: a
        bulk writer (a prune) should pause, so that the RESTART finds little to copy."""
        self.checkpoints: dict[str, int] = {"PASSIVE": 0, "RESTART": 0, "TRUNCATE": 0}
        """How many of each mode completed (for tests and the benchmark)."""
        self._thread = threading.Thread(
            target=self._run, name=f"daemon_db checkpointer {path}", daemon=True
        )
        self._thread.start()

    @property
    def restart_pending(self) -> bool:
        """A RESTART is wanted, and still stands: a write runs it, outside a bulk batch."""
        return self._restart_wanted and self._restart_after in (None, self._bulk_done)

    @contextlib.contextmanager
    def bulk_batch(self) -> Iterator[None]:
        """Around a bulk writer's read of its next batch and that batch (a prune's), on the loop.

        No RESTART starts meanwhile. Run right after the read, a RESTART's
        ``fsync`` queued behind the read's readahead on the disk; run after the
        batch, it copied and synced the whole batch: 20 to 70 ms that every
        write waited for. A RESTART asked for before the batch ended is
        dropped, and asked for again once the checkpointer has copied the batch.
        (Past twice ``RESTART_BYTES`` neither holds: the RESTART is back-pressure.)
        """
        self._bulk += 1
        try:
            yield
        finally:
            self._bulk_done += 1  # before the count drops: no write sees the batch over, unseen
            self._bulk -= 1
            self._committed.set()

    def committed(self) -> None:
        """Say that a commit landed: called on the event loop after each one."""
        if not self._committed.is_set():
            self._committed.set()

    def before_write(self, conn: sqlite3.Connection) -> None:
        """Called on the writer's thread before each batch: RESTART the WAL when asked.

        By then the checkpointer has copied nearly all of the WAL, so this
        copies the last pages, waits at most ``RESTART_WAIT_SECONDS`` for
        readers of older snapshots, and the batch that follows starts the WAL
        from its beginning.
        """
        self._batches += 1
        if (
            self._batches % LIMIT_CHECKED_EVERY == 0
            and time.monotonic() - self._last_done > STALLED_SECONDS
            and self._wal_bytes() > WAL_LIMIT_BYTES
        ):
            with self.checkpointing:  # wait for the checkpointer's turn to end
                self._restart_wanted = False
                self._on_writer(conn, "TRUNCATE", wait=None)
        # SQLite runs one checkpoint at a time and fails the others at once,
        # so if the checkpointer is copying now, the RESTART waits for a later
        # batch; so it does while a bulk batch is under way (see bulk_batch).
        if not self._restart_wanted:
            return
        if self._restart_after is not None:  # unless the WAL is past twice the size
            if self._bulk:
                return
            if self._restart_after != self._bulk_done:  # asked for before a bulk batch ended
                self._restart_wanted = False
                return
        if self.reading_ahead.acquire(blocking=False):
            try:
                if self.checkpointing.acquire(blocking=False):
                    try:
                        self._restart_wanted = False
                        self._on_writer(conn, "RESTART", wait=RESTART_WAIT_SECONDS)
                    finally:
                        self.checkpointing.release()
            finally:
                self.reading_ahead.release()

    def _on_writer(self, conn: sqlite3.Connection, mode: str, *, wait: float | None) -> None:
        """Run a checkpoint on the writer's connection, waiting ``wait`` (None: its own timeout)."""
        try:
            (timeout,) = conn.execute("PRAGMA busy_timeout").fetchone()
            if wait is not None:
                conn.execute(f"PRAGMA busy_timeout = {round(wait * 1000)}")
            try:
                busy, _, _ = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            finally:
                conn.execute(f"PRAGMA busy_timeout = {timeout}")
        except sqlite3.Error:  # another process's checkpoint: the next turn tries again
            return
        if not busy:
            self._last_done = time.monotonic()
            self.checkpoints[mode] += 1
            self.behind = False

    def _wal_bytes(self) -> int:
        try:
            return os.path.getsize(self._wal)
        except OSError:
            return 0

    def stop(self) -> None:
        """Stop the thread and close its connection; blocks until done (a checkpoint ends first)."""
        self.stop_soon()
        self._thread.join()

    def stop_soon(self) -> None:
        """Have the thread stop after the checkpoint under way, without waiting for it."""
        self._stopping.set()
        self._committed.set()

    def _run(self) -> None:
        try:
            # mode=rw: the writer made the file; never create one here.
            conn = sqlite3.connect(
                schema.uri(self._path, "rw"), uri=True, isolation_level=None, timeout=0
            )
        except sqlite3.Error:
            return  # the writer opened this file: nothing to do here but not checkpoint
        try:
            self._loop(conn)
        finally:
            conn.close()

    def _loop(self, conn: sqlite3.Connection) -> None:
        pending = False  # commits since the last TRUNCATE
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        while True:
            woken = self._committed.wait(IDLE_SECONDS if pending else None)
            if self._stopping.is_set():
                return
            if not woken:  # idle: empty the WAL file
                pending = self._checkpoint(conn, "TRUNCATE") is None
                continue
            self._committed.clear()
            pending = True
            if self._restart_wanted:
                if self.restart_pending:
                    # The writer runs it before its next batch, if no checkpoint of
                    # ours holds the lock then: keep out of its way until it has.
                    self._stopping.wait(INTERVAL_SECONDS)
                    continue
                self._restart_wanted = False  # asked for before a bulk batch ended: ask again
            frames = self._checkpoint(conn, "PASSIVE")
            if frames is not None:
                # Not only a RESTART starts the WAL over: a write that finds it
                # all copied does too (a prune then paused for nothing).
                self.behind = frames * page_size > RESTART_BYTES
                if self.behind and self._caught_up(conn, page_size):
                    self._restart_wanted = True
            # Pace: the commits of the next interval are copied together (a
            # commit meanwhile leaves the event set, so the next turn runs at once).
            self._stopping.wait(INTERVAL_SECONDS)

    def _caught_up(self, conn: sqlite3.Connection, page_size: int) -> bool:
        """Copy what came during the last checkpoint, until a pass finds little to copy.

        The RESTART that follows (on the writer's thread, before its next
        batch, at its priority rather than this thread's) holds writes up
        while it copies what is left and syncs: the less is left, the
        shorter. Passes that never get quick mean that writes outrun the
        disk: past twice ``RESTART_BYTES`` the RESTART is wanted all the same,
        holding writes up for the copy (back-pressure), rather than let the
        WAL grow. Returns whether to RESTART now.
        """
        for _ in range(CATCH_UP_PASSES):
            bulk_done = self._bulk_done  # a bulk batch ended after this is not copied
            started = time.monotonic()
            frames = self._checkpoint(conn, "PASSIVE")
            if time.monotonic() - started < CAUGHT_UP_SECONDS:
                self._flush_database()
                bulk_done = self._bulk_done
                self._checkpoint(conn, "PASSIVE")  # what came during the flush
                self._restart_after = bulk_done
                return True
            if frames is not None and frames * page_size > 2 * RESTART_BYTES:
                self._flush_database()
                self._restart_after = None
                return True
        return False

    def _flush_database(self) -> None:
        """``fsync`` the database file here, before a RESTART syncs it holding writes up.

        A PASSIVE checkpoint syncs the file only when it has copied the WAL to
        its very end, which a steady writer never lets it do; the RESTART,
        which does, then synced every page the passes before it had copied:
        20 to 70 ms that every write waited for, beside a prune on a large
        file. Flushed first, they are a few pages.

        Through a descriptor SQLite holds open on the file: closing one of our
        own would drop the process's POSIX locks on it, SQLite's included. Were
        it closed and its number reused meanwhile, another file is synced:
        harmless. The flush only moves work off the write path: if it fails,
        the RESTART syncs the file itself and meets the disk's error itself.
        """
        fd = self._descriptor
        if fd is None or not _is_file(fd, self._file):
            fd = self._descriptor = _descriptor_of(self._file)
        if fd is not None:
            with contextlib.suppress(OSError):
                _sync(fd)

    def _checkpoint(self, conn: sqlite3.Connection, mode: str) -> int | None:
        """Run one checkpoint; return the frames the WAL holds, or None if it could not finish."""
        wait_ms = 0 if mode == "PASSIVE" else round(RESTART_WAIT_SECONDS * 1000)
        # TRUNCATE takes the write lock: take it from this file's writer
        # through the gate, so that a write arriving meanwhile waits on a lock,
        # not in SQLite's busy handler, whose sleeps grow to tens of milliseconds.
        gate = self.gate if mode != "PASSIVE" else contextlib.nullcontext()
        try:
            with gate, self.checkpointing:
                conn.execute(f"PRAGMA busy_timeout = {wait_ms}")
                busy, frames, _ = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.Error:  # locked by another checkpoint, or the file went away
            return None
        if busy or frames < 0:
            return None
        self._last_done = time.monotonic()
        self.checkpoints[mode] += 1
        if mode != "PASSIVE":
            self.behind = False
        result: int = frames
        return result


def _descriptor_of(path: str) -> int | None:
    """A file descriptor this process holds open on ``path``, or None (none, or no way to tell)."""
    try:
        names = os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd")
    except OSError:
        return None
    for name in names:
        with contextlib.suppress(ValueError):
            if _is_file(int(name), path):
                return int(name)
    return None


def _is_file(fd: int, path: str) -> bool:
    """Whether ``fd`` is open on the file at ``path`` (a regular file, not a pipe or O_PATH)."""
    try:
        found, wanted = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(found.st_mode) and (found.st_dev, found.st_ino) == (
        wanted.st_dev,
        wanted.st_ino,
    )
