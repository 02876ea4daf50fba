"""Checks applied at the edge, before anything reaches the database.

Each check returns the value in its normal form (an enum member, a UTC datetime,
compact JSON text) or raises InvalidRecordError naming the field and the value.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from ._errors import InvalidRecordError

__all__ = [
    "MAX_INT",
    "MAX_JSON_BYTES",
    "MAX_NAME_CHARS",
    "config_json",
    "count",
    "decoded",
    "member",
    "members",
    "name",
    "optional_count",
    "optional_name",
    "optional_text",
    "payload",
    "payload_json",
    "plain",
    "text",
    "timestamp",
]

MAX_NAME_CHARS = 4096
"""Ids, branches, paths and event types: generous for a path, small for a bug."""

MAX_INT = (1 << 63) - 1
"""The largest integer SQLite stores: counts, sequences and limits stop here."""

MAX_JSON_BYTES = 1 << 20
"""Payloads, ``config_json`` and error texts: at most 1 MiB of UTF-8."""

E = TypeVar("E", bound=enum.Enum)


def text(field: str, value: object, *, max_chars: int = MAX_NAME_CHARS) -> str:
    """A string of at most ``max_chars`` characters, without NUL characters."""
    if not isinstance(value, str):
        raise InvalidRecordError(field, value, f"must be a str, not {type(value).__name__}")
    value = plain(value)  # first: a subclass's own len() or "in" would check something else
    if len(value) > max_chars:
        raise InvalidRecordError(field, value, f"longer than {max_chars} characters")
    if "\x00" in value:
        raise InvalidRecordError(field, value, "contains a NUL character")
    _check_encodable(field, value)
    return value


def plain(value: str) -> str:
    """``value`` as a plain str: a StrEnum member or another subclass as its text.

    Records hold what reads give back, so that a record a write returns is
    the record a read returns, ``type`` and ``repr`` too.
    """
    return value if type(value) is str else str.__str__(value)


def name(field: str, value: object, *, none_means: str | None = None) -> str:
    """A non-blank identifier, branch, path or event type.

    ``none_means`` says what None would mean where it is allowed, so that the
    error for an empty value points to it.
    """
    checked = text(field, value)
    if not checked.strip():
        hint = f" (None means {none_means})" if none_means else ""
        raise InvalidRecordError(field, value, f"must not be empty or blank{hint}")
    return checked


def optional_name(field: str, value: object, *, none_means: str | None = None) -> str | None:
    """None, or a non-blank name."""
    return None if value is None else name(field, value, none_means=none_means)


def optional_text(field: str, value: object) -> str | None:
    """None, or free text (an error message) of at most 1 MiB."""
    if value is None:
        return None
    checked = text(field, value, max_chars=MAX_JSON_BYTES)
    _check_size(field, checked)
    return checked


def count(field: str, value: object, *, minimum: int, none_means: str | None = None) -> int:
    """An int (not a bool) of at least ``minimum`` that SQLite can hold (64-bit)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRecordError(field, value, f"must be an int, not {type(value).__name__}")
    if value < minimum:
        hint = f" (None means {none_means})" if none_means else ""
        raise InvalidRecordError(field, value, f"must be >= {minimum}{hint}")
    if value > MAX_INT:
        raise InvalidRecordError(field, value, f"must be <= {MAX_INT} (a 64-bit integer)")
    return value


def optional_count(field: str, value: object, *, minimum: int, none_means: str) -> int | None:
    """None, or an int of at least ``minimum``."""
    return None if value is None else count(field, value, minimum=minimum, none_means=none_means)


def members(field: str, value: object, kind: type[E]) -> frozenset[E]:
    """One member of ``kind`` or a collection of them, as a set (not empty)."""
    if isinstance(value, str | kind):
        return frozenset({member(field, value, kind)})
    if not isinstance(value, Iterable):
        raise InvalidRecordError(field, value, "must be a status or a collection of them")
    found = frozenset(member(field, each, kind) for each in value)
    if not found:
        raise InvalidRecordError(field, value, "must name at least one status")
    return found


