"""A small orchestration daemon on daemon_db: it starts runs, works their units, and resumes.

Built on daemon_db's public API only. On start it claims what an earlier
process left unfinished (``claim_resumable_runs()``) and finishes that work:
units already completed are skipped, the others are worked again. On an empty
store it starts new runs. ``--crash-after SECONDS`` kills the process with
SIGKILL part-way, as a crash or ``kill -9`` would; examples/demo.py does it from
outside.

``--poison`` makes one more run whose resumption kills the daemon, as a bug
would: the daemon crash-loops on it until the store gives it up, after
``--max-attempts`` takeovers. (This daemon resumes its other runs first, so
that they finish meanwhile.)

    python examples/daemon.py --db demo.db --fresh --crash-after 1.0
    python examples/daemon.py --db demo.db
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import TextIO

from daemon_db import (
    DB,
    EventRecord,
    ResumableRun,
    Run,
    RunStatus,
    StatusConflictError,
    UnitRecord,
    UnitStatus,
)

STARTED = time.monotonic()
ACKS: list[TextIO] = []  # --acks FILE: one line per event the store acknowledged


def say(message: str) -> None:
    print(f"[{time.monotonic() - STARTED:5.2f}s pid {os.getpid()}] {message}", flush=True)


def acknowledged(*records: EventRecord) -> None:
    """Note events the store has acknowledged, so that a checker can look for them later."""
    for out in ACKS:
        out.writelines(f"{e.run_id} {e.sequence} {e.id}\n" for e in records)
        out.flush()


# --8<-- [start:work_unit]
async def work_unit(db: DB, run: Run, unit: UnitRecord, pace: float) -> None:
    """Do one unit's work, logging its progress as events."""
    await db.update_unit_status(unit.id, UnitStatus.RUNNING)
    await db.update_unit_branch(
        unit.id, f"daemon/{run.feature_branch}/{unit.unit_id}", f"/tmp/worktrees/{unit.id}"
    )
    acknowledged(await db.append_event(run.id, "unit_started", unit_id=unit.unit_id))
    for step in range(1, 4):
        await asyncio.sleep(pace * random.uniform(0.5, 1.5))
        progress = {"step": step}
        acknowledged(
            await db.append_event(run.id, "unit_progress", unit_id=unit.unit_id, payload=progress)
        )
    # The unit's status and its event commit together, or neither does.
    async with db.transaction() as tx:
        await tx.update_unit_status(unit.id, UnitStatus.COMPLETED)
        done = await tx.append_event(run.id, "unit_completed", unit_id=unit.unit_id)
    acknowledged(done)
    say(f"run {run.id[-6:]}: unit {unit.unit_id} completed")
    # --8<-- [end:work_unit]


# --8<-- [start:work_run]
async def work_run(db: DB, run: Run, units: list[UnitRecord], pace: float) -> None:
    """Work a run's unfinished units, ``parallelism`` at a time, then complete the run."""
    if run.status is RunStatus.PENDING:
        run = await db.update_run_status(run.id, RunStatus.RUNNING)
    slots = asyncio.Semaphore(run.parallelism or 2)  # None: this daemon's default

    async def in_slot(unit: UnitRecord) -> None:
        async with slots:
            await work_unit(db, run, unit, pace)

    todo = [unit for unit in units if unit.status is not UnitStatus.COMPLETED]
    await asyncio.gather(*(in_slot(unit) for unit in todo))
    try:
        await db.complete_run(run.id, RunStatus.COMPLETED)
    except StatusConflictError as exc:  # an operator finished it meanwhile: theirs stands
        say(f"run {run.id[-6:]} on {run.feature_branch}: already {exc.current}, left as it is")
        return
    say(f"run {run.id[-6:]} on {run.feature_branch}: completed")
    # --8<-- [end:work_run]


def poisoned(run: Run) -> bool:
    return bool(json.loads(run.config_json).get("poison"))


