"""The daemon-db command line: commands, forms, ids as typed, errors, terminals, pipes, streaming.

Mistakes are checked on the real command in a subprocess: its exit status,
and its stderr being exactly one line that names what is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import dataclasses
import io
import json
import os
import pty
import re
import select
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import daemon_db
from daemon_db import DB, EventRecord, Run, RunStatus, UnitRecord
from daemon_db._cli import main
from daemon_db._commands import HOLDER_CHECKED_EVERY
from daemon_db._sqlite import events as event_queries
from daemon_db._sqlite import owners as owner_queries
from daemon_db._sqlite.schema import SCHEMA_VERSION
from daemon_db._terminal import width
from tests.helpers import dump, make_version_1, new_run

CHILD = Path(__file__).parent / "children" / "append_events.py"
SGR = re.compile(r"\x1b\[[0-9;]*m")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def environment(**changes: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DAEMON_DB", "NO_COLOR", "TERM")}
    return env | changes


def daemon_db_command(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the real command, as a person would."""
    return subprocess.run(
        [sys.executable, "-m", "daemon_db", *args],
        capture_output=True,
        text=True,
        env=environment(**env),
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )


def test_a_closed_standard_output_is_one_line_on_standard_error(db_path: Path) -> None:
    done = subprocess.run(
        ["sh", "-c", 'exec "$0" -m daemon_db runs --json --db "$1" >&-', sys.executable, db_path],
        capture_output=True,
        text=True,
        env=environment(),
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (1, "daemon-db: error: standard output is closed\n")


def assert_one_line_error(done: subprocess.CompletedProcess[str], status: int, *named: str) -> str:
    """The command failed with ``status`` and said so in one line naming each of ``named``."""
    assert done.returncode == status, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert done.stderr.endswith("\n")
    assert lines[0].startswith("daemon-db: error: ")
    for text in named:
        assert text in lines[0]
    return lines[0]


async def _fill(path: Path) -> list[Run]:
    async with DB.open(path) as db:
        made = [
            await db.create_run(new_run(feature_branch="feature/a", status="completed")),
            await db.create_run(
                new_run(feature_branch="feature/b", status="running", config_json='{"k":[1]}')
            ),
            await db.create_run(new_run(feature_branch="feature/c")),
        ]
        await db.create_unit(UnitRecord(run_id=made[1].id, unit_id="u1", status="running"))
        await db.create_unit(UnitRecord(run_id=made[1].id, unit_id="u2", status="completed"))
        for n in range(5):
            await db.append_event(made[1].id, "tick", unit_id="u1", payload={"n": n})
        await db.append_event(made[1].id, "note", unit_id="u2")
        return made


@pytest.fixture
def filled(db_path: Path) -> list[Run]:
    return asyncio.run(_fill(db_path))


# Listings and their forms


def test_runs_in_every_form(
    capsys: pytest.CaptureFixture[str], db_path: Path, filled: list[Run]
) -> None:
    ids = [run.id for run in filled]
    code, out, err = cli(capsys, "runs", "--db", str(db_path))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == [
        "id",
        "status",
        "feature_branch",
        "repo_path",
        "started",
        "duration",
        "owner",
        "error",
    ]
    assert [line.split()[0] for line in lines[2:]] == ids
    assert "\x1b" not in out  # no colour: not a terminal

    code, out, _ = cli(capsys, "runs", "--db", str(db_path), "--json")
    rows = json.loads(out)
    assert [row["id"] for row in rows] == ids
    assert rows[0]["status"] == "completed"
    assert rows[1]["config"] == {"k": [1]}  # data, not JSON text inside JSON
    assert "config_json" not in rows[1]

    code, out, _ = cli(capsys, "runs", "--db", str(db_path), "--nl")
    assert [json.loads(line)["id"] for line in out.splitlines()] == ids

    code, out, _ = cli(capsys, "runs", "--db", str(db_path), "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["id"] for row in rows] == ids
    assert rows[1]["status"] == "running"
    assert rows[1]["config_json"] == '{"k":[1]}'  # CSV keeps the text


def test_runs_filters_and_paging(
    capsys: pytest.CaptureFixture[str], db_path: Path, filled: list[Run]
) -> None:
    def ids(*args: str) -> list[str]:
        code, out, _ = cli(capsys, "runs", "--db", str(db_path), "--json", *args)
        assert code == 0
        return [row["id"] for row in json.loads(out)]

    a, b, c = (run.id for run in filled)
    assert ids("--status", "running", "--status", "pending") == [b, c]
    assert ids("--branch", "feature/a") == [a]
    assert ids("--repo", "/srv/repo", "--limit", "2") == [a, b]
    assert ids("--after", a) == [b, c]
    assert ids("--after", a[-6:].lower()) == [b, c]  # the id as people type it
    assert ids("--newest-first", "--limit", "1") == [c]
    assert ids("--newest-first", "--after", c) == [b, a]


def test_a_cut_listing_says_how_to_go_on(
    capsys: pytest.CaptureFixture[str], db_path: Path, filled: list[Run]
) -> None:
    code, out, err = cli(capsys, "runs", "--db", str(db_path), "--limit", "2", "--nl")
    assert code == 0
    assert [json.loads(line)["id"] for line in out.splitlines()] == [filled[0].id, filled[1].id]
    assert err == f"daemon-db: more runs follow: add --after {filled[1].id} to see them\n"
    code, out, err = cli(capsys, "runs", "--db", str(db_path), "--nl", "--after", filled[1].id)
    assert [json.loads(line)["id"] for line in out.splitlines()] == [filled[2].id]
    assert err == ""
    code, out, err = cli(capsys, "runs", "--db", str(db_path), "--limit", "3")
    assert err == ""  # nothing was cut

    run = filled[1].id
    code, out, err = cli(capsys, "events", run, "--db", str(db_path), "--limit", "4", "--nl")
    assert [json.loads(line)["sequence"] for line in out.splitlines()] == [1, 2, 3, 4]
    assert err == "daemon-db: more events follow: add --since 4 to see them\n"


def test_the_largest_limit_the_parser_takes_lists_everything(
    capsys: pytest.CaptureFixture[str], db_path: Path, filled: list[Run]
) -> None:
    # The parser takes up to 2**63 - 1; the one row more asked for must not overflow.
    largest = str(2**63 - 1)
    code, out, err = cli(capsys, "runs", "--db", str(db_path), "--limit", largest, "--nl")
    assert (code, err) == (0, "")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [run.id for run in filled]
    code, out, err = cli(capsys, "events", filled[1].id, "--db", str(db_path), "--limit", largest)
    assert (code, err) == (0, "")


def test_show_a_run(capsys: pytest.CaptureFixture[str], db_path: Path, filled: list[Run]) -> None:
    running = filled[1]
    code, out, _ = cli(capsys, "show", running.id, "--db", str(db_path), "--events", "2")
    assert code == 0
    assert running.id in out
    assert re.search(r"^started_at +\S+Z \((just now|\d+ s ago)\)$", out, re.MULTILINE)
    assert re.search(r"^duration +running (<1s|\d+s)$", out, re.MULTILINE)
    assert "units: 2" in out
    assert "events: 6, the latest 2:" in out
    assert '{"n":4}' in out
    assert out.rstrip().splitlines()[-1].split()[-2:] == ["note", "u2"]

    code, out, _ = cli(capsys, "show", running.id, "--db", str(db_path), "--json")
    shown = json.loads(out)
    assert shown["run"]["id"] == running.id
    assert shown["run"]["config"] == {"k": [1]}
    assert [unit["unit_id"] for unit in shown["units"]] == ["u1", "u2"]
    assert shown["events"] == 6
    assert [event["sequence"] for event in shown["latest_events"]] == [1, 2, 3, 4, 5, 6]
    assert shown["latest_events"][0]["payload"] == {"n": 0}

    code, out, _ = cli(capsys, "show", running.id, "--db", str(db_path), "--nl", "--events", "1")
    assert out.count("\n") == 1
    assert [event["sequence"] for event in json.loads(out)["latest_events"]] == [6]

    code, out, _ = cli(capsys, "show", running.id, "--db", str(db_path), "--csv")
    (row,) = csv.DictReader(io.StringIO(out))
    assert (row["id"], row["units"], row["events"]) == (running.id, "2", "6")


def test_events_in_every_form_with_filters(
    capsys: pytest.CaptureFixture[str], db_path: Path, filled: list[Run]
) -> None:
    run = filled[1].id

    def events(*args: str) -> list[dict[str, Any]]:
        code, out, _ = cli(capsys, "events", run, "--db", str(db_path), "--json", *args)
        assert code == 0
        rows: list[dict[str, Any]] = json.loads(out)
        return rows

    assert [e["sequence"] for e in events("--since", "3")] == [4, 5, 6]
    assert events("--since", "3")[0]["payload"] == {"n": 3}  # a JSON value
    assert "payload_json" not in events()[0]
    assert [e["sequence"] for e in events("--type", "note")] == [6]
    assert [e["sequence"] for e in events("--type", "note", "--type", "tick")] == list(range(1, 7))
    assert [e["sequence"] for e in events("--unit", "u1", "--since", "3")] == [4, 5]
    assert events("--unit", "nobody") == []

    _, out, _ = cli(capsys, "events", run, "--db", str(db_path), "--csv", "--since", "5")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(row["sequence"], row["payload_json"]) for row in rows] == [("6", "")]
    _, out, _ = cli(capsys, "events", run, "--db", str(db_path))
    lines = out.splitlines()
    assert lines[0].split() == ["sequence", "when", "event_type", "unit_id", "payload"]
    assert lines[2].split()[0] == "1"
    assert lines[2].endswith('{"n":0}')


def test_every_listing_and_report_in_every_form_and_csv_with_no_rows(
    capsys: pytest.CaptureFixture[str], db_path: Path
) -> None:
    asyncio.run(_empty(db_path))
    db = ["--db", str(db_path)]
    headers = {
        "runs": "id,feature_branch,repo_path",
        "resumable": "id,status,feature_branch,repo_path,started_at,units",
        "prune": "id,feature_branch",
        "check": "problem",
        "stats": "path,schema_version,runs_pending",
    }
    for command, header in headers.items():
        args = [command, *db] + (["--older-than", "1d"] if command == "prune" else [])
        code, out, _ = cli(capsys, *args, "--csv")
        assert code == 0, command
        assert out.startswith(header), command
        code, out, _ = cli(capsys, *args, "--json")
        assert json.loads(out) is not None, command
        code, out, _ = cli(capsys, *args, "--nl")
        assert all(json.loads(line) is not None for line in out.splitlines()), command
        code, out, _ = cli(capsys, *args)
        assert code == 0, command
    code, out, _ = cli(capsys, "runs", *db, "--json")
    assert out == "[]\n"
    code, out, _ = cli(capsys, "runs", *db)
    assert out == "(none)\n"


async def _empty(path: Path) -> None:
    async with DB.open(path):
        pass


def test_resumable_stats_check(
    capsys: pytest.CaptureFixture[str], db_path: Path, filled: list[Run]
) -> None:
    code, out, _ = cli(capsys, "resumable", "--db", str(db_path), "--json")
    rows = json.loads(out)
    assert [row["id"] for row in rows] == [filled[1].id, filled[2].id]
    assert (rows[0]["units"], rows[0]["units_completed"]) == (2, 1)
    assert rows[0]["units_running"] == ["u1"]
    assert rows[0]["next_sequence"] == 7
    code, out, _ = cli(capsys, "resumable", "--db", str(db_path))
    assert out.splitlines()[2].split()[-3:] == ["1/2", "u1", "7"]

    code, out, _ = cli(capsys, "stats", "--db", str(db_path), "--json")
    figures = json.loads(out)
    assert figures["runs"] == {
        "pending": 1,
        "running": 1,
        "completed": 1,
        "failed": 0,
        "cancelled": 0,
    }
    assert figures["events"] == 6
    assert figures["schema_version"] == SCHEMA_VERSION
    assert figures["file_bytes"] > 0
    code, out, _ = cli(capsys, "stats", "--db", str(db_path))
    assert "events          6" in out
    code, out, _ = cli(capsys, "stats", "--db", str(db_path), "--nl")
    assert json.loads(out) == figures | {"file_bytes": json.loads(out)["file_bytes"]}

    code, out, _ = cli(capsys, "check", "--db", str(db_path))
    assert code == 0
    assert out.startswith("ok:")
    code, out, _ = cli(capsys, "check", "--db", str(db_path), "--json")
    assert (code, json.loads(out)) == (0, {"ok": True, "problems": []})


@pytest.mark.parametrize(
    "damage",
    [
        "UPDATE runs SET feature_branch = X'414243' WHERE id = ?",  # read, but not text
        "UPDATE runs SET started_at = 'yesterday' WHERE id = ?",  # not read at all
    ],
)
def test_resumable_lists_the_other_runs_beside_a_damaged_one(
    capsys: pytest.CaptureFixture[str], db_path: Path, filled: list[Run], damage: str
) -> None:
    # A blob another tool wrote blanked the whole listing, healthy runs and all.
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute(damage, (filled[1].id,))
    code, out, err = cli(capsys, "resumable", "--db", str(db_path), "--json")
    assert code == 1
    assert [row["id"] for row in json.loads(out)] == [filled[2].id]
    assert err.startswith("daemon-db: left out: ")
    assert f"damaged runs row {filled[1].id!r}" in err


def test_check_reports_what_is_wrong_and_where(
    capsys: pytest.CaptureFixture[str], db_path: Path, filled: list[Run]
) -> None:
    # Damage the file behind the library's back: a gap in a log, a second
    # active run on one branch (the rule's index dropped first), an orphan unit.
    with sqlite3.connect(db_path) as conn:
        conn.execute("DELETE FROM events WHERE sequence = 2")
        conn.execute("DROP INDEX runs_one_active")
        conn.execute("UPDATE runs SET feature_branch = 'feature/b' WHERE id = ?", (filled[2].id,))
        conn.execute(
            "INSERT INTO units (id, run_id, unit_id, status) VALUES ('x', 'ghost', 'u', 'pending')"
        )
    conn.close()
    code, out, _ = cli(capsys, "check", "--db", str(db_path))
    assert code == 1
    assert f"sequences: run {filled[1].id} has 5 events up to sequence 6" in out
    assert "one active run: 2 active runs on 'feature/b'" in out
    assert "foreign key: units" in out
    assert "schema: index runs_one_active is missing" in out
    code, out, _ = cli(capsys, "check", "--db", str(db_path), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["ok"] is False
    assert len(report["problems"]) == 4
    code, out, _ = cli(capsys, "check", "--db", str(db_path), "--csv")
    assert code == 1
    assert len(list(csv.DictReader(io.StringIO(out)))) == 4


# Streaming: a page at a time, each written before the next is read


def test_runs_stream_a_page_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
    db_path: Path,
    filled: list[Run],
) -> None:
    monkeypatch.setattr(daemon_db._operations, "ITER_PAGE_SIZE", 2)
    log: list[str] = []
    owned_page = owner_queries.owned_page

    def page(conn: sqlite3.Connection, **kwargs: Any) -> Any:
        log.append(f"page of {kwargs['limit']}")  # on the database's thread
        return owned_page(conn, **kwargs)

    monkeypatch.setattr(owner_queries, "owned_page", page)
    monkeypatch.setattr(sys, "stdout", LoggedOutput(log))
    assert main(["runs", "--db", str(db_path), "--json"]) == 0
    out = sys.stdout.getvalue()  # type: ignore[attr-defined]
    assert [row["id"] for row in json.loads(out)] == [run.id for run in filled]
    # The first page was written before the second was asked for.
    assert log.index("page of 2", 1) > log.index("write")
    assert log.count("page of 2") == 2


def test_events_stream_a_page_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
    db_path: Path,
    filled: list[Run],
) -> None:
    monkeypatch.setattr(daemon_db._operations, "ITER_PAGE_SIZE", 2)
    log: list[str] = []
    list_page = event_queries.list_page

    def page(conn: sqlite3.Connection, **kwargs: Any) -> Any:
        log.append("page")  # on the database's thread
        return list_page(conn, **kwargs)

    monkeypatch.setattr(event_queries, "list_page", page)
    monkeypatch.setattr(sys, "stdout", LoggedOutput(log))
    assert main(["events", filled[1].id, "--db", str(db_path), "--nl"]) == 0
    out = sys.stdout.getvalue()  # type: ignore[attr-defined]
    assert [json.loads(line)["sequence"] for line in out.splitlines()] == list(range(1, 7))
    assert log.count("page") == 4  # 2 + 2 + 2, then one that finds no more
    assert log.index("page", 1) > log.index("write")


