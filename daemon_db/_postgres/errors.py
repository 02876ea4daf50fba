"""asyncpg's and PostgreSQL's errors, turned into daemon_db's at the engine's boundary."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any

import asyncpg

from .._errors import DatabaseError, InvalidRecordError

__all__ = [
    "CONNECTION_ERRORS",
    "closed",
    "discard",
    "session_lost",
    "too_long_for_an_index",
    "translate",
]

# What a lost or refused connection raises, besides asyncpg's own errors. When
# the server ends a session while asyncpg is between two messages, asyncpg's
# protocol can also fail on its own state (InternalClientError).
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.InternalClientError,
)

# The SQLSTATEs of a server ending the session itself: it rolls the session's
# transaction back and closes the connection after sending them.
_SESSION_ENDED = frozenset(
    {
        "57P01",  # admin_shutdown: pg_terminate_backend, a fast shutdown
        "57P02",  # crash_shutdown: another backend crashed
        "57P03",  # cannot_connect_now
        "57P05",  # idle_session_timeout
        "25P03",  # idle_in_transaction_session_timeout
    }
)


def translate(exc: BaseException, url: str) -> DatabaseError:
    """Turn a raw asyncpg, PostgreSQL or socket error into the DatabaseError a caller sees."""
    if isinstance(exc, asyncpg.LockNotAvailableError):
        bound = (
            "the URL's lock_timeout"
            if "lock_timeout=" in url.partition("?")[2]
            else "busy_timeout (PostgreSQL's lock_timeout)"
        )
        return DatabaseError(
            url,
            f"another session held a lock this call needed for longer than {bound}:"
            " nothing the call did is kept (LockNotAvailableError, SQLSTATE 55P03)",
        )
    if isinstance(exc, asyncpg.PostgresError):
        code: Any = getattr(exc, "sqlstate", None)
        message = str(exc).strip() or type(exc).__name__
        if isinstance(exc, asyncpg.CharacterNotInRepertoireError):
            # Only stored text can be: daemon_db sends UTF-8, and refuses NUL itself.
            message += (
                ": a row holds text that is not UTF-8, which a database whose encoding is"
                " SQL_ASCII lets another tool store (check() names it)"
            )
        return DatabaseError(url, f"{message} ({type(exc).__name__}, SQLSTATE {code})")
    if isinstance(exc, UnicodeError):
        return DatabaseError(url, f"text PostgreSQL cannot store ({exc})")
    return DatabaseError(url, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def closed(connection: Any) -> bool:
    """Whether a (pooled) connection is closed: the pool takes a closed one back at once."""
    try:
        return bool(connection.is_closed())
    except asyncpg.InterfaceError:  # released: the pool saw it close
        return True


def session_lost(connection: Any, exc: BaseException) -> bool:
    """Whether ``exc`` means the connection's session, and any transaction on it, is gone."""
    if isinstance(exc, CONNECTION_ERRORS):
        return True
    code = getattr(exc, "sqlstate", None) or ""
    return code.startswith("08") or code in _SESSION_ENDED or closed(connection)


def discard(connection: Any) -> None:
    """Close a connection whose state is unknown, so that the pool never hands it out again.

    Ending the session also rolls back whatever transaction it may still have.
    """
    with contextlib.suppress(asyncpg.InterfaceError):
        connection.terminate()


def too_long_for_an_index(
    exc: asyncpg.ProgramLimitExceededError, values: Mapping[str, str | None]
) -> InvalidRecordError:
    """The error for a value too long for a btree index entry (``values``: field to value).

    PostgreSQL refuses an index entry over 2,704 bytes (a third of a page), so
    a name within the store's 4,096 characters can still be refused, as an
    index of the value shows. The field named is the longest value, in bytes,
    of the index the server names (of all of them if it names none known).
    """
    found = re.search(r'index "([^"]+)"', str(exc))
    columns = _INDEXED.get(found.group(1) if found else "", ())
    named = {name: value for name, value in values.items() if name.split(".")[-1] in columns}
    field, value = max((named or values).items(), key=lambda item: len(_utf8(item[1])))
    index = f"index {found.group(1)}" if found else "an index"
    return InvalidRecordError(
        field,
        value,
        f"is too long for PostgreSQL's {index}: an entry holds at most 2,704 bytes"
        f" (this value alone has {len(_utf8(value)):,})",
    )


def _utf8(value: str | None) -> bytes:
    return (value or "").encode("utf-8", "surrogatepass")


# The text columns of each index a new run or unit goes into (see schema.py).
_INDEXED: dict[str, tuple[str, ...]] = {
    "runs_pkey": ("id",),
    "runs_one_active": ("feature_branch", "repo_path"),
    "runs_by_branch": ("feature_branch", "repo_path", "id"),
    "runs_by_repo": ("repo_path", "id"),
    "units_pkey": ("id",),
    "units_run_id_unit_id_key": ("run_id", "unit_id"),
}
