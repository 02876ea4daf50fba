"""How the command line prints rows: an aligned table, a JSON array, JSON lines or CSV."""

from __future__ import annotations

import csv
import dataclasses
import enum
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Final, TextIO

from . import _timestamps as timestamps

__all__ = ["FORMATS", "Rows", "as_row", "plain", "write"]

FORMATS: Final = ("table", "json", "nl", "csv")
WIDEST_CELL: Final = 60  # in a table; JSON and CSV carry every value whole

Rows = Sequence[dict[str, Any]]


def plain(value: object) -> object:
    """A value as JSON and CSV carry it: timestamps as stored text, statuses as strings."""
    if isinstance(value, datetime):
        return timestamps.to_text(value)
    if isinstance(value, enum.Enum):
        return value.value
    return value


def as_row(record: Any, columns: Iterable[str] | None = None) -> dict[str, Any]:
    """The fields of a record (or the ``columns`` named) as a row of plain values."""
    names = columns or [field.name for field in dataclasses.fields(record)]
    return {name: plain(getattr(record, name)) for name in names}


def write(rows: Rows, form: str, out: TextIO, columns: Sequence[str] | None = None) -> None:
    """Print ``rows`` in the form asked for; ``columns`` narrows the table only."""
    if form == "json":
        out.write(json.dumps(list(rows), indent=2) + "\n")
    elif form == "nl":
        for row in rows:
            out.write(json.dumps(row) + "\n")
    elif form == "csv":
        if rows:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    else:
        _table(rows, out, columns or (list(rows[0]) if rows else []))


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\n", " ")
    return text if len(text) <= WIDEST_CELL else text[: WIDEST_CELL - 1] + "…"


def _table(rows: Rows, out: TextIO, columns: Sequence[str]) -> None:
    if not rows:
        out.write("(none)\n")
        return
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    widths = [
        max(len(column), *(len(line[n]) for line in cells)) for n, column in enumerate(columns)
    ]
    for line in [list(columns), ["-" * width for width in widths], *cells]:
        cells_ = zip(line, widths, strict=True)
        out.write("  ".join(text.ljust(width) for text, width in cells_).rstrip())
        out.write("\n")
