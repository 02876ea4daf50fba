"""The example daemon, killed part-way and started again, finishes every run (as in make demo)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from daemon_db import DB, RunStatus, UnitStatus

DAEMON = Path(__file__).parent.parent / "examples" / "daemon.py"


def _start(db_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DAEMON), "--db", str(db_path), "--pace", "0.05", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_the_example_daemon_resumes_after_being_killed(db_path: Path) -> None:
    first = _start(db_path, "--fresh", "--crash-after", "0.2")
    assert first.returncode == -signal.SIGKILL, first.stderr
    async with DB.open(db_path, readonly=True) as inspector:
        interrupted = await inspector.resumable_runs()
    assert interrupted, "the crash came after every run had finished: nothing was tested"

    second = _start(db_path)
    assert second.returncode == 0, second.stderr
    assert f"resuming {len(interrupted)} interrupted run(s)" in second.stdout

    async with DB.open(db_path, readonly=True) as inspector:
        runs = await inspector.list_runs()
        assert len(runs) == 3
        assert await inspector.resumable_runs() == []
        for run in runs:
            assert run.status is RunStatus.COMPLETED
            units = await inspector.list_units_by_run(run.id)
            assert [u.status for u in units] == [UnitStatus.COMPLETED] * 4
            events = await inspector.list_events(run.id)
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            assert [e.event_type for e in events].count("run_completed") == 1
            assert events[-1].event_type == "run_completed"
