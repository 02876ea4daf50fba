"""The README's usage example runs as printed, and prints what the README shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_the_usage_example_runs(tmp_path: Path) -> None:
    text = README.read_text()
    example = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    printed = re.search(r"```text\n(.*?)```", text, re.DOTALL)
    assert example is not None
    assert printed is not None
    for _ in range(2):  # twice: the second start finds the first one's history
        result = subprocess.run(
            [sys.executable, "-W", "error", "-c", example.group(1)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == printed.group(1)  # what the README says it prints


_CRASH = """
import asyncio, os
from daemon_db import DB, Run, RunStatus, UnitRecord

async def main():
    db = await DB.open("state/daemon.db")
    run = await db.create_run(Run(feature_branch="feature/login", repo_path="/srv/app",
                                  target_branch="main", tasks_dir="tasks", parallelism=2))
    await db.create_unit(UnitRecord(run_id=run.id, unit_id="unit-1"))
    await db.update_run_status(run.id, RunStatus.RUNNING)
    print(run.id, flush=True)
    os._exit(9)  # killed part-way: the run stays running, held by a dead process

asyncio.run(main())
"""


def test_the_usage_example_finishes_what_a_killed_one_left(tmp_path: Path) -> None:
    # It printed the run it resumed, then made its own on the same branch,
    # which the resumed run still held: RunExistsError, start after start.
    example = re.search(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    printed = re.search(r"```text\n(.*?)```", README.read_text(), re.DOTALL)
    assert example is not None
    assert printed is not None
    (tmp_path / "state").mkdir()
    killed = subprocess.run(
        [sys.executable, "-c", _CRASH], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert killed.returncode == 9, killed.stderr
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", example.group(1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"resume {killed.stdout.strip()} (attempt 1)\n" + printed.group(1)
