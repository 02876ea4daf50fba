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
    return moment.isoformat(timespec="microseconds")[:-6] + "Z"


from_text = datetime.fromisoformat
"""Decode a stored timestamp into an aware UTC datetime (3.11 reads the ``Z``)."""


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