class LoggedOutput(io.StringIO):
    """stdout, noting each write in a log shared with the reads."""

    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def write(self, text: str) -> int:
        self.log.append("write")
        return super().write(text)


# Ids as people type them


def test_a_run_id_as_people_type_it(db_path: Path, filled: list[Run]) -> None:
    running = filled[1].id
    # (A prefix works too, but ids made in one millisecond share all but their end.)
    pasted = (f" {running}\n", f"{running[-6:]} ")  # with what a copy took beside it
    for typed in (running, running[-6:], running[-6:].lower(), running.lower(), *pasted):
        done = daemon_db_command("show", typed, "--db", str(db_path), "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["run"]["id"] == running
        done = daemon_db_command("events", typed, "--db", str(db_path), "--nl", "--since", "5")
        assert [json.loads(line)["sequence"] for line in done.stdout.splitlines()] == [6]


async def _many_like(path: Path) -> list[Run]:
    async with DB.open(path) as db:
        return [
            await db.create_run(new_run(id=f"01SAME{n:02}XYZ", status="completed"))
            for n in range(8)
        ]


def test_an_ambiguous_or_unknown_run_id(db_path: Path) -> None:
    made = asyncio.run(_many_like(db_path))
    done = daemon_db_command("show", "xyz", "--db", str(db_path))
    line = assert_one_line_error(done, 1, "RUN_ID 'xyz' is ambiguous: 8 runs match")
    assert ", ".join(run.id for run in made[:5]) + " and 3 more" in line
    done = daemon_db_command("show", "SHB24V", "--db", str(db_path))
    assert_one_line_error(done, 1, "RUN_ID 'SHB24V'", "no run has this id", str(db_path))
    done = daemon_db_command("events", "nope", "--db", str(db_path))
    assert_one_line_error(done, 1, "RUN_ID 'nope'")


# The table of issue 11: each mistake is one line and a non-zero exit


@pytest.mark.parametrize(
    ("args", "status", "named"),
    [
        (
            ["prune", "--older-than", "99999999999d"],
            2,
            ["--older-than", "'99999999999d'", "too long"],
        ),
        (["prune", "--older-than", "1000000d"], 2, ["--older-than", "at most 36500d"]),
        (
            ["prune", "--older-than", "soon"],
            2,
            ["--older-than", "not a duration", "w, d, h, m or s"],
        ),
        (["prune", "--older-than", "\u0661d"], 2, ["--older-than", "not a duration"]),
        (["prune", "--older-than", "1d12h1d"], 2, ["--older-than", "'1d12h1d' gives d twice"]),
        (["events", "X", "--since", "\u0661"], 2, ["--since", "not a whole number"]),
        (["events", "X", "--since", "-5"], 2, ["--since", "'-5'"]),
        (["events", "X", "--since", "99999999999999999999"], 2, ["--since", "too large"]),
        (["runs", "--limit", "99999999999999999999"], 2, ["--limit", "too large"]),
        (["runs", "--limit", "0"], 2, ["--limit", "less than 1"]),
        (["runs", "--limit", "-1"], 2, ["--limit", "'-1'"]),
        (["runs", "--limit", "ten"], 2, ["--limit", "not a whole number"]),
        (["show", "X", "--events", "-1"], 2, ["--events", "'-1'"]),
        (["show", "X", "--events", "99999999999999999999"], 2, ["--events", "too large"]),
        (["runs", "--after", "garbage"], 1, ["--after 'garbage'", "no run"]),
        (["runs", "--status", "paused"], 2, ["--status", "'paused'"]),
        (["runs", "--json", "--csv"], 2, ["--csv", "--json"]),
        (["events", "X", "--follow", "--limit", "3"], 2, ["--limit", "--follow"]),
        (["show"], 2, ["RUN_ID"]),
        (["show", " "], 2, ["RUN_ID", "empty"]),
        (["nonsense"], 2, ["'nonsense'", "choose from"]),
    ],
)
def test_a_mistake_is_one_line_and_a_non_zero_exit(
    db_path: Path, filled: list[Run], args: list[str], status: int, named: list[str]
) -> None:
    done = daemon_db_command(*args, DAEMON_DB=str(db_path))
    assert_one_line_error(done, status, *named)
    assert "Traceback" not in done.stderr


def test_asyncpg_s_reconnect_tracebacks_stay_off_the_terminal(
    db_path: Path, filled: list[Run]
) -> None:
    # asyncpg's pool logs one, with its traceback, each time it fails to
    # reconnect: a follower across a server restart printed pages of them.
    script = """
import logging, sys
from daemon_db import _cli, _commands
real = _commands.stats
async def stats(args):
    try:
        raise ConnectionRefusedError(111, "Connect call failed")
    except OSError:
        logging.getLogger("asyncpg.pool").warning("Failed to restore the pool", exc_info=True)
    return await real(args)
_commands.stats = stats
sys.exit(_cli.main(["stats", "--db", sys.argv[1]]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script, str(db_path)],
        capture_output=True,
        text=True,
        env=environment(),
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert "runs" in done.stdout


def test_no_command_prints_the_commands(db_path: Path) -> None:
    done = daemon_db_command(DAEMON_DB=str(db_path))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr.startswith("usage: daemon-db")
    for command in ("runs", "resumable", "prune"):
        assert re.search(rf"^ +{command}\b", done.stderr, re.MULTILINE)


def test_json_carries_payload_and_config_as_data(db_path: Path, filled: list[Run]) -> None:
    done = daemon_db_command("events", filled[1].id, "--json", "--db", str(db_path))
    assert (done.returncode, done.stderr) == (0, "")
    assert [event["payload"] for event in json.loads(done.stdout)][:2] == [{"n": 0}, {"n": 1}]
    done = daemon_db_command("runs", "--nl", "--db", str(db_path))
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout.splitlines()[1])["config"] == {"k": [1]}


def test_json_out_is_json_whatever_another_tool_stored(db_path: Path, filled: list[Run]) -> None:
    # 1e999 is in JSON's grammar, and json.loads makes it infinity, which went
    # out as "Infinity": not JSON, and strict parsers refused the whole listing.
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE runs SET config_json = '{\"a\": 1e999}' WHERE id = ?", (filled[1].id,))
        conn.execute("UPDATE events SET payload_json = '[1e999]' WHERE run_id = ?", (filled[1].id,))
    for args in (["runs", "--json"], ["events", filled[1].id, "--json"]):
        done = daemon_db_command(*args, "--db", str(db_path))
        assert (done.returncode, done.stderr) == (0, "")
        assert "Infinity" not in done.stdout
        json.loads(done.stdout, parse_constant=lambda constant: pytest.fail(constant))
    assert json.loads(done.stdout)[0]["payload_json"] == "[1e999]"  # the text it is


@pytest.mark.parametrize(
    "args",
    [["check", "--json"], ["stats", "--nl"], ["show", "{run}", "--nl"], ["stats", "--csv"]],
)
def test_reports_take_the_machine_forms(db_path: Path, filled: list[Run], args: list[str]) -> None:
    args = [arg.format(run=filled[1].id) for arg in args]
    done = daemon_db_command(*args, "--db", str(db_path))
    assert (done.returncode, done.stderr) == (0, "")
    if args[-1] == "--csv":
        assert len(list(csv.DictReader(io.StringIO(done.stdout)))) == 1
    else:
        assert len(done.stdout.splitlines()) == (1 if args[-1] == "--nl" else 4)
        assert json.loads(done.stdout)


def test_csv_of_an_empty_listing_has_its_header(db_path: Path) -> None:
    asyncio.run(_empty(db_path))
    done = daemon_db_command("runs", "--csv", "--db", str(db_path))
    assert (done.returncode, done.stderr) == (0, "")
    header = [*dataclass_fields(Run), "owner", "owner_alive", "attempts"]
    assert done.stdout == ",".join(header) + "\n"


def dataclass_fields(record: type) -> list[str]:
    return [field.name for field in dataclasses.fields(record)]


def test_a_folder_an_empty_file_and_a_missing_one(tmp_path: Path) -> None:
    done = daemon_db_command("runs", "--db", str(tmp_path))
    assert_one_line_error(done, 1, f"{tmp_path} is a folder, not a database file")
    empty = tmp_path / "empty.db"
    empty.touch()
    for command in (["runs"], ["stats"], ["check"], ["show", "X"], ["backup", "copy.db"]):
        done = daemon_db_command(*command, "--db", str(empty))
        assert_one_line_error(done, 1, str(empty), f"daemon-db migrate --db {empty}")
    missing = tmp_path / "missing.db"
    for command in (["runs"], ["migrate"], ["prune", "--older-than", "1d"]):
        done = daemon_db_command(*command, "--db", str(missing))
        assert_one_line_error(done, 1, f"{missing}: no such database file")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["empty.db"]
    done = daemon_db_command("migrate", "--db", str(empty))
    assert done.returncode == 0, done.stderr
    assert daemon_db_command("runs", "--db", str(empty)).stdout == "(none)\n"


def test_no_database_given() -> None:
    done = daemon_db_command("runs")
    assert_one_line_error(done, 2, "--db PATH or set DAEMON_DB")


def test_global_options_before_or_after_the_command(db_path: Path, filled: list[Run]) -> None:
    for args in (
        ["--db", str(db_path), "runs", "--json"],
        ["runs", "--db", str(db_path), "--json"],
        ["--db", "elsewhere.db", "runs", "--db", str(db_path), "--json"],  # the last one counts
        ["--no-color", "runs", "--json", "--db", str(db_path)],
    ):
        done = daemon_db_command(*args)
        assert done.returncode == 0, (args, done.stderr)
        assert len(json.loads(done.stdout)) == 3
    done = daemon_db_command("runs", "--json", DAEMON_DB=str(db_path))
    assert len(json.loads(done.stdout)) == 3
    done = daemon_db_command("--db", "other.db", "runs", DAEMON_DB=str(db_path))
    assert_one_line_error(done, 1, "other.db: no such database file")


def test_version() -> None:
    done = daemon_db_command("--version")
    assert (done.returncode, done.stdout) == (0, f"daemon-db {daemon_db.__version__}\n")


def test_console_script_and_module(db_path: Path, filled: list[Run]) -> None:
    script = Path(sys.executable).parent / "daemon-db"
    for command in ([str(script)], [sys.executable, "-m", "daemon_db"]):
        done = subprocess.run(
            [*command, "runs", "--db", str(db_path), "--json"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert len(json.loads(done.stdout)) == 3
        helped = subprocess.run([*command, "backup", "--help"], capture_output=True, text=True)
        assert helped.returncode == 0
        assert "--force" in helped.stdout


def test_main_returns_the_status_of_help_and_of_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli(capsys, "runs", "--help")[0] == 0
    code, _, err = cli(capsys, "runs", "--status", "paused")
    assert code == 2
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["runs", "--branch", ""], "a branch"),
        (["runs", "--repo", " "], "a repository path"),
        (["events", "RUN", "--type", ""], "an event type"),
        (["events", "RUN", "--unit", ""], "a unit id"),
        (["backup", ""], "DEST"),
        (["fail", "RUN", "--reason", ""], "a reason"),
        (["cancel", "RUN", "--reason", "  "], "a reason"),
    ],
)
def test_blank_text_on_the_command_line_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
    db_path: Path,
    filled: list[Run],
    args: list[str],
    named: str,
) -> None:
    before = dump(db_path)
    code, out, err = cli(capsys, *args, "--db", str(db_path))
    assert code == 2
    assert f"{named} cannot be empty" in err
    assert out == ""
    assert dump(db_path) == before


# Stored text is data: it never reaches the terminal raw


async def _hostile(path: Path) -> Run:
    async with DB.open(path) as db:
        run = await db.create_run(
            new_run(
                feature_branch="feature/\x1b]0;owned\x07\x1b[2J",
                status="failed",
                error="line one\nline two\tand a tab \x1b[31mred",
            )
        )
        await db.create_run(new_run(feature_branch="feature/漢字ブランチ😀", status="failed"))
        await db.create_unit(UnitRecord(run_id=run.id, unit_id="u\x1b[1m", error="\r\x1b[K"))
        await db.append_event(run.id, "tick\x1b[5m", unit_id="\x9b2J", payload={"s": "\x1b"})
        return run


def test_stored_control_characters_are_shown_escaped(db_path: Path) -> None:
    run = asyncio.run(_hostile(db_path))
    for args in (["runs"], ["show", run.id], ["events", run.id], ["resumable"], ["check"]):
        done = daemon_db_command(*args, "--db", str(db_path))
        assert done.returncode == 0, done.stderr
        for raw in ("\x1b", "\x9b", "\x07", "\r", "\t"):
            assert raw not in done.stdout, (args, raw)
    done = daemon_db_command("runs", "--db", str(db_path))
    lines = done.stdout.splitlines()
    assert "feature/\\x1b]0;owned\\x07\\x1b[2J" in lines[2]
    assert "line one\\nline two\\tand a tab \\x1b[31mred" in lines[2]
    assert len(lines) == 4  # the newline in the error did not make a row
    assert width(lines[2][: lines[2].index("failed")]) == width(
        lines[0][: lines[0].index("status")]
    )
    repo = [width(line[: line.index("/srv/repo")]) for line in lines[2:]]
    assert repo[0] == repo[1]  # wide characters measured in columns
    follow = daemon_db_command("events", run.id, "--follow", "--db", str(db_path))
    assert "tick\\x1b[5m  unit \\x9b2J" in follow.stdout
    assert "\x1b" not in follow.stdout
    # Machine forms keep the data exact, and JSON escapes it.
    done = daemon_db_command("runs", "--db", str(db_path), "--json")
    assert "\x1b" not in done.stdout
    assert json.loads(done.stdout)[0]["feature_branch"] == "feature/\x1b]0;owned\x07\x1b[2J"


@pytest.mark.parametrize("command", [["release"], ["cancel"], ["fail", "--reason", "r"]])
def test_the_writing_commands_show_an_id_another_tool_wrote_escaped(
    db_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    # They printed it raw: a title change and colours on the operator's terminal.
    async def made() -> Run:
        async with DB.open(db_path) as db:
            return await db.create_run(new_run(status="running"))

    run = asyncio.run(made())
    hostile = "ZZ\x1b]0;owned\x07\x1b[31;1m"
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE runs SET id = ? WHERE id = ?", (hostile, run.id))
    for _ in range(2):  # done, then nothing to do
        code, out, err = cli(capsys, command[0], "ZZ", *command[1:], "--db", str(db_path))
        assert code == 0, err
        assert "ZZ\\x1b]0;owned\\x07\\x1b[31;1m" in out
        assert "\x1b" not in out + err
        assert "\x07" not in out + err


def test_an_error_message_is_one_line_whatever_it_quotes(tmp_path: Path) -> None:
    odd = tmp_path / "two\nlines\x1b[2J.db"
    done = daemon_db_command("runs", "--db", str(odd))
    line = assert_one_line_error(done, 1, "two\\nlines\\x1b[2J.db: no such database file")
    assert "\x1b" not in line


# Terminals: colour and progress for people, never in piped output


def on_terminal(
    *args: str, stdout: bool = False, stderr: bool = False, **env: str
) -> tuple[int, str, str]:
    """Run the command with stdout and/or stderr on a pseudo-terminal; return what each got."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "daemon_db", *args],
        stdin=subprocess.DEVNULL,
        stdout=terminal if stdout else subprocess.PIPE,
        stderr=terminal if stderr else subprocess.PIPE,
        env=environment(**env),
    )
    os.close(terminal)
    screen: list[bytes] = []

    def read_screen() -> None:
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the other side closed (EIO)
                return
            if not chunk:
                return
            screen.append(chunk)

    reader = threading.Thread(target=read_screen)
    reader.start()
    piped, piped_err = process.communicate(timeout=60)
    reader.join(timeout=60)
    os.close(controller)
    shown = b"".join(screen).decode().replace("\r\n", "\n")
    out = shown if stdout else piped.decode()
    err = shown if stderr else piped_err.decode()
    return process.returncode, out, err


