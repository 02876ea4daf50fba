"""Daemon-like processes for tests/reliability/test_claims.py: ``claimer.py ROLE PATH ...``.

make PATH N            create N running runs (each with two units), print "ready",
                       then wait to be killed: an owner that dies holding them
claim PATH GO DONE     wait for the file GO, claim, print what was taken as JSON,
                       then stay alive (holding it) until the file DONE exists
hang PATH LEASE N      create N running runs, print their ids, then block the
                       event loop: alive, but its lease is never renewed
daemon PATH MAX        claim (max_attempts=MAX) and work: finish every healthy run,
                       then resume the poisoned one, which kills the process
seed PATH              the runs for ``daemon``: 3 healthy, 1 poisoned, held by an
                       owner that dies
"""

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from daemon_db import DB, Run, RunStatus, UnitRecord, UnitStatus


def _run(n: int, **fields: object) -> Run:
    defaults: dict[str, object] = {
        "feature_branch": f"feature/{os.getpid()}-{n}",
        "repo_path": "/srv/app",
        "target_branch": "main",
        "tasks_dir": "tasks",
        "parallelism": 2,
        "status": RunStatus.RUNNING,
    }
    return Run(**(defaults | fields))  # type: ignore[arg-type]


async def _make(db: DB, count: int, **fields: object) -> list[str]:
    made = []
    for n in range(count):
        run = await db.create_run(_run(n, **fields))
        for unit in ("u1", "u2"):
            await db.create_unit(UnitRecord(run_id=run.id, unit_id=unit))
        made.append(run.id)
    return made


async def make(path: str, count: str) -> None:
    async with DB.open(path) as db:
        await _make(db, int(count))
        print("ready", flush=True)
        await asyncio.Event().wait()


async def claim(path: str, go: str, done: str) -> None:
    async with DB.open(path, lease=600) as db:
        while not Path(go).exists():
            await asyncio.sleep(0.001)
        claimed = await db.claim_resumable_runs(max_attempts=None)
        taken = [[item.run.id, item.attempt] for item in claimed.resumed]
        print(json.dumps(taken), flush=True)
        while not Path(done).exists():
            await asyncio.sleep(0.01)


async def hang(path: str, lease: str, count: str) -> None:
    async with DB.open(path, owner="hung", lease=float(lease)) as db:
        print(json.dumps(await _make(db, int(count))), flush=True)
        time.sleep(3600)  # noqa: ASYNC251 -- the point: the loop hangs, nothing is renewed


async def daemon(path: str, max_attempts: str) -> None:
    async with DB.open(path, owner=f"daemon-{os.getpid()}") as db:
        claimed = await db.claim_resumable_runs(max_attempts=int(max_attempts))
        for run in claimed.abandoned:
            print("abandoned", run.id, flush=True)
        work = sorted(claimed.resumed, key=lambda item: "poison" in item.run.config_json)
        for item in work:
            if "poison" in item.run.config_json:
                print("resuming poison", item.run.id, item.attempt, flush=True)
                os._exit(70)  # what resuming it does to the daemon
            for unit in item.units:
                await db.update_unit_status(unit.id, UnitStatus.COMPLETED)
            await db.complete_run(item.run.id, RunStatus.COMPLETED)
            print("completed", item.run.id, item.attempt, flush=True)


async def seed(path: str) -> None:
    """3 healthy runs and a poisoned one, held by an owner that dies without closing."""
    async with DB.open(path, owner="first") as db:
        await _make(db, 3)
        await _make(db, 1, config_json='{"poison": true}', feature_branch="poison")
        print("ready", flush=True)
        os._exit(0)


if __name__ == "__main__":
    role, *arguments = sys.argv[1:]
    roles = {"make": make, "claim": claim, "hang": hang, "daemon": daemon, "seed": seed}
    asyncio.run(roles[role](*arguments))
