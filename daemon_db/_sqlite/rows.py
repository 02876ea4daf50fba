"""Rows that break the store's rules, found while mapping them to records.

Rows are mapped without validation (their values were checked on the way in),
but another tool may have edited the file since. Mapping a row whose status,
timestamp or number cannot be what the store wrote raises ``DamagedRow``, and
the work wrappers turn it into a ``DamagedRecordError`` naming the file, the
table, the row and the column. Finding the column is done only then, on the
failure path, so that healthy rows cost nothing more.

Text that is not UTF-8 (which SQLite stores as it is given) makes sqlite3
raise before a row reaches its mapping; ``fetchall``, ``fetchone`` and
``readable`` read such a statement again with that text as bytes, to name it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import _timestamps as timestamps
from .._errors import DamagedRow

__all__ = [
    "TIMESTAMP_BYTES",
    "TIMESTAMP_FORM",
    "DamagedRow",
    "NotUTF8",
    "Unreadable",
    "bound",
    "damaged",
    "decoded",
    "fetchall",
    "fetchone",
    "member",
    "optional_positive_int",
    "optional_timestamp",
    "ordered",
    "positive_int",
    "readable",
    "text",
    "timestamp",
]

Check = Callable[[Any], object]
Params = Sequence[Any] | Mapping[str, Any]

_DIGIT = "[0-9]"
TIMESTAMP_FORM = (
    f"{_DIGIT * 4}-[01]{_DIGIT}-[0-3]{_DIGIT}T[012]{_DIGIT}:[0-5]{_DIGIT}:[0-5]{_DIGIT}"
    f".{_DIGIT * 6}Z"
)
"""A stored timestamp's form, as a ``GLOB`` pattern (which stops at a NUL: check
``TIMESTAMP_BYTES`` too)."""
TIMESTAMP_BYTES = len("1970-01-01T00:00:00.000000Z")


def timestamp(value: object) -> object:
    """Raise unless ``value`` is a stored timestamp with its time zone."""
    if not isinstance(value, str):
        raise TypeError("is not timestamp text")
    try:
        return timestamps.from_text(value)
    except ValueError as exc:
        raise ValueError(f"is not a timestamp with a time zone ({exc})") from None


def optional_timestamp(value: object) -> object:
    return None if value is None else timestamp(value)


def positive_int(value: object) -> object:
    if type(value) is not int or value < 1:
        raise ValueError("is not an integer >= 1")
    return value


def member(values: Mapping[str, object], kind: str) -> Check:
    """A check that a value is one of ``values`` (a status, say)."""

    def check(value: object) -> object:
        if not isinstance(value, str) or value not in values:
            raise ValueError(f"is not {kind}")
        return values[value]

    return check


def optional_positive_int(value: object) -> object:
    return None if value is None else positive_int(value)


def damaged(
    table: str, names: Sequence[str], row: Sequence[Any], checks: Mapping[int, Check]
) -> DamagedRow:
    """The DamagedRow for a row that failed to map: the first column that fails its check."""
    for index, check in checks.items():
        try:
            check(row[index])
        except (KeyError, ValueError, TypeError) as exc:
            return DamagedRow(table, row[0], names[index], row[index], str(exc))
    return DamagedRow(table, row[0], "(row)", tuple(row), "cannot be read as a record")


def fetchall(conn: sqlite3.Connection, table: str, sql: str, params: Params = ()) -> list[Any]:
    """``conn.execute(sql, params).fetchall()``; DamagedRow for text that is not UTF-8.

    As in every statement these helpers run, a row's first column is its id in
    ``table``: the error names the row by it.
    """
    found, unreadable = readable(conn, table, sql, params)
    if unreadable:
        raise unreadable[0][1]
    return found


def fetchone(conn: sqlite3.Connection, table: str, sql: str, params: Params = ()) -> Any | None:
    """``conn.execute(sql, params).fetchone()``; DamagedRow for text that is not UTF-8."""
    try:
        return conn.execute(sql, params).fetchone()
    except sqlite3.OperationalError as exc:
        if not _undecodable(exc):
            raise
    for row, damage in _read_as_bytes(conn, table, sql, params, one=True):
        if damage is not None:
            raise damage
        return row
    return None


Unreadable = tuple[Sequence[Any], DamagedRow]
"""A row holding text that is not UTF-8 (that text as bytes), and its DamagedRow."""


def readable(
    conn: sqlite3.Connection, table: str, sql: str, params: Params = ()
) -> tuple[list[Any], list[Unreadable]]:
    """The statement's rows, with those holding text that is not UTF-8 apart.

    For start-up, where one row another tool broke must not hide the others.
    """
    try:
        return conn.execute(sql, params).fetchall(), []
    except sqlite3.OperationalError as exc:
        if not _undecodable(exc):
            raise
    found = _read_as_bytes(conn, table, sql, params, one=False)
    healthy = [row for row, damage in found if damage is None]
    return healthy, [(row, damage) for row, damage in found if damage is not None]


def ordered(
    conn: sqlite3.Connection, table: str, sql: str, params: Params = ()
) -> list[tuple[Any, DamagedRow | None]]:
    """The statement's rows in order, each with the DamagedRow of its text that is not UTF-8.

    For a reader that must know where each row stood (a prune's next page
    starts after the last row it read, whatever that row holds).
    """
    try:
        return [(row, None) for row in conn.execute(sql, params).fetchall()]
    except sqlite3.OperationalError as exc:
        if not _undecodable(exc):
            raise
    return _read_as_bytes(conn, table, sql, params, one=False)


def bound(values: Sequence[object]) -> tuple[str, list[object]]:
    """A row value's placeholders and parameters that give SQLite back ``values`` as read.

    Text that is not UTF-8 (read as a NotUTF8) goes as its bytes, cast back
    to text: bound as bytes alone, it would be a blob, which sorts after all
    text.
    """
    marks = ", ".join("CAST(? AS TEXT)" if type(value) is NotUTF8 else "?" for value in values)
    return f"({marks})", [text(value) for value in values]


def _read_as_bytes(
    conn: sqlite3.Connection, table: str, sql: str, params: Params, *, one: bool
) -> list[tuple[Any, DamagedRow | None]]:
    """Run the statement again, text that is not UTF-8 read as bytes: each row with its damage.

    Only after a read failed to decode, so healthy reads never pay for it.
    Outside a transaction another process may have changed the rows since;
    what this read finds is the answer then.
    """
    factory = conn.text_factory
    conn.text_factory = decoded
    try:
        cursor = conn.execute(sql, params)
        found = cursor.fetchmany(1) if one else cursor.fetchall()
    finally:
        conn.text_factory = factory
    names = [column[0] for column in cursor.description]
    sorted_out: list[tuple[Any, DamagedRow | None]] = []
    for row in found:
        bad = next((i for i, value in enumerate(row) if type(value) is NotUTF8), None)
        if bad is None:
            sorted_out.append((row, None))
        else:
            damage = DamagedRow(table, text(row[0]), names[bad], row[bad].raw, _REASON)
            sorted_out.append((row, damage))
    return sorted_out


_REASON = "is not UTF-8 text"


class NotUTF8:
    """Text that is not UTF-8, read as its bytes (``raw``)."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw


def decoded(raw: bytes) -> str | NotUTF8:
    """A ``text_factory`` under which text that is not UTF-8 reads as a NotUTF8."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return NotUTF8(raw)


def text(value: object) -> object:
    """A value read under ``decoded``, with text that is not UTF-8 as its bytes."""
    return value.raw if type(value) is NotUTF8 else value


def _undecodable(exc: sqlite3.OperationalError) -> bool:
    # sqlite3 says so only in its message (CPython's Modules/_sqlite/cursor.c).
    return str(exc).startswith("Could not decode to UTF-8")