def test_a_prune_on_a_terminal_names_the_runs_it_passed_over(db_path: Path) -> None:
    # On a terminal the prune had gone in twenty parts, each reading again
    # every damaged run ahead of it; now it is one prune, which says how far it got.
    runs = asyncio.run(_history(db_path, finished=6))
    damaged = runs["old failed"].id
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE runs SET started_at = 'yesterday' WHERE id = ?", (damaged,))
    code, out, err = on_terminal("prune", "--older-than", "30d", "--db", str(db_path), stderr=True)
    assert code == 1
    assert "100% 5/5 runs" in err
    assert "removed 5 finished run(s)" in err
    assert f"left: {db_path}: damaged runs row {damaged!r}: started_at='yesterday'" in err
    assert len(out.splitlines()) == 2 + 5
    assert damaged not in out


def test_colour_on_a_terminal_only_and_never_when_refused(db_path: Path, filled: list[Run]) -> None:
    code, out, _ = on_terminal("runs", "--db", str(db_path), stdout=True)
    assert code == 0
    assert "\x1b[32mcompleted\x1b[0m" in out
    assert "\x1b[33mrunning\x1b[0m" in out
    plain = daemon_db_command("runs", "--db", str(db_path)).stdout
    assert "\x1b" not in plain
    # Colour moves no column: without its codes, every row lines up with the header.
    lines = [SGR.sub("", line) for line in out.splitlines()]
    for name in ("status", "feature_branch", "repo_path"):
        column = lines[0].index(name)
        assert all(line[column - 2 : column] == "  " for line in lines[2:])
        assert all(line[column] != " " for line in lines[2:])
    assert "\x1b" not in on_terminal("runs", "--db", str(db_path), stdout=True, NO_COLOR="1")[1]
    assert "\x1b" not in on_terminal("runs", "--no-color", "--db", str(db_path), stdout=True)[1]
    assert "\x1b" not in on_terminal("--no-color", "runs", "--db", str(db_path), stdout=True)[1]


