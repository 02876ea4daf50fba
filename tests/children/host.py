"""A daemon on another host, for tests/reliability/test_hosts.py: ``host.py ROLE URL ...``.

hold URL LEASE N       create N running runs with this lease, print "ready", then wait
                       to be killed: an owner that dies holding them
append URL RUN_ID N    append N events to the run, one at a time, as fast as it can
follow URL RUN_ID      print "ready", then a line per event followed:
                       "<sequence> <monotonic receive time - payload's send time>"
"""

import asyncio
import os
import sys
import time

from daemon_db import DB, Run, RunStatus


async def hold(url: str, lease: str, count: str) -> None:
    async with DB.open(url, lease=float(lease)) as db:
        for n in range(int(count)):
            await db.create_run(
                Run(
                    feature_branch=f"feature/{os.getpid()}-{n}",
                    repo_path="/srv/app",
                    target_branch="main",
                    tasks_dir="tasks",
                    parallelism=1,
                    status=RunStatus.RUNNING,
                )
            )
        print("ready", flush=True)
        await asyncio.Event().wait()


async def append(url: str, run_id: str, count: str) -> None:
    async with DB.open(url) as db:
        for i in range(int(count)):
            await db.append_event(run_id, "child", payload={"pid": os.getpid(), "i": i})


async def follow(url: str, run_id: str) -> None:
    async with DB.open(url, readonly=True) as db:
        await db.get_run(run_id)  # connected and warm before the first event
        print("ready", flush=True)
        async for event in db.follow_events(run_id):
            # CLOCK_MONOTONIC is one clock for every process of this machine.
            sent = (event.payload or {}).get("sent")
            lag = time.monotonic() - sent if isinstance(sent, float) else 0.0
            print(event.sequence, f"{lag:.6f}", flush=True)


if __name__ == "__main__":
    role, *arguments = sys.argv[1:]
    asyncio.run({"hold": hold, "append": append, "follow": follow}[role](*arguments))
