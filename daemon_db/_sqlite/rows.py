"""Rows that break the store's rules, found while mapping them to records.

Rows are mapped without validation (their values were checked on the way in),
but another tool may have edited the file since. Mapping a row whose status,
timestamp or number cannot be what the store wrote raises ``DamagedRow``, and
the work wrappers turn it into a ``DamagedRecordError`` naming the file, the
table, the row and the column. Finding the column is done only then, on the
failure path, so that healthy rows cost nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .. import _timestamps as timestamps
from .._errors import DamagedRow

__all__ = [
    "TIMESTAMP_BYTES",
    "TIMESTAMP_FORM",
    "DamagedRow",
    "damaged",
    "member",
    "optional_positive_int",
    "optional_timestamp",
    "positive_int",
    "timestamp",
]

Check = Callable[[Any], object]

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