def test_progress_on_a_terminal_for_each_long_operation(
    db_path: Path, tmp_path: Path, filled: list[Run]
) -> None:
    copy = tmp_path / "copy.db"
    code, out, err = on_terminal("backup", str(copy), "--db", str(db_path), stderr=True)
    assert code == 0
    assert re.search(r"copying \[#+\] 100% (\d+)/\1 pages", err)
    assert err.endswith("\r\x1b[K")  # the line erased: the terminal is left clean
    assert out == f"copied {db_path} to {copy} ({dump_pages(copy)} pages)\n"

    code, out, err = on_terminal("check", "--db", str(db_path), stderr=True)
    assert code == 0
    assert f"checking {db_path} |" in err
    assert out.startswith("ok:")

    asyncio.run(_history(db_path, finished=45))
    code, out, err = on_terminal("prune", "--older-than", "30d", "--db", str(db_path), stderr=True)
    assert code == 0
    assert "pruning [###" in err
    assert "100% 45/45 runs" in err
    assert "removed 45 finished run(s)" in err
    assert len(out.splitlines()) == 2 + 45

    make_version_1(copy, fresh=True)
    code, out, err = on_terminal("migrate", "--db", str(copy), stderr=True)
    assert code == 0
    assert f"migrating {copy} |" in err
    assert f"from schema version 1 to {SCHEMA_VERSION}" in out


