"""How the command line prints: an aligned table for people; JSON, JSON lines or CSV for programs.

A listing is written a row at a time as rows arrive, so a long one is never
held in memory: a JSON array is opened, filled and closed; CSV starts with its
header (even when no row follows). Rows hold record values as they are
(datetimes, statuses, JSON text); each form turns them into what it carries:

- JSON and JSON lines: data. Timestamps as stored text, statuses as strings,
  and the JSON text columns (``payload_json``, ``config_json``) as the JSON
  values they hold, under their plain names (``payload``, ``config``).
- CSV: text, the columns under their stored names; a list as its JSON text.
- Table: for people. Text made safe for the terminal and shortened to fit,
  times relative to now, statuses in colour on a terminal.
"""

from __future__ import annotations

import abc
import csv
import dataclasses
import enum
import functools
import json
import operator
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Final, TextIO

from . import _terminal as terminal
from . import _timestamps as timestamps
from . import _validation as check
from ._errors import DaemonDBError, InvalidRecordError, show
from ._records import FINISHED_RUN_STATUSES, EventRecord, Run, UnitRecord

__all__ = [
    "EVENT_FIELDS",
    "FORMS",
    "OWNERSHIP_FIELDS",
    "RESUMABLE_FIELDS",
    "RUN_FIELDS",
    "STATUS_STYLES",
    "Column",
    "CsvRows",
    "EventLines",
    "JsonArray",
    "JsonLines",
    "Listing",
    "Row",
    "Table",
    "as_data",
    "as_text",
    "duration",
    "event_table",
    "held_by",
    "json_object_opening",
    "listing",
    "record_row",
    "resumable_table",
    "run_table",
    "unit_table",
    "write_report",
]

FORMS: Final = ("table", "json", "nl", "csv")
WIDEST_CELL: Final = 60  # display columns, in a table; the other forms carry every value whole
TABLE_PAGE_ROWS: Final = 1000  # a table is aligned a page at a time, so it can stream

JSON_TEXT_COLUMNS: Final = {"payload_json": "payload", "config_json": "config"}
"""Columns that hold JSON text, and the names their decoded values take in JSON."""

STATUS_STYLES: Final = {
    "pending": "blue",
    "running": "yellow",
    "completed": "green",
    "failed": "red",
    "cancelled": "dim",
}

RUN_FIELDS: Final = tuple(field.name for field in dataclasses.fields(Run))
OWNERSHIP_FIELDS: Final = ("owner", "owner_alive", "attempts")
"""Who holds a run, whether it is alive, how many takeovers it has had: beside its fields."""
UNIT_FIELDS: Final = tuple(field.name for field in dataclasses.fields(UnitRecord))
EVENT_FIELDS: Final = tuple(field.name for field in dataclasses.fields(EventRecord))

Row = Mapping[str, Any]
_COMPACT: Final = (",", ":")
_compact = json.JSONEncoder(separators=_COMPACT).encode  # json.dumps makes an encoder a call


def record_row(record: Any) -> dict[str, Any]:
    """A record's fields as a row, values as they are.

    Raises DaemonDBError for a value another tool wrote as a blob, which the
    library hands over as it is (checking every column's type would cost each
    row about a tenth more), but no form of the command line can show as text.
    """
    kind: type = type(record)
    names, values = _fields_of(kind)
    row = dict(zip(names, values(record), strict=True))
    if bytes in map(type, row.values()):
        name = next(name for name, value in row.items() if type(value) is bytes)
        where = f"{_TABLES.get(kind, 'a')} row {show(getattr(record, 'id', None))}"
        raise DaemonDBError(
            f"damaged {where}: {name}={show(row[name])} is a blob another tool wrote, not text"
        )
    return row


@functools.cache
def _fields_of(kind: type) -> tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]:
    """A record type's field names, and a getter of its values in that order.

    A listing makes a row of every record: ``dataclasses.fields`` each time
    was a tenth of the command line's time per row.
    """
    names = tuple(field.name for field in dataclasses.fields(kind))
    get = operator.attrgetter(*names)
    return names, (get if len(names) > 1 else lambda record: (get(record),))


_TABLES: Final[dict[type, str]] = {Run: "runs", UnitRecord: "units", EventRecord: "events"}


_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
"""Types whose values every form carries as they are: most of a row's values."""


