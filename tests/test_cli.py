"""The daemon-db command line: output forms, exit codes, errors, follow, backup, prune."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from daemon_db import DB, Run, RunStatus, UnitRecord
from daemon_db._cli import main
from daemon_db._sqlite.schema import SCHEMA_VERSION
from tests.helpers import dump, new_run

CHILD = Path(__file__).parent / "children" / "append_events.py"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def _fill(path: Path) -> list[Run]:
    async with DB.open(path) as db:
        made = [
            await db.create_run(new_run(feature_branch="feature/a", status="completed")),
            await db.create_run(new_run(feature_branch="feature/b", status="running")),
            await db.create_run(new_run(feature_branch="feature/c")),
        ]
        await db.create_unit(UnitRecord(run_id=made[1].id, unit_id="u1", status="running"))
        await db.create_unit(UnitRecord(run_id=made[1].id, unit_id="u2", status="completed"))
        for n in range(5):
            await db.append_event(made[1].id, "tick", unit_id="u1", payload={"n": n})
        return made


@pytest.fixture
def filled(db_path: Path) -> list[Run]:
    return asyncio.run(_fill(db_path))


def test_runs_in_every_form(
    capsys: pytest.CaptureFixture[str], db_path: Path, filled: list[Run]
) -> None:
    ids = [run.id for run in filled]
    code, out, err = cli(capsys, "runs", "--db", str(db_path))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["id", "status", "feature_branch", "repo_path"]
    assert [line.split()[0] for line in lines[2:]] == ids

    code, out, _ = cli(capsys, "runs", "--db", str(db_path), "--json")
    rows = json.loads(out)
    assert [row["id"] for row in rows] == ids
    assert rows[0]["status"] == "completed"
    assert rows[0]["config_json"] == "{}"

    code, out, _ = cli(capsys, "runs", "--db", str(db_path), "--nl")
    assert [json.loads(line)["id"] for line in out.splitlines()] == ids

    code, out, _ = cli(capsys, "runs", "--db", str(db_path), "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [row["id"] for row in rows] == ids
    assert rows[1]["status"] == "running"


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
    assert ids("--newest-first", "--limit", "1") == [c]


def test_show_a_run(capsys: pytest.CaptureFixture[str], db_path: Path, filled: list[Run]) -> None:
    running = filled[1]
    code, out, _ = cli(capsys, "show", running.id, "--db", str(db_path), "--events", "2")
    assert code == 0
    assert running.id in out
    assert "units: 2" in out
    assert "events: 5, the latest 2:" in out
    assert '{"n":4}' in out

    code, out, _ = cli(capsys, "show", running.id, "--db", str(db_path), "--json")
    shown = json.loads(out)
    assert shown["run"]["id"] == running.id
    assert [unit["unit_id"] for unit in shown["units"]] == ["u1", "u2"]
    assert shown["events"] == 5
    assert [event["sequence"] for event in shown["latest_events"]] == [1, 2, 3, 4, 5]

    code, _, err = cli(capsys, "show", "nope", "--db", str(db_path))
    assert code == 1
    assert "no run with id 'nope'" in err


def test_events_resumable_stats_check(
    capsys: pytest.CaptureFixture[str], db_path: Path, filled: list[Run]
) -> None:
    running = filled[1]
    code, out, _ = cli(capsys, "events", running.id, "--db", str(db_path), "--since", "3", "--nl")
    assert [json.loads(line)["sequence"] for line in out.splitlines()] == [4, 5]

    code, out, _ = cli(capsys, "resumable", "--db", str(db_path), "--json")
    rows = json.loads(out)
    assert [row["id"] for row in rows] == [filled[1].id, filled[2].id]
    assert rows[0]["units_completed"] == "1/2"
    assert rows[0]["units_running"] == "u1"
    assert rows[0]["next_sequence"] == 6

    code, out, _ = cli(capsys, "stats", "--db", str(db_path), "--json")
    figures = json.loads(out)
    assert figures["runs"] == {
        "pending": 1,
        "running": 1,
        "completed": 1,
        "failed": 0,
        "cancelled": 0,
    }
    assert figures["events"] == 5
    assert figures["schema_version"] == SCHEMA_VERSION
    assert figures["file_bytes"] > 0
    code, out, _ = cli(capsys, "stats", "--db", str(db_path))
    assert "events          5" in out

    code, out, _ = cli(capsys, "check", "--db", str(db_path))
    assert code == 0
    assert out.startswith("ok:")


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
    assert f"sequences: run {filled[1].id} has 4 events up to sequence 5" in out
    assert "one active run: 2 active runs on 'feature/b'" in out
    assert "foreign key: units" in out


def test_inspectors_never_create_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    for command in (["runs"], ["resumable"], ["stats"], ["check"], ["show", "x"], ["events", "x"]):
        code, out, err = cli(capsys, *command, "--db", str(missing))
        assert code == 1, command
        assert out == ""
        assert err.startswith("daemon-db: error:")
        assert str(missing) in err
        assert "Traceback" not in err
    for command in (["migrate"], ["prune", "--older-than", "1d"]):
        code, _, err = cli(capsys, *command, "--db", str(missing))
        assert code == 1
        assert "no such database file" in err
    assert list(tmp_path.iterdir()) == []


def test_no_database_given(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAEMON_DB", raising=False)
    code, _, err = cli(capsys, "runs")
    assert code == 2
    assert "--db PATH or set DAEMON_DB" in err


def test_the_database_from_the_environment(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    db_path: Path,
    filled: list[Run],
) -> None:
    monkeypatch.setenv("DAEMON_DB", str(db_path))
    code, out, _ = cli(capsys, "runs", "--json")
    assert code == 0
    assert len(json.loads(out)) == 3


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

    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA user_version = 1")
        conn.execute("DROP INDEX runs_by_status")
        conn.execute("DROP INDEX runs_by_branch")
        conn.execute("DROP INDEX runs_one_active")
    conn.close()
    code, _, err = cli(capsys, "runs", "--db", str(db_path))
    assert code == 1
    assert "needs migrating" in err
    code, out, _ = cli(capsys, "migrate", "--db", str(db_path))
    assert code == 0
    assert f"from schema version 1 to {SCHEMA_VERSION}" in out
    code, out, _ = cli(capsys, "migrate", "--db", str(db_path))
    assert "nothing to do" in out
    assert cli(capsys, "runs", "--db", str(db_path))[0] == 0


def test_usage_errors(capsys: pytest.CaptureFixture[str], db_path: Path, filled: list[Run]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["runs", "--status", "paused", "--db", str(db_path)])
    assert exited.value.code == 2
    with pytest.raises(SystemExit) as exited:
        main(["prune", "--older-than", "soon", "--db", str(db_path)])
    assert exited.value.code == 2
    assert "not a duration" in capsys.readouterr().err
    code, _, err = cli(capsys, "runs", "--limit", "-1", "--db", str(db_path))
    assert code == 1
    assert "limit=-1" in err


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


async def test_follow_tails_another_process_and_ends_with_the_run(
    db_path: Path, filled: list[Run]
) -> None:
    running = filled[1]
    follower = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "daemon_db",
        "events",
        running.id,
        "--follow",
        "--nl",
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
    assert [e["sequence"] for e in events] == list(range(1, 27))
    assert events[-1]["event_type"] == "run_completed"


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
        assert 500 <= len(copied) < 40005
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


async def _history(path: Path) -> dict[str, Run]:
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