_KILLED_MID_WRITE = """
import os, signal, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA cache_size = 1")  # the changed pages spill into the file
conn.execute("BEGIN")
conn.execute("UPDATE runs SET error = hex(randomblob(3000))")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_migrate_rolls_back_what_a_killed_writer_left_in_a_journal(
    db_path: Path, tmp_path: Path, filled: list[Run]
) -> None:
    # A backup copy has a rollback journal; a tool killed writing to it leaves a
    # hot journal, which no read-only open gets past: every command, migrate
    # included, said only "attempt to write a readonly database" (adversary pass).
    copy = tmp_path / "copy.db"
    assert daemon_db_command("backup", str(copy), "--db", str(db_path)).returncode == 0
    killed = subprocess.run([sys.executable, "-c", _KILLED_MID_WRITE, str(copy)], check=False)
    assert killed.returncode == -signal.SIGKILL
    assert Path(f"{copy}-journal").stat().st_size > 0
    done = daemon_db_command("runs", "--db", str(copy))
    assert_one_line_error(done, 1, "its -journal holds a write a killed process left half done")
    assert "daemon-db migrate" in done.stderr
    done = daemon_db_command("migrate", "--db", str(copy))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == (
        f"rolled back the half-done write a killed process left in {copy}\n"
        f"{copy} is at the current schema version: nothing to do\n"
    )
    done = daemon_db_command("runs", "--db", str(copy), "--json")
    assert [run["error"] for run in json.loads(done.stdout)] == [None, None, None]
    assert daemon_db_command("check", "--db", str(copy)).stdout.startswith("ok:")
    # A file that is not ours is left as it is, its journal too: rolling back
    # made a text file beside a stray journal a corrupt database (adversary pass).
    other = tmp_path / "other.db"
    assert daemon_db_command("backup", str(other), "--db", str(db_path)).returncode == 0
    subprocess.run([sys.executable, "-c", _KILLED_MID_WRITE, str(other)], check=False)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    Path(f"{other}-journal").rename(f"{notes}-journal")
    done = daemon_db_command("migrate", "--db", str(notes))
    assert done.returncode == 1
    assert notes.read_text() == "not a database\n"
    assert Path(f"{notes}-journal").exists()
    # A file of an older version too: rolled back, then migrated, and each said.
    old = tmp_path / "old.db"
    make_version_1(old)
    with contextlib.closing(sqlite3.connect(old)) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
    subprocess.run([sys.executable, "-c", _KILLED_MID_WRITE, str(old)], check=False)
    done = daemon_db_command("migrate", "--db", str(old))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == (
        f"rolled back the half-done write a killed process left in {old}\n"
        f"migrated {old} from schema version 1 to {SCHEMA_VERSION}\n"
    )


def dump_pages(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.close()
    return int(pages)


def test_no_progress_in_piped_output(db_path: Path, tmp_path: Path, filled: list[Run]) -> None:
    done = daemon_db_command("backup", str(tmp_path / "copy.db"), "--db", str(db_path))
    assert (done.returncode, done.stderr) == (0, "")
    done = daemon_db_command("check", "--db", str(db_path))
    assert (done.returncode, done.stderr) == (0, "")
    done = daemon_db_command("migrate", "--db", str(db_path))
    assert (done.returncode, done.stderr) == (0, "")
    done = daemon_db_command("prune", "--older-than", "1d", "--db", str(db_path))
    assert done.returncode == 0
    assert done.stderr.startswith("daemon-db: removed 0 finished run(s)")
    assert "\r" not in done.stderr


# Ctrl-C and closed pipes


def _interruptible() -> None:
    # A process started in the background by a shell without job control (CI
    # may run the suite so) ignores SIGINT, and so would its children: Ctrl-C
    # must reach this one as it reaches a command typed at a terminal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130_quietly(db_path: Path, filled: list[Run]) -> None:
    follower = subprocess.Popen(
        [sys.executable, "-m", "daemon_db", "events", filled[1].id, "--follow", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(DAEMON_DB=str(db_path)),
        preexec_fn=_interruptible,
    )
    assert follower.stdout is not None
    assert follower.stderr is not None
    assert follower.stdout.readline() == "[\n"  # it is following
    follower.send_signal(signal.SIGINT)
    assert follower.wait(timeout=30) == 130  # its few lines fit in the pipe meanwhile
    out = follower.stdout.read()
    err = follower.stderr.read()
    assert err == _nobody_runs(filled[1])  # and no traceback
    assert len(json.loads("[\n" + out)) == 6  # what it printed is whole JSON
    follower.stdout.close()
    follower.stderr.close()


async def _many_events(path: Path, count: int) -> Run:
    async with DB.open(path) as db:
        run = await db.create_run(new_run(status="completed"))
        async with db.transaction() as tx:
            for n in range(count):
                await tx.append_event(run.id, "tick", payload={"n": n, "pad": "x" * 50})
        return run


def test_a_listing_cut_by_ctrl_c_says_so(db_path: Path) -> None:
    # Cut, the JSON array is still closed, so that the rows before stand; written
    # to a file, it would pass for the whole listing without a word on stderr.
    run = asyncio.run(_many_events(db_path, 3000))
    lister = subprocess.Popen(
        [sys.executable, "-m", "daemon_db", "events", run.id, "--json", "--db", str(db_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_interruptible,
    )
    assert lister.stdout is not None
    assert lister.stdout.readline() == "[\n"  # the rest waits for the pipe to drain
    lister.send_signal(signal.SIGINT)
    assert lister.stderr is not None
    out, err = lister.stdout.read(), lister.stderr.read()  # what readline buffered too
    assert lister.wait(timeout=60) == 130
    lister.stdout.close()
    lister.stderr.close()
    written = json.loads("[\n" + out)
    assert 0 < len(written) < 3000
    assert err == f"daemon-db: interrupted: the listing stops after {len(written):,} rows\n"


def test_a_closed_pipe_ends_the_command_quietly(db_path: Path) -> None:
    run = asyncio.run(_many_events(db_path, 3000))
    reader = subprocess.Popen(
        [sys.executable, "-m", "daemon_db", "events", run.id, "--nl", "--db", str(db_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(),
    )
    assert reader.stdout is not None
    assert reader.stderr is not None
    assert json.loads(reader.stdout.readline())["sequence"] == 1
    reader.stdout.close()  # as `| head -1` does
    assert reader.wait(timeout=30) == 0
    assert reader.stderr.read() == b""
    reader.stderr.close()


# Following, backups and pruning


async def test_follow_tails_another_process_and_ends_with_the_run(
    db_path: Path, filled: list[Run]
) -> None:
    running = filled[1]
    follower = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon_db",
        "events",
        running.id[-6:],
        "--follow",
        "--nl",
        "--type",
        "child",
        "--type",
        "run_completed",
        "--db",
        str(db_path),
        stdout=asyncio.subprocess.PIPE,
    )
    writer = await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), str(db_path), running.id, "20", "2"
    )
    assert await writer.wait() == 0
    async with DB.open(db_path) as db:
        await db.complete_run(running.id, RunStatus.COMPLETED)
    async with asyncio.timeout(30):
        out, _ = await follower.communicate()
    assert follower.returncode == 0
    events = [json.loads(line) for line in out.decode().splitlines()]
    assert [e["sequence"] for e in events] == list(range(7, 28))
    assert events[-1]["event_type"] == "run_completed"
    assert events[-1]["payload"] == {"status": "completed", "error": None}


async def test_follow_says_so_when_its_run_is_deleted_underneath(
    db_path: Path, filled: list[Run]
) -> None:
    running = filled[1]
    follower = await _follow(db_path, running.id)
    assert follower.stdout is not None
    await follower.stdout.readline()  # it follows
    async with DB.open(db_path) as db:
        assert await db.delete_run(running.id)
    async with asyncio.timeout(30):
        _, err = await follower.communicate()
    assert follower.returncode == 1
    assert err.decode() == (
        _nobody_runs(running)
        + f"daemon-db: error: run {running.id} was deleted (or pruned) while followed\n"
    )


async def _follow(db_path: Path, run_id: str) -> asyncio.subprocess.Process:
    """``daemon-db events RUN_ID --follow --nl``, its stdout and stderr piped."""
    return await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "daemon_db", "events", run_id, "--follow", "--nl"),
        *("--db", str(db_path)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def _nobody_runs(run: Run) -> str:
    """What following says of an active run nobody holds (``filled``'s closed and let go)."""
    return (
        f"daemon-db: run {run.id} is {run.status.value}, but no daemon holds it:"
        " following until one resumes and ends it\n"
    )


async def test_follow_says_nothing_of_a_run_that_a_live_daemon_holds(db_path: Path) -> None:
    async with DB.open(db_path) as db:
        run = await db.create_run(new_run(status="running"))
        await db.append_event(run.id, "started")
        follower = await _follow(db_path, run.id)
        assert follower.stdout is not None
        assert json.loads(await follower.stdout.readline())["event_type"] == "started"
        await db.complete_run(run.id, RunStatus.COMPLETED)
        async with asyncio.timeout(30):
            out, err = await follower.communicate()
    assert follower.returncode == 0
    assert json.loads(out)["event_type"] == "run_completed"
    assert err == b""


async def _holder(db_path: Path, lease: float = 30.0) -> tuple[asyncio.subprocess.Process, str]:
    """A daemon process, ``daemon-a``, holding a running run with one event: it and the run's id."""
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import asyncio, sys\n"
        "from daemon_db import DB, Run\n"
        "async def hold():\n"
        "    db = await DB.open(sys.argv[1], owner='daemon-a', lease=float(sys.argv[2]))\n"
        "    run = Run(feature_branch='feature/x', repo_path='/srv/repo', target_branch='main',\n"
        "              tasks_dir='tasks', parallelism=1, status='running')\n"
        "    run = await db.create_run(run)\n"
        "    await db.append_event(run.id, 'started')\n"
        "    print(run.id, flush=True)\n"
        "    await asyncio.sleep(3600)\n"
        "asyncio.run(hold())\n",
        str(db_path),
        str(lease),
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdout is not None
    run_id = (await holder.stdout.readline()).decode().strip()
    assert run_id, "the holder did not start"
    return holder, run_id


async def test_follow_says_when_the_holder_dies_and_when_another_daemon_resumes_the_run(
    db_path: Path,
) -> None:
    holder, run_id = await _holder(db_path)
    follower = await _follow(db_path, run_id)
    assert follower.stdout is not None
    assert follower.stderr is not None
    try:
        assert json.loads(await follower.stdout.readline())["event_type"] == "started"
        holder.kill()  # kill -9: the run stays held by a process that is gone
        await holder.wait()
        async with asyncio.timeout(30):
            stopped = await follower.stderr.readline()
        assert stopped.decode() == (
            f"daemon-db: run {run_id} is running, but its holder daemon-a stopped:"
            " following until one resumes and ends it\n"
        )
        async with DB.open(db_path, owner="daemon-b") as db:
            [claimed] = (await db.claim_resumable_runs()).resumed
            async with asyncio.timeout(30):
                resumed = await follower.stderr.readline()
            assert resumed.decode() == f"daemon-db: run {run_id} was resumed by daemon-b\n"
        # A clean close hands the run back, and the next process, under the same
        # name, takes it at once: another holder, though nothing counted an attempt.
        async with DB.open(db_path, owner="daemon-b") as db:
            [claimed] = (await db.claim_resumable_runs()).resumed
            async with asyncio.timeout(30):
                notes = [(await follower.stderr.readline()).decode()]
                if "any more" in notes[0]:  # the look came between the close and the claim
                    notes.append((await follower.stderr.readline()).decode())
            assert notes[-1] == f"daemon-db: run {run_id} was resumed by daemon-b\n"
            assert await db.release_run(run_id) == "daemon-b"  # an operator hands it back
            async with asyncio.timeout(30):
                released = await follower.stderr.readline()
            assert released.decode() == (
                f"daemon-db: run {run_id} is running, but no daemon holds it any more:"
                " following until one resumes and ends it\n"
            )
            await db.complete_run(claimed.run.id, RunStatus.COMPLETED)
            async with asyncio.timeout(30):
                out, err = await follower.communicate()
    finally:
        for process in (holder, follower):
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert follower.returncode == 0
    assert json.loads(out)["event_type"] == "run_completed"
    assert err == b""  # a finished run is let go: no note that nobody holds it


async def test_follow_says_a_stalled_holder_is_running_again_and_never_fails_for_its_notes(
    db_path: Path,
) -> None:
    holder, run_id = await _holder(db_path, lease=1.0)
    follower = await _follow(db_path, run_id)
    # A follower started with stderr closed has nowhere to say it: it follows all the same.
    quiet = await asyncio.create_subprocess_exec(
        *("sh", "-c", 'exec "$@" 2>&-', "sh", sys.executable, "-m", "daemon_db", "events"),
        *(run_id, "--follow", "--nl", "--db", str(db_path)),
        stdout=asyncio.subprocess.PIPE,
    )
    assert follower.stdout is not None
    assert follower.stderr is not None
    assert quiet.stdout is not None
    try:
        assert json.loads(await follower.stdout.readline())["event_type"] == "started"
        assert json.loads(await quiet.stdout.readline())["event_type"] == "started"
        holder.send_signal(signal.SIGSTOP)  # a hung daemon: its lease runs out
        async with asyncio.timeout(30):
            stopped = await follower.stderr.readline()
        assert stopped.decode() == (
            f"daemon-db: run {run_id} is running, but its holder daemon-a stopped:"
            " following until one resumes and ends it\n"
        )
        holder.send_signal(signal.SIGCONT)  # it renews its lease: nobody took the run
        async with asyncio.timeout(30):
            again = await follower.stderr.readline()
        assert again.decode() == f"daemon-db: run {run_id}: its holder daemon-a is running again\n"
        holder.kill()
        await holder.wait()
        async with asyncio.timeout(30):
            assert b"daemon-a stopped" in await follower.stderr.readline()
        await asyncio.sleep(2 * HOLDER_CHECKED_EVERY)  # the quiet one has seen it too
        async with DB.open(db_path, owner="daemon-b") as db:
            await db.complete_run(run_id, RunStatus.COMPLETED)
        async with asyncio.timeout(30):
            await follower.communicate()
            out, _ = await quiet.communicate()
    finally:
        for process in (holder, follower, quiet):
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert (follower.returncode, quiet.returncode) == (0, 0)
    assert json.loads(out.splitlines()[-1])["event_type"] == "run_completed"


async def test_follow_goes_on_when_stderr_cannot_take_its_note(
    db_path: Path, filled: list[Run]
) -> None:
    running = filled[1]  # nobody holds it: the follow notes so first, on a full disk here
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        follower = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "daemon_db", "events", running.id, "--follow", "--nl"),
            *("--db", str(db_path)),
            stdout=asyncio.subprocess.PIPE,
            stderr=full,
        )
    finally:
        os.close(full)
    assert follower.stdout is not None
    try:
        assert json.loads(await follower.stdout.readline())["sequence"] == 1
        async with DB.open(db_path) as db:
            await db.complete_run(running.id, RunStatus.COMPLETED)
        async with asyncio.timeout(30):
            out, _ = await follower.communicate()
    finally:
        if follower.returncode is None:
            follower.kill()
            await follower.wait()
    assert follower.returncode == 0
    assert json.loads(out.splitlines()[-1])["event_type"] == "run_completed"