def member(field: str, value: object, kind: type[E]) -> E:
    """A member of the enum ``kind``, given as the member or as its value."""
    if isinstance(value, kind):
        return value
    if isinstance(value, enum.Enum):  # RunStatus.RUNNING for a unit: its value fits, the intent not
        raise InvalidRecordError(
            field, value, f"must be a {kind.__name__}, not a {type(value).__name__}"
        )
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in kind)
        raise InvalidRecordError(field, value, f"must be one of {allowed}") from None


def timestamp(field: str, value: object) -> datetime | None:
    """None, or a timezone-aware datetime, returned in UTC."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidRecordError(field, value, f"must be a datetime, not {type(value).__name__}")
    try:
        offset = value.utcoffset()
    except (ValueError, TypeError) as exc:  # a tzinfo of one's own, whose offset is no offset
        raise InvalidRecordError(field, value, f"has a time zone that fails ({exc})") from None
    if value.tzinfo is None or offset is None:
        raise InvalidRecordError(field, value, "must be timezone-aware (naive datetimes refused)")
    if value.tzinfo is UTC:
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise InvalidRecordError(field, value, "is out of range once in UTC") from None


def config_json(field: str, value: object) -> str:
    """The text of a JSON object, at most 1 MiB, without NaN or infinity."""
    text, parsed = _json_text(field, value)
    if not isinstance(parsed, dict):
        raise InvalidRecordError(field, value, "must be the text of a JSON object")
    return text


def payload_json(field: str, value: object) -> str:
    """The text of any JSON value, at most 1 MiB, without NaN or infinity."""
    return _json_text(field, value)[0]


def decoded(field: str, value: str, *, of: str = "") -> Any:
    """JSON text decoded; InvalidRecordError naming ``field`` (of ``of``) if it is not JSON."""
    try:
        return _DECODER.decode(value)
    except (ValueError, RecursionError) as exc:
        raise InvalidRecordError(field, value, f"is not valid JSON ({exc}){of}") from None


def _json_text(field: str, value: object) -> tuple[str, Any]:
    """``value`` as a plain str, and what it decodes to."""
    if not isinstance(value, str):
        raise InvalidRecordError(field, value, f"must be a str, not {type(value).__name__}")
    value = plain(value)
    _check_encodable(field, value)
    _check_size(field, value)
    return value, decoded(field, value)


def payload(value: Any, *, field: str = "payload") -> str | None:
    """Encode an event payload as compact JSON text; None stays None (no payload).

    ``field`` names what the payload is made from, in the error for one that is
    not JSON or whose text exceeds 1 MiB.
    """
    if value is None:
        return None
    try:
        encoded = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidRecordError(field, value, f"is not JSON-serialisable ({exc})") from None
    _check_size(field, encoded, shown=value)
    return encoded


def _check_size(field: str, value: str, shown: object = None) -> None:
    # Most strings are far below the limit; only count UTF-8 bytes when it could matter.
    if len(value) * 4 > MAX_JSON_BYTES and len(value.encode("utf-8")) > MAX_JSON_BYTES:
        what = value if shown is None else shown
        raise InvalidRecordError(field, what, f"exceeds {MAX_JSON_BYTES} bytes")


def _check_encodable(field: str, value: str) -> None:
    # A lone surrogate cannot be stored as UTF-8 text; refuse it here, not in SQLite.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRecordError(field, value, "is not valid Unicode text") from None


def _refuse_constant(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _finite(number: str) -> float:
    # 1e999 is JSON's grammar, but no number: it decodes to infinity, which
    # JSON cannot carry back out (strict parsers refuse the "Infinity" written).
    value = float(number)
    if math.isinf(value):
        raise ValueError(f"{number} is too large for a JSON number (it would be infinity)")
    return value


# Made once: json.dumps and json.loads build a new coder on every call given options.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite)
