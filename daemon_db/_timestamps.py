"""Timestamps as the file stores them: fixed-width ISO-8601 UTC text.

Every stored timestamp has the form ``2026-11-27T17:02:13.123456Z``: always UTC,
always six fractional digits, so text order is time order and SQL can compare
and sort the column directly.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["from_text", "now", "on_change", "on_create", "to_text"]


def now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def to_text(moment: datetime) -> str:
    """Encode an aware UTC datetime (validation has normalised it) for storage."""
    # The same text as isoformat(timespec="microseconds") with a Z for its
    # +00:00, in half the time: a listing's JSON writes two a row.
    return _FORM % (
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
    )


_FORM = "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ"


_parse = datetime.fromisoformat


def from_text(text: str) -> datetime:
    """Decode a stored timestamp into an aware UTC datetime (3.11 reads the ``Z``).

    Raises ValueError for text that is not a timestamp, or one without a time
    zone (which another tool may have written): its moment is unknown.
    """
    moment = _parse(text)
    if moment.tzinfo is UTC:
        return moment
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("has no time zone")
    return moment.astimezone(UTC)


def on_create(
    started_at: datetime | None, completed_at: datetime | None, *, running: bool, finished: bool
) -> tuple[datetime | None, datetime | None]:
    """``(started_at, completed_at)`` of a record created in a status: missing ones are now."""
    moment = now()
    if running and started_at is None:
        started_at = moment
    if finished and completed_at is None:
        completed_at = moment
    return started_at, completed_at


def on_change(
    started_at: datetime | None, *, running: bool, finished: bool
) -> tuple[datetime | None, datetime | None]:
    """``(started_at, completed_at)`` of a record whose status just changed.

    Entering running starts the clock once; entering a finished status stamps
    the finish; leaving the finished statuses clears it.
    """
    moment = now()
    if running and started_at is None:
        started_at = moment
    return started_at, (moment if finished else None)