async def test_backup_while_a_writer_is_busy_is_a_consistent_copy(
    db_path: Path, tmp_path: Path, filled: list[Run]
) -> None:
    running = filled[1]
    copy = tmp_path / "copy.db"
    writer = await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), str(db_path), running.id, "40000", "4"
    )
    async with DB.open(db_path, readonly=True) as watch:
        while await watch.get_next_sequence(running.id) < 500:  # the writer is busy appending
            await asyncio.sleep(0.01)
    backup = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon_db", "backup", str(copy), "--db", str(db_path)
    )
    assert await backup.wait() == 0
    still_writing = writer.returncode is None
    assert await writer.wait() == 0
    assert still_writing, "the writer finished before the backup: nothing was tested"

    assert os.stat(copy).st_mode & 0o777 == 0o600
    async with DB.open(copy, readonly=True) as snapshot, DB.open(db_path, readonly=True) as now:
        assert await snapshot.check() == []
        assert await snapshot.list_runs() == await now.list_runs()
        copied = await snapshot.list_events(running.id)
        assert 500 <= len(copied) < 40006
        # A snapshot: exactly the log as it was at one moment.
        assert copied == (await now.list_events(running.id))[: len(copied)]


def test_backup_refuses_to_overwrite_unless_forced(
    capsys: pytest.CaptureFixture[str], db_path: Path, tmp_path: Path, filled: list[Run]
) -> None:
    copy = tmp_path / "copy.db"
    copy.write_text("precious")
    code, _, err = cli(capsys, "backup", str(copy), "--db", str(db_path))
    assert code == 1
    assert "--force" in err
    assert copy.read_text() == "precious"
    assert cli(capsys, "backup", str(copy), "--db", str(db_path), "--force")[0] == 0
    assert dump(copy) == dump(db_path)
    folder = tmp_path / "backups"
    folder.mkdir()
    for force in ([], ["--force"]):  # never "pass --force" for what --force refuses
        code, _, err = cli(capsys, "backup", str(folder), "--db", str(db_path), *force)
        assert code == 1
        assert "is a folder: give the path of the file to write" in err
    assert list(folder.iterdir()) == []


