"""Rows another tool wrote that cannot be records: a DamagedRecordError naming where.

PostgreSQL's types and checks keep out most of what SQLite's rows.py looks
for, but two kinds of value still get through: a timestamp outside years 1 to
9999, which the server stores and Python cannot hold (asyncpg raises
OverflowError while reading the whole result, before any row is seen), and,
once a tool has dropped a check, a status outside the enum. The first is
found by running the call again with timestamps read as text: the value asyncpg
cannot read becomes an ``Unreadable``, and the row mapping it meets raises
``DamagedRow`` naming table, row and column, as SQLite's does. This happens
only on the failure path: a healthy read costs nothing more.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg

from .._errors import DaemonDBError, DamagedRow
from .errors import CONNECTION_ERRORS

__all__ = [
    "DamagedRow",
    "Unreadable",
    "aware",
    "damaged",
    "member",
    "optional_positive_int",
    "readable",
    "timestamp",
]

T = TypeVar("T")


def aware(moment: datetime | None) -> datetime | None:
    """A stored timestamp as the records hold it: aware, in UTC.

    asyncpg stores the largest datetime as PostgreSQL's ``infinity`` and reads
    that back as a naive ``datetime.max``; every other value comes back aware.
    """
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


class Unreadable:
    """A stored value Python cannot hold, as PostgreSQL writes it out."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _decode(text: str) -> object:
    if text == "infinity":  # as asyncpg reads them, made aware as runs.aware does
        return datetime.max.replace(tzinfo=UTC)
    if text == "-infinity":
        return datetime.min.replace(tzinfo=UTC)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return Unreadable(text)


def _encode(value: datetime) -> str:
    return value.isoformat()


async def readable(conn: Any, attempt: Callable[[], Awaitable[T]]) -> T:
    """``attempt()``; if asyncpg could not read a value, again with timestamps read as text.

    The first attempt's transaction (or savepoint) has been rolled back when
    its error arrives, so running it again does nothing twice.
    """
    try:
        return await attempt()
    except (OverflowError, ValueError) as exc:
        if isinstance(exc, DaemonDBError | asyncpg.PostgresError | asyncpg.InterfaceError):
            raise
    await conn.set_type_codec(
        "timestamptz", schema="pg_catalog", encoder=_encode, decoder=_decode, format="text"
    )
    try:
        return await attempt()
    finally:
        with contextlib.suppress(*CONNECTION_ERRORS):  # a lost connection is not reused anyway
            await conn.reset_type_codec("timestamptz", schema="pg_catalog")


Check = Callable[[Any], None]


def timestamp(value: object) -> None:
    if isinstance(value, Unreadable):
        raise ValueError("is not a timestamp Python can hold (years 1 to 9999)")


def optional_positive_int(value: object) -> None:
    if isinstance(value, int) and value < 1:  # an integer column: an int or None
        raise ValueError("is not an integer >= 1")


def member(values: Mapping[str, object], kind: str) -> Check:
    def check(value: object) -> None:
        if not isinstance(value, str) or value not in values:
            raise ValueError(f"is not {kind}")

    return check


def damaged(
    table: str, names: Sequence[str], row: Sequence[Any], checks: Mapping[int, Check]
) -> DamagedRow:
    """The DamagedRow for a row that failed to map: the first column that fails its check."""
    for index, check in checks.items():
        try:
            check(row[index])
        except ValueError as exc:
            value = row[index]
            shown = value.text if isinstance(value, Unreadable) else value
            return DamagedRow(table, row[0], names[index], shown, str(exc))
    return DamagedRow(table, row[0], "(row)", tuple(row), "cannot be read as a record")
