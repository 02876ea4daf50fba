"""One of several processes sharing a file: ``contender.py writer|reader PATH SECONDS SEED``.

A writer appends to the shared runs and creates, works and completes runs of
its own; a reader opens the file read-only and checks that what it sees is
never half a transaction. Either prints one JSON line at the end:
``{"operations": n, "appended": n, "errors": [...]}``; an error is any exception
that reached this caller, or anything seen half-applied.
"""

import asyncio
import json
import random
import sys
import time

from daemon_db import DB, Run, RunStatus, UnitRecord, UnitStatus, new_run_id

UNITS = 3
FINISHED = {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}


async def write(db: DB, rng: random.Random, until: float, tally: dict[str, object]) -> None:
    shared = [run.id for run in await db.list_runs(status=RunStatus.RUNNING, repo_path="/shared")]
    mine: list[str] = []
    while time.monotonic() < until:
        choice = rng.random()
        if choice < 0.1 or not mine:
            async with db.transaction() as tx:
                run = await tx.create_run(
                    Run(
                        feature_branch=f"feature/{new_run_id()}",
                        repo_path="/own",
                        target_branch="main",
                        tasks_dir="tasks",
                        parallelism=1,
                    )
                )
                for n in range(UNITS):
                    await tx.create_unit(UnitRecord(run_id=run.id, unit_id=f"u{n}"))
                await tx.append_event(run.id, "run_created")
            mine.append(run.id)
        elif choice < 0.15:
            await db.complete_run(mine.pop(rng.randrange(len(mine))), RunStatus.COMPLETED)
        elif choice < 0.3:
            run_id = rng.choice(mine)
            unit = f"{run_id}_u{rng.randrange(UNITS)}"
            async with db.transaction() as tx:
                await tx.update_unit_status(unit, UnitStatus.RUNNING)
                await tx.append_event(run_id, "unit_started", unit_id=unit)
        else:
            await db.append_event(rng.choice(shared), "tick", payload={"r": rng.random()})
            tally["appended"] = int(tally["appended"]) + 1  # type: ignore[call-overload]
        tally["operations"] = int(tally["operations"]) + 1  # type: ignore[call-overload]


async def read(db: DB, rng: random.Random, until: float, tally: dict[str, object]) -> None:
    errors: list[str] = tally["errors"]  # type: ignore[assignment]
    while time.monotonic() < until:
        snapshot = await db.resumable_runs()
        for item in snapshot:
            if len(item.units) != UNITS:
                errors.append(f"run {item.run.id} seen with {len(item.units)} units")
        runs = await db.list_runs()
        if runs:
            run = rng.choice(runs)
            events = await db.list_events(run.id)
            if [e.sequence for e in events] != list(range(1, len(events) + 1)):
                errors.append(f"run {run.id}: sequences with a gap")
            # The status was read first: if it was finished, its event must be there.
            if run.status in FINISHED and "run_completed" not in {e.event_type for e in events}:
                errors.append(f"run {run.id} finished without its run_completed event")
            if any(e.event_type == "run_completed" for e in events):
                again = await db.get_run(run.id)
                if again is None or again.status not in FINISHED:
                    errors.append(f"run {run.id} has run_completed but is not finished")
        tally["operations"] = int(tally["operations"]) + 3  # type: ignore[call-overload]


async def main(role: str, path: str, seconds: float, seed: int) -> None:
    tally: dict[str, object] = {"operations": 0, "appended": 0, "errors": []}
    until = time.monotonic() + seconds
    rng = random.Random(seed)
    try:
        async with DB.open(path, readonly=role == "reader") as db:
            await (write if role == "writer" else read)(db, rng, until, tally)
    except Exception as exc:
        tally["errors"].append(f"{type(exc).__name__}: {exc}")  # type: ignore[attr-defined]
    print(json.dumps(tally), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])))
