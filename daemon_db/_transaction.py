"""The object a transaction block hands out, and the block: what both engines share.

Each engine's are beside its SQL: ``_sqlite/transaction.py`` and ``_postgres/db.py``.
"""

from __future__ import annotations

import abc
import asyncio
import contextvars
import inspect
import sys
import warnings
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from ._errors import DaemonDBError, DatabaseError
from ._operations import Operations

if TYPE_CHECKING:
    from ._db import DB

__all__ = ["Block", "Transaction"]


class Block:
    """Why a transaction block was lost, as the engine that runs it sees it.

    The database may end a transaction by itself (SQLite on a full disk, an
    I/O error, out of memory, an interrupt; PostgreSQL when the server ends
    the session): every statement of it is undone. ``lost`` then says why,
    and the block can commit nothing.
    """

    __slots__ = ("lost",)

    def __init__(self) -> None:
        self.lost: str | None = None


class _Lost(Protocol):
    """Where a block records why its engine rolled the transaction back by itself."""

    lost: str | None


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

    __slots__ = (
        "_block",
        "_connection",
        "_ended",
        "_generator",
        "_opener",
        "_owner",
        "_path",
        "_readonly",
    )

    _connection: Any  # the engine's connection, held for the block
    _block: _Lost
    _ended: bool
    _readonly: bool

    @property
    def ended(self) -> bool:
        """True once the block has been left (or abandoned and rolled back)."""
        return self._ended

    @property
    def lost(self) -> str | None:
        """Why SQLite rolled the transaction back by itself, or None if it has not."""
        return self._block.lost

    def _check_open(self) -> None:
        self._check_usable()

    def _in_write_block(self) -> bool:
        return not self._readonly

    def _opened(self, frame: FrameType | None, task: asyncio.Task[Any]) -> None:
        """Note where the block was entered: ``frame`` runs ``async with``, in ``task``."""
        self._opener = task
        self._generator = None
        if frame is not None and frame.f_code.co_flags & inspect.CO_ASYNC_GENERATOR:
            # Driven by a context manager's __aenter__ (asynccontextmanager's, or
            # another library's), the generator yields inside the block on purpose.
            driver = frame.f_back
            if driver is None or driver.f_code.co_name != "__aenter__":
                self._generator = frame

    def _left_suspended(self) -> bool:
        """Whether the calling code is outside the async generator that opened this
        block, which yielded inside it and is suspended there.

        A generator runs in its caller's context, so the block stays the caller's
        until the generator is closed: writes the caller makes meanwhile would
        join it, unseen, and be rolled back with it when the generator is
        finalized. (A context manager's generator, as ``asynccontextmanager``
        makes, yields inside the block on purpose: the code in its
        ``async with`` is in the block.)
        """
        frame = self._generator
        if frame is None or asyncio.current_task() is not self._opener:
            return False
        caller: FrameType | None = sys._getframe(2)
        while caller is not None:
            if caller is frame:
                return False
            caller = caller.f_back
        return True

    def _check_usable(self) -> None:
        if self._ended:
            raise DaemonDBError("this transaction block has ended")
        if self._block.lost is not None:
            raise self._lost_error()

    @abc.abstractmethod
    def _lost_error(self) -> DatabaseError:
        """The error for a block whose transaction SQLite rolled back."""

    def _end(self) -> None:
        """Mark the block ended: later calls through this object raise DaemonDBError."""
        self._ended = True


class _TransactionBlock(abc.ABC):
    """The async context manager ``DB.transaction()`` returns."""

    __slots__ = ("_db", "_owner", "_token", "_tx", "_unwatch")

    _owner: asyncio.Task[Any]  # the task in the block
    _token: contextvars.Token[Transaction | None]
    _unwatch: Callable[[], None]

    def __init__(self, db: DB) -> None:
        self._db = db
        self._tx: Transaction | None = None

    @abc.abstractmethod
    async def __aenter__(self) -> Transaction: ...

    @abc.abstractmethod
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    # Misuses, each told what to write instead, as DB.open() does.

    if not TYPE_CHECKING:  # a type checker refuses block.get_run(...) by itself

        def __getattr__(self, name: str) -> NoReturn:
            # Only for names it lacks: a Transaction's method called on the block.
            if hasattr(Transaction, name):
                raise AttributeError(
                    f"db.transaction() returns the block, not the transaction (it has no"
                    f" {name!r}): write 'async with db.transaction() as tx'"
                )
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __enter__(self) -> NoReturn:
        raise TypeError(
            "db.transaction() is asynchronous: write 'async with db.transaction() as tx',"
            " not 'with'"
        )

    def __exit__(self, *exc_info: object) -> None:  # 'with' asks for both before entering
        raise AssertionError("unreachable: __enter__ raises")

    def _stop_watching(self) -> None:
        self._owner.remove_done_callback(self._abandoned)
        self._unwatch()

    def _abandoned(self, owner: asyncio.Task[Any]) -> None:
        if self._tx is not None and not self._tx.ended:
            self._abandon()
            warnings.warn(
                f"a transaction block of {self._db!r} was never left (its task ended inside"
                " it); it has been rolled back",
                ResourceWarning,
                stacklevel=1,
            )

    @abc.abstractmethod
    def _abandon(self) -> None:
        """Roll back a block nobody will leave, and give its connection back."""
