"""Text for people at a terminal: safe to print, measured in columns, in colour, with progress.

Stored text is data from anywhere: an error message or a branch name may hold
an escape sequence that would drive the terminal, or a tab that breaks a
table. Whatever the command line prints for people goes through ``safe``;
tables measure it in display columns (wide CJK and emoji take two, combining
marks none) rather than in characters.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import unicodedata
from collections.abc import Awaitable, Mapping
from datetime import datetime
from typing import Final, TextIO, TypeVar

__all__ = [
    "Progress",
    "ago",
    "cell",
    "fit",
    "is_terminal",
    "paint",
    "safe",
    "span",
    "wants_colour",
    "width",
]

T = TypeVar("T")

ESCAPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"})
"""Control, format (bidi overrides, zero-width), surrogate, unassigned, line and
paragraph separators: shown as escapes, never sent to the terminal as they are."""

_NAMED_ESCAPES: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
_ZERO_WIDTH_CATEGORIES: Final = frozenset({"Mn", "Me"})
_HANGUL_MEDIAL_AND_FINAL_JAMO: Final = range(0x1160, 0x1200)  # join the syllable before them
ELLIPSIS: Final = "…"


def safe(text: str) -> str:
    """``text`` with control and format characters shown as escapes (``\\x1b``, ``\\t``)."""
    if text.isprintable():
        return text
    return "".join(
        _escape(char) if unicodedata.category(char) in ESCAPED_CATEGORIES else char for char in text
    )


def _escape(char: str) -> str:
    named = _NAMED_ESCAPES.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def width(text: str) -> int:
    """The columns ``text`` (already made ``safe``) takes on a terminal."""
    if text.isascii():
        return len(text)
    return sum(_char_width(char) for char in text)


def _char_width(char: str) -> int:
    if unicodedata.category(char) in _ZERO_WIDTH_CATEGORIES:
        return 0
    if ord(char) in _HANGUL_MEDIAL_AND_FINAL_JAMO:
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def fit(text: str, columns: int) -> str:
    """``text`` shortened with an ellipsis to at most ``columns`` columns."""
    if width(text) <= columns:
        return text
    kept: list[str] = []
    used = 0
    for char in text:
        used += _char_width(char)
        if used > columns - 1:  # a combining mark (no width) stays with its letter
            break
        kept.append(char)
    return "".join(kept) + ELLIPSIS


def cell(text: str, columns: int) -> str:
    """``text`` made ``safe`` and ``fit`` to ``columns``, escaping only what may show.

    An error may be a megabyte of traceback: escaped whole, a table of 200 of
    them took half a minute to print 60 columns of each.
    """
    # Every character shown takes a column or more, but for marks combining with
    # the one before: past this many, nothing more can show but those marks.
    head = text[: columns * 8]
    shown = fit(safe(head), columns)
    if len(head) < len(text) and not shown.endswith(ELLIPSIS):
        shown = fit(shown, columns - 1)  # marks alone fitted: more text follows all the same
        shown = shown if shown.endswith(ELLIPSIS) else shown + ELLIPSIS
    return shown


def ago(moment: datetime, now: datetime) -> str:
    """How long before ``now`` a moment was, as people say it: ``3 min ago``."""
    seconds = (now - moment).total_seconds()
    if seconds < 0:
        return f"in {span(-seconds)}"  # another machine's clock, ahead of ours
    if seconds < 1:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 48 * 3600:
        return f"{int(seconds // 3600)} h ago"
    days = int(seconds // 86400)
    if days < 60:
        return f"{days} days ago"
    return moment.strftime("%Y-%m-%d")


def span(seconds: float) -> str:
    """A duration in its two largest units: ``45s``, ``12m 5s``, ``2h 5m``, ``3d 4h``."""
    if seconds < 1:
        return "<1s"
    whole = int(seconds)
    for size, unit, smaller, smaller_unit in (
        (86400, "d", 3600, "h"),
        (3600, "h", 60, "m"),
        (60, "m", 1, "s"),
    ):
        if whole >= size:
            rest = whole % size // smaller
            return f"{whole // size}{unit}" + (f" {rest}{smaller_unit}" if rest else "")
    return f"{whole}s"


# Colour

_STYLES: Final = {
    "green": "32",
    "red": "31",
    "yellow": "33",
    "blue": "34",
    "dim": "2",
    "bold": "1",
}


def wants_colour(stream: TextIO, *, refused: bool, environ: Mapping[str, str]) -> bool:
    """Colour only on a terminal, and never with ``--no-color`` or ``NO_COLOR`` set."""
    if refused or environ.get("NO_COLOR") or environ.get("TERM") == "dumb":
        return False
    return is_terminal(stream)


def paint(text: str, style: str | None, *, colour: bool) -> str:
    """``text`` in a style (``"green"``, ``"dim"``...) when ``colour`` is on."""
    if not colour or style is None or not text:
        return text
    return f"\x1b[{_STYLES[style]}m{text}\x1b[0m"


# Progress


class Progress:
    """A one-line progress display on a terminal's stderr; draws nothing elsewhere.

    ``update(done, total)`` draws a bar; ``spin(work)`` shows the time elapsed
    while awaiting work whose progress cannot be measured. ``close()`` erases
    the line, so a finished command leaves only its output behind.
    """

    BAR_COLUMNS: Final = 30
    REDRAW_SECONDS: Final = 0.1

    def __init__(self, label: str, stream: TextIO) -> None:
        self._label = label
        self._stream = stream
        self._on = is_terminal(stream)
        self._drawn_at = -1.0
        self._drawn = False

    @property
    def shown(self) -> bool:
        """True if the display is drawn (stderr is a terminal)."""
        return self._on

    def update(self, done: int, total: int, unit: str = "") -> None:
        """Draw the bar at ``done`` of ``total`` (redrawn at most ten times a second)."""
        if not self._on:
            return
        moment = time.monotonic()
        if done < total and moment - self._drawn_at < self.REDRAW_SECONDS:
            return
        fraction = min(1.0, done / total) if total > 0 else 1.0
        filled = round(fraction * self.BAR_COLUMNS)
        bar = "#" * filled + "-" * (self.BAR_COLUMNS - filled)
        counts = f"{min(done, total):,}/{total:,}" + (f" {unit}" if unit else "")
        self._draw(f"{self._label} [{bar}] {fraction:4.0%} {counts}", moment)

    async def spin(self, work: Awaitable[T]) -> T:
        """Await ``work``, showing the time it has taken until it is done."""
        if not self._on:
            return await work
        ticking = asyncio.create_task(self._tick())
        try:
            return await work
        finally:
            ticking.cancel()
            # wait, not await: the ticker's CancelledError stays its own, and a
            # cancellation of this task meanwhile is not swallowed with it.
            await asyncio.wait([ticking])

    async def _tick(self) -> None:
        started = time.monotonic()
        for frame in itertools.cycle("|/-\\"):
            moment = time.monotonic()
            self._draw(f"{self._label} {frame} {moment - started:.1f}s", moment)
            await asyncio.sleep(self.REDRAW_SECONDS)

    def _draw(self, line: str, moment: float) -> None:
        self._stream.write(f"\r\x1b[K{line}")
        self._stream.flush()
        self._drawn_at, self._drawn = moment, True

    def close(self) -> None:
        """Erase the line drawn, if any."""
        if self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._drawn = False


def is_terminal(stream: TextIO) -> bool:
    """True if ``stream`` is a terminal (a closed stream is not)."""
    try:
        return stream.isatty()
    except ValueError:
        return False