# --8<-- [start:start_runs]
async def start_runs(db: DB, runs: int, units: int, poison: bool) -> list[ResumableRun]:
    started = []
    for n in range(1, runs + 1 + poison):
        bad = n > runs
        async with db.transaction() as tx:
            run = await tx.create_run(
                Run(
                    feature_branch="feature/demo-poison" if bad else f"feature/demo-{n}",
                    repo_path="/srv/app",
                    target_branch="main",
                    tasks_dir="tasks",
                    parallelism=2,
                    daemon_version="example",
                    config_json=json.dumps({"poison": bad}),
                )
            )
            unit_records = [
                await tx.create_unit(UnitRecord(run_id=run.id, unit_id=f"unit-{u}"))
                for u in range(1, units + 1)
            ]
            created = await tx.append_event(run.id, "run_created", payload={"units": units})
        acknowledged(created)
        say(f"run {run.id[-6:]} on {run.feature_branch}: created with {units} units")
        started.append(ResumableRun(run=run, units=unit_records, next_sequence=2))
    return started
    # --8<-- [end:start_runs]


# --8<-- [start:main]
async def main(args: argparse.Namespace) -> None:
    if args.crash_after is not None:
        asyncio.get_running_loop().call_later(args.crash_after, crash)

    async with DB.open(args.db) as db:
        # Take what a dead daemon left: runs nobody alive holds. Another daemon on the
        # same file, at the same moment, takes the others; none is worked twice.
        claimed = await db.claim_resumable_runs(max_attempts=args.max_attempts)
        for run in claimed.abandoned:
            say(f"run {run.id[-6:]} on {run.feature_branch}: given up: {run.error}")
        work = claimed.resumed
        if work:
            say(f"resuming {len(work)} interrupted run(s)")
            for item in work:
                done = sum(unit.status is UnitStatus.COMPLETED for unit in item.units)
                redo = [f"{u.unit_id} ({u.status})" for u in item.units if u.status != "completed"]
                say(
                    f"run {item.run.id[-6:]}: attempt {item.attempt}, {done}/{len(item.units)}"
                    f" units done, next event #{item.next_sequence};"
                    f" to do: {', '.join(redo) or 'nothing'}"
                )
        elif not await db.list_runs(limit=1):
            say(f"a new store: starting {args.runs} runs" + (" and a poisoned one" * args.poison))
            work = await start_runs(db, args.runs, args.units, args.poison)
        fresh = [item for item in work if not (item.attempt and poisoned(item.run))]
        await asyncio.gather(*(work_run(db, item.run, item.units, args.pace) for item in fresh))
        for item in work:
            if item not in fresh:  # resuming it hits the bug: the daemon dies
                say(f"run {item.run.id[-6:]}: resuming it (attempt {item.attempt}) ...")
                crash()
        await report(db)
    # --8<-- [end:main]


async def report(db: DB) -> None:
    """Show what the store says now, and check that each event log has no gaps."""
    for run in await db.list_runs():
        units = await db.list_units_by_run(run.id)
        events = await db.list_events(run.id)
        gap_free = [e.sequence for e in events] == list(range(1, len(events) + 1))
        done = sum(unit.status is UnitStatus.COMPLETED for unit in units)
        say(
            f"run {run.id[-6:]} {run.status}: {done}/{len(units)} units completed,"
            f" {len(events)} events, sequences gap-free: {gap_free}"
        )


def crash() -> None:
    say("crashing now (SIGKILL): no cleanup, nothing closed")
    os.kill(os.getpid(), signal.SIGKILL)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="demo.db", help="database file (default: demo.db)")
    parser.add_argument("--fresh", action="store_true", help="delete the database first")
    parser.add_argument("--crash-after", type=float, metavar="SECONDS", help="SIGKILL self")
    parser.add_argument("--runs", type=int, default=3, help="runs to start (default: 3)")
    parser.add_argument("--units", type=int, default=4, help="units per run (default: 4)")
    parser.add_argument("--pace", type=float, default=0.2, help="seconds per unit step")
    parser.add_argument("--acks", metavar="FILE", help="append each acknowledged event here")
    parser.add_argument("--poison", action="store_true", help="one more run, that kills us")
    parser.add_argument(
        "--max-attempts", type=int, default=3, help="takeovers of a run before giving it up"
    )
    return parser.parse_args(argv)


def remove_database(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    if arguments.fresh:
        remove_database(arguments.db)
    if arguments.acks:
        ACKS.append(open(arguments.acks, "a"))  # noqa: SIM115 - open for the whole run
    asyncio.run(main(arguments))