def _plain(value: object) -> object:
    if type(value) in _SCALARS:
        return value
    if isinstance(value, datetime):
        return timestamps.to_text(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def as_data(row: Row) -> dict[str, Any]:
    """A row as JSON carries it: JSON text columns decoded, under their plain names."""
    data: dict[str, Any] = {}
    for name, value in row.items():
        if name in JSON_TEXT_COLUMNS:
            try:  # as the library reads it: 1e999 decoded by json would go out as Infinity
                data[JSON_TEXT_COLUMNS[name]] = (
                    None if value is None else check.decoded(name, value)
                )
                continue
            except InvalidRecordError:  # written behind the library's back: shown as it is
                pass
        data[name] = value if type(value) in _SCALARS else _plain(value)
    return data


def as_text(row: Row) -> dict[str, Any]:
    """A row as CSV carries it: stored text, a list or mapping as its JSON text."""
    text: dict[str, Any] = {}
    for name, value in row.items():
        plain = _plain(value)
        text[name] = _compact(plain) if isinstance(plain, list | dict) else plain
    return text


# The forms of a listing


class Listing(abc.ABC):
    """Rows written as they come; ``close()`` ends the listing."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.count = 0

    def add(self, row: Row) -> None:
        """Write one row."""
        self._add(row)
        self.count += 1

    @abc.abstractmethod
    def _add(self, row: Row) -> None: ...

    def flush(self) -> None:
        """Send what is written on (a follower calls this after each row)."""
        self.out.flush()

    @abc.abstractmethod
    def close(self) -> None:
        """End the listing."""

    def cut(self) -> None:
        """End a listing an error stopped: the rows before it stand, the error says why.

        The data forms end as when whole (a JSON array of the rows before), so
        that they stay readable; the command's exit status says it was cut.
        """
        self.close()


class JsonArray(Listing):
    """A JSON array, opened at the first row and closed at the end: ``[]`` when empty.

    ``indent`` None writes it on one line; ``level`` indents it as the value
    of a key in an object written around it.
    """

    def __init__(self, out: TextIO, *, indent: int | None = 2, level: int = 0, end: str = "\n"):
        super().__init__(out)
        self._indent, self._end = indent, end
        self._margin = "" if indent is None else "\n" + " " * (indent * level)

    def _add(self, row: Row) -> None:
        opening = "[" if self.count == 0 else ","
        step = "" if self._indent is None else " " * self._indent
        self.out.write(opening + _indented(as_data(row), self._indent, self._margin + step))

    def close(self) -> None:
        self.out.write(("[]" if self.count == 0 else self._margin + "]") + self._end)
        self.flush()


def _indented(value: object, indent: int | None, margin: str) -> str:
    """``value`` as JSON, each of its lines starting at ``margin`` (a newline and spaces)."""
    if indent is None:
        return _compact(value)
    if (
        isinstance(value, dict)
        and value
        and not any(
            map(_opens_lines, [item for item in value.values() if type(item) not in _SCALARS])
        )
    ):
        # A flat object, as most rows are. ``indent`` takes Python's encoder, three
        # times as slow as C's, which lays the lines out too when its item
        # separator holds the break: the same text.
        inner = margin + " " * indent
        text = _laid_out(inner)(value)
        return f"{margin}{{{inner}{text[1:-1]}{margin}}}"
    return margin + json.dumps(value, indent=indent).replace("\n", margin)


@functools.cache
def _laid_out(inner: str) -> Callable[[object], str]:
    """An encoder whose item separator breaks the line and indents to ``inner``."""
    return json.JSONEncoder(separators=("," + inner, ": ")).encode


def _opens_lines(value: object) -> bool:
    """Whether ``value``, indented as JSON, takes lines of its own (``{}`` and ``[]`` do not)."""
    return isinstance(value, dict | list | tuple) and len(value) > 0


def json_object_opening(fields: Mapping[str, Any], key: str, indent: int | None) -> str:
    """A JSON object's text with ``fields``, up to where the value of a last ``key`` goes.

    The caller writes that value (a streamed JsonArray at ``level=1``), then
    closes the object.
    """
    separators = None if indent is not None else _COMPACT
    whole = json.dumps({**fields, key: None}, indent=indent, separators=separators)
    return whole[: whole.rindex("null")]


class JsonLines(Listing):
    """One JSON object per line."""

    def _add(self, row: Row) -> None:
        self.out.write(_compact(as_data(row)) + "\n")

    def close(self) -> None:
        self.flush()


class CsvRows(Listing):
    """CSV with a header row, written at once so that an empty listing still has one."""

    def __init__(self, out: TextIO, fields: Sequence[str]) -> None:
        super().__init__(out)
        self._writer = csv.DictWriter(out, fieldnames=list(fields), lineterminator="\n")
        self._writer.writeheader()

    def _add(self, row: Row) -> None:
        self._writer.writerow(as_text(row))

    def close(self) -> None:
        self.flush()


@dataclasses.dataclass(frozen=True, slots=True)
class Column:
    """A table column: its header, the text of its cell, and the cell's style."""

    header: str
    cell: Callable[[Row], str]
    style: Callable[[Row], str | None] = lambda row: None
    right: bool = False  # numbers line up on the right


class Table(Listing):
    """An aligned table, written a page of rows at a time.

    Each page is aligned to the widest cell seen so far, so the columns only
    ever widen, and only between pages; ``(none)`` when there is no row.
    """

    def __init__(self, out: TextIO, columns: Sequence[Column], *, colour: bool) -> None:
        super().__init__(out)
        self._columns = columns
        self._colour = colour
        self._widths = [terminal.width(column.header) for column in columns]
        self._page: list[list[tuple[str, str | None]]] = []
        self._started = False

    def _add(self, row: Row) -> None:
        cells = [
            (terminal.cell(column.cell(row), WIDEST_CELL), column.style(row))
            for column in self._columns
        ]
        self._page.append(cells)
        if len(self._page) >= TABLE_PAGE_ROWS:
            self._write_page()

    def flush(self) -> None:
        self._write_page()
        self.out.flush()

    def _write_page(self) -> None:
        for cells in self._page:
            for n, (text, _) in enumerate(cells):
                self._widths[n] = max(self._widths[n], terminal.width(text))
        if self._page and not self._started:
            self._line([(column.header, None) for column in self._columns], bold=True)
            self._line([("-" * width, None) for width in self._widths])
            self._started = True
        for cells in self._page:
            self._line(cells)
        self._page.clear()

    def _line(self, cells: Sequence[tuple[str, str | None]], *, bold: bool = False) -> None:
        parts = []
        for (text, style), width, column in zip(cells, self._widths, self._columns, strict=True):
            padding = " " * (width - terminal.width(text))
            shown = terminal.paint(text, "bold" if bold else style, colour=self._colour)
            parts.append(padding + shown if column.right else shown + padding)
        self.out.write("  ".join(parts).rstrip() + "\n")

    def close(self) -> None:
        self.flush()
        if not self._started:
            self.out.write("(none)\n")

    def cut(self) -> None:
        self.flush()  # no "(none)": an error came before any row, not the end


def listing(
    form: str,
    out: TextIO,
    *,
    fields: Sequence[str],
    table: Sequence[Column],
    colour: bool = False,
) -> Listing:
    """A listing in ``form``: CSV has the ``fields`` as columns, a table the ``table`` columns."""
    if form == "json":
        return JsonArray(out)
    if form == "nl":
        return JsonLines(out)
    if form == "csv":
        return CsvRows(out, fields)
    return Table(out, table, colour=colour)


def write_report(report: Mapping[str, Any], form: str, out: TextIO) -> None:
    """A report (one object) as JSON, or on one line for ``nl``; CSV flattens it to one row."""
    if form == "json":
        out.write(json.dumps(as_data(report), indent=2) + "\n")
    elif form == "nl":
        out.write(json.dumps(as_data(report), separators=_COMPACT) + "\n")
    elif form == "csv":
        flat = _flatten(report)
        writer = CsvRows(out, list(flat))
        writer.add(flat)
        writer.close()
    else:
        raise ValueError(f"a report has no {form!r} form here")


def _flatten(report: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in report.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{name}_"))
        else:
            flat[f"{prefix}{name}"] = value
    return flat


# Table columns of the records


def _text(name: str) -> Callable[[Row], str]:
    def cell(row: Row) -> str:
        value = _plain(row[name])
        return "" if value is None else str(value)

    return cell


def _status_style(row: Row) -> str | None:
    return STATUS_STYLES.get(str(_plain(row["status"])))


def _started(now: datetime) -> Callable[[Row], str]:
    def cell(row: Row) -> str:
        started: datetime | None = row["started_at"]
        return "" if started is None else terminal.ago(started, now)

    return cell


def duration(row: Row, now: datetime) -> str:
    """How long a run or unit ran (``ran 2h 5m``), or has been running."""
    started: datetime | None = row["started_at"]
    completed: datetime | None = row["completed_at"]
    if started is None:
        return ""
    if completed is not None:
        return f"ran {terminal.span((completed - started).total_seconds())}"
    if _plain(row["status"]) == "running":
        return f"running {terminal.span((now - started).total_seconds())}"
    return ""


def _duration(now: datetime) -> Callable[[Row], str]:
    return lambda row: duration(row, now)


def run_table(now: datetime) -> list[Column]:
    """A table of runs: times relative to ``now``."""
    return [
        Column("id", _text("id")),
        Column("status", _text("status"), _status_style),
        Column("feature_branch", _text("feature_branch")),
        Column("repo_path", _text("repo_path")),
        Column("started", _started(now)),
        Column("duration", _duration(now)),
        Column("owner", held_by, _owner_style),
        Column("error", _text("error"), lambda row: "red"),
    ]


def held_by(row: Row) -> str:
    """Who holds a run, for people: its name, ``(dead)`` after a dead one, and attempts.

    Nothing for a finished run: no one resumes it, whoever created or last held it.
    """
    if row.get("status") in _FINISHED:
        return ""
    owner = row.get("owner")
    text = "" if owner is None else str(owner)
    if owner is not None and not row.get("owner_alive"):
        text += " (dead)"
    attempts = row.get("attempts") or 0
    return f"{text}{', ' if text else ''}attempt {attempts}" if attempts else text


def _owner_style(row: Row) -> str | None:
    dead = row.get("owner") is not None and not row.get("owner_alive")
    return "red" if dead and held_by(row) else None


_FINISHED: Final = frozenset(status.value for status in FINISHED_RUN_STATUSES)


def unit_table(now: datetime) -> list[Column]:
    """A table of a run's units."""
    return [
        Column("unit_id", _text("unit_id")),
        Column("status", _text("status"), _status_style),
        Column("branch", _text("branch")),
        Column("started", _started(now)),
        Column("duration", _duration(now)),
        Column("error", _text("error"), lambda row: "red"),
    ]


def event_table(now: datetime) -> list[Column]:
    """A table of events; the payload as compact JSON text."""

    def when(row: Row) -> str:
        return terminal.ago(row["created_at"], now)

    return [
        Column("sequence", _text("sequence"), right=True),
        Column("when", when, lambda row: "dim"),
        Column("event_type", _text("event_type")),
        Column("unit_id", _text("unit_id")),
        Column("payload", _text("payload_json")),
    ]


RESUMABLE_FIELDS: Final = (
    "id",
    "status",
    "feature_branch",
    "repo_path",
    "started_at",
    "units",
    "units_completed",
    "units_running",
    "next_sequence",
    *OWNERSHIP_FIELDS,
)


def resumable_table() -> list[Column]:
    """A table of what a daemon would resume: units done of all, the ones running."""
    return [
        Column("id", _text("id")),
        Column("status", _text("status"), _status_style),
        Column("feature_branch", _text("feature_branch")),
        Column("repo_path", _text("repo_path")),
        Column("units_completed", lambda row: f"{row['units_completed']}/{row['units']}"),
        Column("units_running", lambda row: ", ".join(row["units_running"])),
        Column("next_sequence", _text("next_sequence"), right=True),
        Column("owner", held_by, _owner_style),
    ]


class EventLines(Listing):
    """Events as a log, a line each as they come (``events --follow``): no table to align."""

    def _add(self, row: Row) -> None:
        unit = f"  unit {row['unit_id']}" if row["unit_id"] is not None else ""
        payload = f"  {row['payload_json']}" if row["payload_json"] is not None else ""
        created = timestamps.to_text(row["created_at"])
        line = f"{row['sequence']:>6}  {created}  {row['event_type']}{unit}{payload}"
        self.out.write(terminal.safe(line) + "\n")

    def close(self) -> None:
        self.flush()
