"""The crash-and-resume demo (make demo), in its quick mode: its own checks must pass.

The daemon is killed part-way, resumes, and crash-loops on a poisoned run until the
store gives that run up.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from daemon_db import DB, RunStatus
from tests.helpers import new_run

DEMO = Path(__file__).parent.parent / "examples" / "demo.py"
DAEMON = DEMO.with_name("daemon.py")


def test_the_demo_kills_the_daemon_and_it_resumes_losing_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(DEMO), "--quick", "--db", str(tmp_path / "demo.db")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "kill -9 the daemon" in out
    assert "resuming 4 interrupted run(s)" in out or "resuming 3 interrupted run(s)" in out
    assert "run_completed" in out  # the follower saw its run finish
    assert out.count("resuming it (attempt") == 3  # the poisoned run killed it three times
    assert "given up: abandoned" in out
    checks = [line for line in out.splitlines() if line.startswith(("ok ", "FAIL"))]
    assert len(checks) == 5
    assert all(line.startswith("ok ") for line in checks), checks


async def test_the_example_daemon_leaves_a_run_an_operator_finished_meanwhile(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("example_daemon", DAEMON)
    assert spec is not None
    assert spec.loader is not None
    daemon = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(daemon)
    async with DB.open(tmp_path / "state.db") as db:
        run = await db.create_run(new_run(status="running"))
        await db.complete_run(run.id, RunStatus.CANCELLED)  # `daemon-db cancel`, as it works
        await daemon.work_run(db, run, [], pace=0.0)
        stored = await db.get_run(run.id)
    assert stored is not None
    assert stored.status is RunStatus.CANCELLED
    assert "already cancelled, left as it is" in capsys.readouterr().out
