"""Many processes on one file: no error reaches a caller, no reader sees half a transaction."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from daemon_db import DB, Run, RunStatus, UnitRecord
from tests.helpers import report

CHILD = Path(__file__).parent.parent / "children" / "contender.py"
WRITERS, READERS, SECONDS = 4, 2, 3.0


async def test_writers_and_readers_in_many_processes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with DB.open(path) as db:
        shared = []
        for n in range(3):
            run = await db.create_run(
                Run(
                    feature_branch=f"feature/shared-{n}",
                    repo_path="/shared",
                    target_branch="main",
                    tasks_dir="tasks",
                    parallelism=1,
                    status=RunStatus.RUNNING,
                )
            )
            for u in range(3):
                await db.create_unit(UnitRecord(run_id=run.id, unit_id=f"u{u}"))
            shared.append(run.id)

    roles = ["writer"] * WRITERS + ["reader"] * READERS
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            role,
            str(path),
            str(SECONDS),
            str(seed),
            stdout=asyncio.subprocess.PIPE,
        )
        for seed, role in enumerate(roles)
    ]
    outputs = [await child.communicate() for child in children]
    assert [child.returncode for child in children] == [0] * len(roles)
    tallies = [json.loads(stdout) for stdout, _ in outputs]
    errors = [error for tally in tallies for error in tally["errors"]]
    assert errors == []

    async with DB.open(path) as db:
        appended = 0
        for run in await db.list_runs():
            events = await db.list_events(run.id)
            assert [e.sequence for e in events] == list(range(1, len(events) + 1))
            if run.id in shared:
                appended += len(events)
    assert appended == sum(tally["appended"] for tally in tallies)
    operations = sum(tally["operations"] for tally in tallies)
    assert operations > 0
    report(
        f"{WRITERS} writer and {READERS} read-only processes for {SECONDS:.0f} s on one file:"
        f" {operations:,} operations, {appended:,} appends to shared runs all present and"
        f" gap-free, {len(errors)} errors surfaced, 0 half-applied transactions seen"
    )