async def _history(path: Path, finished: int = 0) -> dict[str, Run]:
    old = datetime.now(UTC) - timedelta(days=40)
    async with DB.open(path) as db:
        runs = {
            "old done": await db.create_run(
                new_run(status="completed", started_at=old, completed_at=old)
            ),
            "old failed": await db.create_run(
                new_run(status="failed", started_at=old, completed_at=old + timedelta(hours=1))
            ),
            "recent done": await db.create_run(new_run(status="completed")),
            "old but running": await db.create_run(new_run(status="running", started_at=old)),
            "old but pending": await db.create_run(new_run()),
        }
        for n in range(finished - 2):
            moment = old + timedelta(minutes=n)
            await db.create_run(new_run(status="cancelled", completed_at=moment))
        await db.create_unit(UnitRecord(run_id=runs["old done"].id, unit_id="u"))
        for _ in range(3):
            await db.append_event(runs["old done"].id, "tick")
            await db.append_event(runs["old but running"].id, "tick")
        return runs


def test_prune_removes_old_finished_runs_and_never_active_ones(
    capsys: pytest.CaptureFixture[str], db_path: Path
) -> None:
    runs = asyncio.run(_history(db_path))
    before = dump(db_path)
    code, out, err = cli(capsys, "prune", "--older-than", "30d", "--dry-run", "--db", str(db_path))
    assert code == 0
    assert "would remove 2 finished run(s)" in err
    assert runs["old done"].id in out
    assert dump(db_path) == before

    code, out, err = cli(capsys, "prune", "--older-than", "4w", "--json", "--db", str(db_path))
    assert code == 0
    assert [row["id"] for row in json.loads(out)] == [runs["old done"].id, runs["old failed"].id]
    assert "removed 2 finished run(s)" in err
    code, out, _ = cli(capsys, "runs", "--json", "--db", str(db_path))
    left = {row["id"] for row in json.loads(out)}
    assert left == {runs[name].id for name in ("recent done", "old but running", "old but pending")}

    async def logs() -> tuple[int, int]:
        async with DB.open(db_path, readonly=True) as db:
            gone = len(await db.list_events(runs["old done"].id))
            kept = len(await db.list_events(runs["old but running"].id))
            assert await db.check() == []
            return gone, kept

    assert asyncio.run(logs()) == (0, 3)


def test_a_status_is_taken_in_any_case(
    capsys: pytest.CaptureFixture[str], db_path: Path, filled: list[Run]
) -> None:
    _, lower, _ = cli(capsys, "runs", "--status", "running", "--json", "--db", str(db_path))
    code, upper, _ = cli(capsys, "runs", "--status", "RUNNING", "--json", "--db", str(db_path))
    assert code == 0
    assert upper == lower
    assert json.loads(upper)
    code, _, err = cli(capsys, "runs", "--status", "Runing", "--db", str(db_path))
    assert code == 2
    assert "'Runing' is not a run status (pending, running," in err  # as typed


def test_vacuum_gives_back_what_a_prune_freed(
    capsys: pytest.CaptureFixture[str], db_path: Path
) -> None:
    run = asyncio.run(_many_events(db_path, 3000))

    async def prune() -> None:
        async with DB.open(db_path) as db:
            assert [gone.id for gone in await db.prune_runs(datetime.now(UTC))] == [run.id]

    asyncio.run(prune())
    before = db_path.stat().st_size
    code, out, err = cli(capsys, "vacuum", "--db", str(db_path))
    assert (code, out) == (0, "")
    shrank = int(
        re.fullmatch(r"daemon-db: vacuum: the file shrank by ([0-9,]+) bytes\n", err)[1].replace(
            ",", ""
        )
    )  # type: ignore[index]
    assert shrank > 200_000
    assert db_path.stat().st_size == before - shrank


def test_wrong_schema_versions(
    capsys: pytest.CaptureFixture[str], db_path: Path, filled: list[Run]
) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    for command in (["runs"], ["migrate"]):
        code, _, err = cli(capsys, *command, "--db", str(db_path))
        assert code == 1
        assert "newer release" in err

    make_version_1(db_path, fresh=True)
    code, _, err = cli(capsys, "runs", "--db", str(db_path))
    assert code == 1
    assert f"schema version 1 and needs migrating to {SCHEMA_VERSION}" in err
    assert f"daemon-db migrate --db {db_path}" in err
    code, out, _ = cli(capsys, "migrate", "--db", str(db_path))
    assert code == 0
    assert f"from schema version 1 to {SCHEMA_VERSION}" in out
    code, out, _ = cli(capsys, "migrate", "--db", str(db_path))
    assert "nothing to do" in out
    assert cli(capsys, "runs", "--db", str(db_path))[0] == 0


# Shell completion


def test_shell_completion_scripts(tmp_path: Path) -> None:
    for shell in ("bash", "zsh", "tcsh", "fish"):
        done = daemon_db_command("completion", shell)
        assert done.returncode == 0, done.stderr
        assert "prune" in done.stdout
    script = tmp_path / "daemon-db.bash"
    script.write_text(daemon_db_command("completion", "bash").stdout)

    def complete(*words: str) -> list[str]:
        line = " ".join(["daemon-db", *words])
        program = (
            f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words)};"
            f" COMP_LINE='{line}'; COMP_POINT={len(line)}; _shtab_daemon_db;"
            ' printf "%s\\n" "${COMPREPLY[@]}"'
        )
        done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
        return done.stdout.split()

    assert complete("ru") == ["runs"]
    assert complete("runs", "--st") == ["--status"]
    assert complete("runs", "--status", "fa") == ["failed"]
    assert "--older-than" in complete("prune", "--")


