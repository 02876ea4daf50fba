"""The README's usage example runs as printed, and prints what the README shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def _example() -> tuple[str, str]:
    """The README's usage example, and what the README says it prints."""
    text = README.read_text()
    example = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    printed = re.search(r"```text\n(.*?)```", text, re.DOTALL)
    assert example is not None
    assert printed is not None
    return example.group(1), printed.group(1)


def _run(code: str, folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_usage_example_runs(tmp_path: Path) -> None:
    example, printed = _example()
    for _ in range(2):  # twice: the second start finds the first one's history
        result = _run(example, tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout == printed


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
    example, printed = _example()
    (tmp_path / "state").mkdir()
    killed = _run(_CRASH, tmp_path)
    assert killed.returncode == 9, killed.stderr
    result = _run(example, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"resume {killed.stdout.strip()} (attempt 1)\n" + printed
