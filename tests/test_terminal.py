"""Text for people at a terminal: escaped, measured in columns, relative times, colour, progress."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon_db import _terminal
from daemon_db._terminal import (
    ELLIPSIS,
    Progress,
    ago,
    cell,
    fit,
    paint,
    safe,
    span,
    wants_colour,
    width,
)

NOW = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("plain text", "plain text"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),  # cannot drive the terminal
        ("a\tb\nc\rd", "a\\tb\\nc\\rd"),  # cannot break a table's rows or columns
        ("bell\x07 del\x7f c1\x9b", "bell\\x07 del\\x7f c1\\x9b"),
        ("evil\u202eexe.txt", "evil\\u202eexe.txt"),  # a bidi override, shown not obeyed
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("line\u2028sep", "line\\u2028sep"),
        ("unassigned\U000e0fff", "unassigned\\U000e0fff"),
        ("漢字 émoji 😀 no\u00a0break", "漢字 émoji 😀 no\u00a0break"),  # printable: as it is
        ("C:\\path", "C:\\path"),
    ],
)
def test_safe_escapes_what_would_reach_the_terminal_raw(stored: str, shown: str) -> None:
    assert safe(stored) == shown
    assert all(char.isprintable() or char == "\u00a0" for char in safe(stored))


@pytest.mark.parametrize(
    ("text", "columns"),
    [
        ("abc", 3),
        ("", 0),
        ("漢字", 4),  # wide: two columns each
        ("\uff46\uff55\uff4c\uff4c", 8),  # fullwidth forms of "full"
        ("😀", 2),
        ("e\u0301", 1),  # e and a combining acute accent: one column
        ("\u0915\u094d\u0937", 2),  # a Devanagari conjunct: the virama takes none
        ("\u1100\u1161", 2),  # a Hangul syllable from jamo: the vowel joins the lead
    ],
)
def test_width_counts_display_columns(text: str, columns: int) -> None:
    assert width(text) == columns


def test_fit_shortens_to_display_columns_without_splitting_a_letter() -> None:
    assert fit("abcdef", 6) == "abcdef"
    assert fit("abcdefg", 6) == "abcde…"
    assert fit("漢字漢字", 5) == "漢字…"
    assert width(fit("漢字漢字", 6)) <= 6
    assert fit("ée\u0301ée\u0301é", 4) == "ée\u0301é…"
    assert fit("abce\u0301fg", 5) == "abce\u0301…"  # the accent stays with its e
    for text in ("😀" * 40, "e\u0301" * 80, "漢a" * 50):
        assert width(fit(text, 60)) <= 60


_TEXT = st.text(st.characters(codec="utf-8") | st.sampled_from("\x1b\n\t\u0301\u200f"))


@given(
    st.one_of(_TEXT, st.builds(lambda a, n: a * n, _TEXT, st.integers(1, 400))),
    st.integers(2, 80),
)
def test_a_table_cell_is_the_text_made_safe_and_fit(text: str, columns: int) -> None:
    shown = cell(text, columns)
    assert width(shown) <= columns
    head = text[: columns * 8]
    if len(head) == len(text) or width(safe(head)) >= columns:
        assert shown == fit(safe(text), columns)
    else:  # marks combining with one letter, and more text after them
        assert shown.endswith(ELLIPSIS)


def test_a_table_cell_escapes_only_what_may_show(monkeypatch: pytest.MonkeyPatch) -> None:
    # A megabyte of traceback was escaped whole for 60 columns: 200 of them
    # took half a minute to print (adversary pass).
    escaped: list[int] = []

    def counted(text: str) -> str:
        escaped.append(len(text))
        return safe(text)

    monkeypatch.setattr(_terminal, "safe", counted)
    traceback = 'Traceback (most recent call last):\n  File "x.py", line 1\n' * 20_000
    assert cell(traceback, 60) == fit(safe(traceback), 60)
    assert escaped == [480]


@pytest.mark.parametrize(
    ("before", "said"),
    [
        (timedelta(0), "just now"),
        (timedelta(seconds=12.7), "12 s ago"),
        (timedelta(minutes=3, seconds=59), "3 min ago"),
        (timedelta(hours=5), "5 h ago"),
        (timedelta(hours=47), "47 h ago"),
        (timedelta(days=12), "12 days ago"),
        (timedelta(days=90), "2026-08-29"),
        (-timedelta(minutes=2), "in 2m"),  # a clock ahead of ours
    ],
)
def test_ago_says_how_long_ago(before: timedelta, said: str) -> None:
    assert ago(NOW - before, NOW) == said


@pytest.mark.parametrize(
    ("seconds", "said"),
    [
        (0.3, "<1s"),
        (45, "45s"),
        (60, "1m"),
        (12 * 60 + 5, "12m 5s"),
        (2 * 3600 + 5 * 60 + 59, "2h 5m"),
        (3 * 86400 + 4 * 3600, "3d 4h"),
        (400 * 86400, "400d"),
    ],
)
def test_span_gives_the_two_largest_units(seconds: float, said: str) -> None:
    assert span(seconds) == said


def test_colour_only_on_a_terminal_and_never_when_refused() -> None:
    assert wants_colour(Terminal(), refused=False, environ={})
    assert not wants_colour(io.StringIO(), refused=False, environ={})
    assert not wants_colour(Terminal(), refused=True, environ={})
    assert not wants_colour(Terminal(), refused=False, environ={"NO_COLOR": "1"})
    assert wants_colour(Terminal(), refused=False, environ={"NO_COLOR": ""})  # as no-color.org
    assert not wants_colour(Terminal(), refused=False, environ={"TERM": "dumb"})
    assert paint("ok", "green", colour=True) == "\x1b[32mok\x1b[0m"
    assert paint("ok", "green", colour=False) == "ok"
    assert paint("", "red", colour=True) == ""


def test_progress_draws_on_a_terminal_and_erases_itself() -> None:
    screen = Terminal()
    progress = Progress("copying", screen)
    assert progress.shown
    progress.update(0, 200, "pages")
    progress.update(200, 200, "pages")  # the last step is always drawn
    progress.close()
    drawn = screen.getvalue()
    assert "copying [------------------------------]   0% 0/200 pages" in drawn
    assert "copying [##############################] 100% 200/200 pages" in drawn
    assert drawn.endswith("\r\x1b[K")
    assert "\n" not in drawn


def test_progress_draws_nothing_elsewhere() -> None:
    piped = io.StringIO()
    progress = Progress("copying", piped)
    assert not progress.shown
    progress.update(1, 2)
    assert asyncio.run(progress.spin(asyncio.sleep(0, "done"))) == "done"
    progress.close()
    assert piped.getvalue() == ""


def test_progress_spins_while_work_whose_progress_is_unknown_runs() -> None:
    screen = Terminal()
    progress = Progress("checking", screen)
    assert asyncio.run(progress.spin(asyncio.sleep(0, 42))) == 42
    progress.close()
    assert screen.getvalue().startswith("\r\x1b[Kchecking | 0.0s")
    assert screen.getvalue().endswith("\r\x1b[K")
