"""The output forms: streamed JSON, JSON lines, CSV with a header, and tables for people."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from daemon_db import EventRecord, Run, RunStatus
from daemon_db import _output as output
from daemon_db._terminal import width
from tests.helpers import new_run

NOW = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)
ROWS: list[dict[str, Any]] = [
    {"id": 1, "nested": {"a": [1, 2]}},
    {"id": 2, "nested": None},
    {"id": 3, "nested": {}},
]


def written(listing: type[output.Listing], rows: list[dict[str, Any]], **options: Any) -> str:
    out = io.StringIO()
    writer = listing(out, **options)
    for row in rows:
        writer.add(row)
    writer.close()
    return out.getvalue()


@pytest.mark.parametrize("count", [0, 1, 3])
def test_a_streamed_json_array_is_what_json_dumps_writes(count: int) -> None:
    rows = ROWS[:count]
    assert written(output.JsonArray, rows) == json.dumps(rows, indent=2) + "\n"
    compact = written(output.JsonArray, rows, indent=None)
    assert compact == json.dumps(rows, separators=(",", ":")) + "\n"


@pytest.mark.parametrize(("count", "indent"), [(0, 2), (2, 2), (0, None), (2, None)])
def test_a_streamed_array_inside_an_object(count: int, indent: int | None) -> None:
    head = {"run": {"id": "R"}, "events": count}
    out = io.StringIO()
    out.write(output.json_object_opening(head, "latest", indent))
    array = output.JsonArray(out, indent=indent, level=1, end="")
    for row in ROWS[:count]:
        array.add(row)
    array.close()
    out.write("\n}\n" if indent else "}\n")
    whole = {**head, "latest": ROWS[:count]}
    separators = None if indent else (",", ":")
    assert out.getvalue() == json.dumps(whole, indent=indent, separators=separators) + "\n"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
ROW_KEYS = st.text().filter(lambda key: key not in output.JSON_TEXT_COLUMNS)


@given(st.lists(st.dictionaries(ROW_KEYS, JSON_VALUES, max_size=6), max_size=3))
def test_any_rows_stream_as_json_dumps_writes_them(rows: list[dict[str, Any]]) -> None:
    # Each row is written as it comes, indented to its depth: the whole text must
    # still be exactly json.dumps's, at the top level and nested in an object.
    assert written(output.JsonArray, rows) == json.dumps(rows, indent=2) + "\n"
    nested = written(output.JsonArray, rows, indent=4, level=1, end="")
    assert json.dumps({"k": rows}, indent=4).endswith(nested + "\n}")


def test_json_lines_an_object_per_line() -> None:
    assert written(output.JsonLines, ROWS).splitlines() == [
        json.dumps(row, separators=(",", ":")) for row in ROWS
    ]
    assert written(output.JsonLines, []) == ""


def test_csv_has_its_header_even_with_no_rows() -> None:
    assert written(output.CsvRows, [], fields=["id", "nested"]) == "id,nested\n"
    text = written(output.CsvRows, ROWS, fields=["id", "nested"])
    assert list(csv.DictReader(io.StringIO(text))) == [
        {"id": "1", "nested": '{"a":[1,2]}'},
        {"id": "2", "nested": ""},
        {"id": "3", "nested": "{}"},
    ]


def test_machine_forms_carry_json_columns_as_data_and_csv_as_text() -> None:
    event = EventRecord(
        id=7,
        run_id="R",
        sequence=1,
        event_type="tick",
        unit_id=None,
        payload_json='{"n":1,"s":"\\u001b"}',
        created_at=NOW,
    )
    run = new_run(status=RunStatus.RUNNING, config_json='{"retries": 3}', started_at=NOW)
    data = output.as_data(output.record_row(event))
    assert data["payload"] == {"n": 1, "s": "\x1b"}
    assert "payload_json" not in data
    assert data["created_at"] == "2026-11-27T18:00:00.000000Z"
    run_data = output.as_data(output.record_row(run))
    assert run_data["config"] == {"retries": 3}
    assert run_data["status"] == "running"
    assert "config_json" not in run_data
    assert output.as_text(output.record_row(event))["payload_json"] == '{"n":1,"s":"\\u001b"}'
    assert output.as_text(output.record_row(run))["config_json"] == '{"retries": 3}'
    no_payload = output.as_data({"payload_json": None})
    assert no_payload == {"payload": None}
    damaged = output.as_data({"payload_json": "{not json"})  # written behind our back
    assert damaged == {"payload_json": "{not json"}


def table(rows: list[Run], *, colour: bool = False) -> list[str]:
    out = io.StringIO()
    writer = output.Table(out, output.run_table(NOW), colour=colour)
    for run in rows:
        writer.add(output.record_row(run))
    writer.close()
    return out.getvalue().splitlines()


def test_a_table_escapes_stored_text_and_stays_aligned() -> None:
    runs = [
        new_run(feature_branch="feature/\x1b[2Jwipe", error="first\tsecond\nthird"),
        new_run(feature_branch="feature/漢字ブランチ", repo_path="/srv/ｒｅｐｏ"),  # noqa: RUF001
        new_run(feature_branch="feature/e\u0301mojis😀", error="é" * 100),
    ]
    lines = table(runs)
    assert "\x1b" not in "".join(lines)
    assert "feature/\\x1b[2Jwipe" in lines[2]
    assert "first\\tsecond\\nthird" in lines[2]
    assert len(lines) == 5
    # Every column starts at the same display column on every line.
    header = lines[0]
    starts = [width(header[: header.index(name)]) for name in ("status", "repo_path", "error")]
    for line, run in zip(lines[2:], runs, strict=True):
        assert width(line[: line.index("pending")]) == starts[0]
        assert width(line[: line.index(run.repo_path)]) == starts[1]
    assert width(lines[4]) - starts[2] == output.WIDEST_CELL  # a long cell is shortened
    assert lines[4].endswith("…")


def test_a_table_in_colour_is_aligned_as_without() -> None:
    runs = [new_run(status="failed", error="no"), new_run(status="completed")]
    plain = table(runs)
    coloured = table(runs, colour=True)
    assert "\x1b[31mfailed\x1b[0m" in coloured[2]
    assert "\x1b[32mcompleted\x1b[0m" in coloured[3]
    assert [strip_sgr(line) for line in coloured] == plain


def strip_sgr(line: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", line)


def test_a_long_table_is_written_a_page_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "TABLE_PAGE_ROWS", 2)
    out = io.StringIO()
    writer = output.Table(out, output.run_table(NOW), colour=False)
    branches = ["a", "b" * 15, "c" * 30, "d", "e"]
    for branch in branches:
        writer.add(output.record_row(new_run(feature_branch=branch)))
        if writer.count == 2:
            assert len(out.getvalue().splitlines()) == 4  # the first page is out already
    writer.close()
    lines = out.getvalue().splitlines()
    assert [line.split()[2] for line in lines[2:]] == branches
    column = [line.index("/srv/repo") for line in lines[2:]]
    assert column[0] == column[1] < column[2] == column[3] == column[4]  # it only widens


def test_an_empty_table_says_so() -> None:
    assert table([]) == ["(none)"]


def test_relative_times_and_durations_in_a_run_table() -> None:
    finished = new_run(
        status="completed",
        started_at=NOW - timedelta(hours=3),
        completed_at=NOW - timedelta(minutes=55),
    )
    running = new_run(status="running", started_at=NOW - timedelta(minutes=12, seconds=3))
    lines = table([finished, running, new_run()])
    assert "3 h ago" in lines[2]
    assert "ran 2h 5m" in lines[2]
    assert "12 min ago" in lines[3]
    assert "running 12m 3s" in lines[3]
    assert lines[4].split()[1::2] == ["pending", "/srv/repo"]  # no times yet, no duration


def test_a_report_in_each_form() -> None:
    report = {"path": "x.db", "runs": {"pending": 1, "failed": 0}, "problems": ["a", "b"]}
    out = io.StringIO()
    output.write_report(report, "json", out)
    assert json.loads(out.getvalue()) == report
    out = io.StringIO()
    output.write_report(report, "nl", out)
    assert out.getvalue().count("\n") == 1
    assert json.loads(out.getvalue()) == report
    out = io.StringIO()
    output.write_report(report, "csv", out)
    assert list(csv.DictReader(io.StringIO(out.getvalue()))) == [
        {"path": "x.db", "runs_pending": "1", "runs_failed": "0", "problems": '["a","b"]'}
    ]


def test_a_finished_run_is_shown_held_by_nobody() -> None:
    # Its row may still name the DB that made it or last held it: nobody will
    # resume it, and "attempt 1" in the owner column read as a run still held.
    dead = {"owner": "daemon-a", "owner_alive": False, "attempts": 1}
    assert output.held_by({"status": "running", **dead}) == "daemon-a (dead), attempt 1"
    assert output.held_by({"status": "pending", **dead, "owner": None}) == "attempt 1"
    for status in ("completed", "failed", "cancelled"):
        assert output.held_by({"status": status, **dead}) == ""
        assert output._owner_style({"status": status, **dead}) is None
    assert output._owner_style({"status": "running", **dead}) == "red"
    handed_back = {**dead, "owner": None}  # by a clean close, after a takeover
    assert output._owner_style({"status": "running", **handed_back}) is None