def test_stored_events_match_the_streamed_ones(
    capsys: pytest.CaptureFixture[str], db_path: Path
) -> None:
    run = asyncio.run(_many_events(db_path, 2500))  # three pages of the store's listings

    async def stored() -> list[EventRecord]:
        async with DB.open(db_path, readonly=True) as db:
            return await db.list_events(run.id)

    _, out, _ = cli(capsys, "events", run.id, "--db", str(db_path), "--json")
    streamed = json.loads(out)
    assert [event["sequence"] for event in streamed] == [e.sequence for e in asyncio.run(stored())]


# Owners, and the operators' writes


def test_runs_show_and_resumable_say_who_holds_each_run(
    capsys: pytest.CaptureFixture[str], db_path: Path
) -> None:
    async def held() -> Run:
        async with DB.open(db_path, owner="daemon-a", lease=600) as db:
            run = await db.create_run(new_run(status="running"))
            await db.claim_resumable_runs()
            with sqlite3.connect(db_path) as conn:  # it dies: its lease runs out
                conn.execute("UPDATE owners SET lease_until = '2000-01-01T00:00:00.000000Z'")
            db._release = _nothing  # type: ignore[method-assign]
            return run

    run = asyncio.run(held())
    _, out, _ = cli(capsys, "runs", "--db", str(db_path), "--json")
    [row] = json.loads(out)
    assert (row["id"], row["owner"], row["owner_alive"], row["attempts"]) == (
        run.id,
        "daemon-a",
        False,
        0,
    )
    _, out, _ = cli(capsys, "runs", "--db", str(db_path), "--no-color")
    assert "daemon-a (dead)" in out
    _, out, _ = cli(capsys, "show", run.id[-6:], "--db", str(db_path), "--no-color")
    assert re.search(r"^owner +daemon-a \(dead\)$", out, re.MULTILINE), out
    _, out, _ = cli(capsys, "resumable", "--db", str(db_path), "--nl")
    assert json.loads(out)["owner"] == "daemon-a"
    assert json.loads(out)["owner_alive"] is False
    # Following it says at once why its events may never come.
    follower = subprocess.Popen(
        [sys.executable, "-m", "daemon_db", "events", run.id, "--follow", "--db", str(db_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    assert follower.stderr is not None
    try:
        assert select.select([follower.stderr], [], [], 30)[0], "no note"
        assert follower.stderr.readline() == (
            f"daemon-db: run {run.id} is running, but its holder daemon-a is not running:"
            " following until one resumes and ends it\n"
        )
    finally:
        follower.kill()
        follower.wait()
        follower.stderr.close()


async def _nothing(**_: object) -> None:
    """A close that does not hand runs back: what a process that died did."""


def test_release_fail_and_cancel_write_and_say_what_changed(db_path: Path) -> None:
    async def made() -> list[Run]:
        async with DB.open(db_path, owner="stuck") as db:
            runs = [await db.create_run(new_run(status="running")) for _ in range(4)]
            db._release = _nothing  # type: ignore[method-assign]
            return runs

    released, failed, cancelled, orphan = asyncio.run(made())
    # Their holder is this process, alive: each write goes behind its back, and says so.
    behind_its_back = "daemon-db: stuck held it and is alive; it is not told"
    done = daemon_db_command("release", released.id[-6:].lower(), "--db", str(db_path))
    assert done.returncode == 0
    assert done.stdout == f"released run {released.id} (held by stuck): the next claim takes it\n"
    assert done.stderr.startswith(behind_its_back)
    assert "as will the daemon that claims it" in done.stderr
    again = daemon_db_command("release", released.id, "--db", str(db_path))
    assert again.stdout == f"run {released.id} was held by nobody: nothing changed\n"
    assert again.stderr == ""

    done = daemon_db_command("fail", failed.id, "--reason", "branch deleted", "--db", str(db_path))
    assert (done.returncode, done.stdout) == (0, f"failed run {failed.id} (it was running)\n")
    assert done.stderr.startswith(behind_its_back)
    assert "next compare-and-set on the run" in done.stderr
    done = daemon_db_command("fail", failed.id, "--reason", "again", "--db", str(db_path))
    assert (done.stdout, done.stderr) == (
        f"run {failed.id} was already failed: nothing changed\n",
        "",
    )
    refused = daemon_db_command("cancel", failed.id, "--db", str(db_path))
    assert_one_line_error(refused, 1, failed.id, "already failed", "nothing changed")
    done = daemon_db_command("cancel", cancelled.id, "--db", str(db_path))
    assert (done.returncode, done.stdout) == (0, f"cancelled run {cancelled.id} (it was running)\n")
    assert done.stderr.startswith(behind_its_back)

    async def stored() -> tuple[list[Run], list[list[str]]]:
        async with DB.open(db_path, readonly=True) as db:
            runs = [await db.get_run(run.id) for run in (released, failed, cancelled)]
            logs = [[e.event_type for e in await db.list_events(r.id)] for r in runs if r]
            return [r for r in runs if r], logs

    runs, logs = asyncio.run(stored())
    assert [run.status for run in runs] == [
        RunStatus.RUNNING,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
    ]
    assert runs[1].error == "branch deleted"
    assert logs == [[], ["run_completed"], ["run_completed"]]  # one each, whatever was retried
    # A holder whose lease ran out is dead: nothing goes behind its back.
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("UPDATE owners SET lease_until = '2000-01-01T00:00:00.000000Z'")
    for command in (["release"], ["cancel"]):
        done = daemon_db_command(*command, orphan.id, "--db", str(db_path))
        assert (done.returncode, done.stderr) == (0, "")
    missing = daemon_db_command("fail", "ZZZZZZ", "--reason", "x", "--db", str(db_path))
    assert_one_line_error(missing, 1, "ZZZZZZ")
    no_reason = daemon_db_command("fail", failed.id, "--db", str(db_path))
    assert_one_line_error(no_reason, 2, "--reason")
    # A finished run an earlier release left held: no claim will take it.
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute(
            "UPDATE runs SET owner_id = (SELECT id FROM owners WHERE name = 'stuck') WHERE id = ?",
            (failed.id,),
        )
    done = daemon_db_command("release", failed.id, "--db", str(db_path))
    said = f"released run {failed.id} (held by stuck): it is failed, so no claim takes it\n"
    assert done.stdout == said
    # A status another tool wrote: claims report the run, and do not take it.
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute("PRAGMA ignore_check_constraints = ON")
        conn.execute(
            "UPDATE runs SET status = 'RUNNING',"
            " owner_id = (SELECT id FROM owners WHERE name = 'stuck') WHERE id = ?",
            (cancelled.id,),
        )
    done = daemon_db_command("release", cancelled.id, "--db", str(db_path))
    assert (done.returncode, done.stdout) == (
        0,
        f"released run {cancelled.id} (held by stuck): its row is damaged, so no claim takes it"
        " until it is mended (see check)\n",
    )


# PostgreSQL: --db takes a URL


async def test_commands_take_a_postgresql_url(
    capsys: pytest.CaptureFixture[str], postgres_url: str
) -> None:
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run(status="running"))
        await db.append_event(run.id, "tick", payload={"n": 1})
    code, out, _ = await asyncio.to_thread(cli, capsys, "runs", "--db", postgres_url, "--json")
    assert code == 0
    assert [row["id"] for row in json.loads(out)] == [run.id]
    code, out, _ = await asyncio.to_thread(cli, capsys, "events", run.id[-6:], "--db", postgres_url)
    assert code == 0
    assert "tick" in out
    code, out, _ = await asyncio.to_thread(cli, capsys, "stats", "--db", postgres_url)
    assert code == 0
    assert "database size" in out
    assert "WAL" not in out
    code, out, _ = await asyncio.to_thread(cli, capsys, "check", "--db", postgres_url)
    assert code == 0


def test_backup_of_a_postgresql_database_says_to_use_pg_dump(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = "postgresql://daemon:secret@db.invalid:5432/registry"
    code, out, err = cli(capsys, "backup", str(tmp_path / "copy"), "--db", url)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert "pg_dump" in err
    assert "secret" not in err
    assert not (tmp_path / "copy").exists()
