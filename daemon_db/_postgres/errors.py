"""asyncpg's and PostgreSQL's errors, turned into daemon_db's at the engine's boundary."""

from __future__ import annotations

from typing import Any

import asyncpg

from .._errors import DatabaseError

__all__ = ["CONNECTION_ERRORS", "translate"]

# What a lost or refused connection raises, besides asyncpg's own errors.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
)


def translate(exc: BaseException, url: str) -> DatabaseError:
    """Turn a raw asyncpg, PostgreSQL or socket error into the DatabaseError a caller sees."""
    if isinstance(exc, asyncpg.PostgresError):
        code: Any = getattr(exc, "sqlstate", None)
        message = str(exc).strip() or type(exc).__name__
        return DatabaseError(url, f"{message} ({type(exc).__name__}, SQLSTATE {code})")
    if isinstance(exc, UnicodeError):
        return DatabaseError(url, f"text PostgreSQL cannot store ({exc})")
    return DatabaseError(url, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
