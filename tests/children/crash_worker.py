"""A daemon-like worker for the kill -9 test: ``crash_worker.py PATH SEED``.

Works the store from several tasks until it is killed, printing one line per
write, only after the call acknowledging it has returned:

    run <run_id> <units>        a run created with its units and first event
    event <run_id> <sequence> <event_id>
    unit <unit_record_id> <status>
    complete <run_id> <status>
    claim <run_id> <attempt>    a run taken over at start-up
"""

import asyncio
import random
import sys

from daemon_db import DB, Run, RunStatus, UnitRecord, UnitStatus, new_run_id

UNITS = 3
NEXT = {UnitStatus.PENDING: UnitStatus.RUNNING, UnitStatus.RUNNING: UnitStatus.COMPLETED}


def ack(*parts: object) -> None:
    print(*parts, flush=True)


async def main(path: str, seed: int) -> None:
    rng = random.Random(seed)
    async with DB.open(path) as db:
        # Like a daemon at start-up: carry on with what the last process left.
        runs: dict[str, list[str]] = {}
        units: dict[str, UnitStatus] = {}
        for item in (await db.claim_resumable_runs(max_attempts=None)).resumed:
            runs[item.run.id] = [unit.id for unit in item.units]
            units.update({unit.id: unit.status for unit in item.units})
            ack("claim", item.run.id, item.attempt)

        async def create() -> None:
            async with db.transaction() as tx:
                run = await tx.create_run(
                    Run(
                        feature_branch=f"feature/{new_run_id()}",
                        repo_path="/srv/app",
                        target_branch="main",
                        tasks_dir="tasks",
                        parallelism=2,
                        status=RunStatus.RUNNING,
                    )
                )
                made = [
                    await tx.create_unit(UnitRecord(run_id=run.id, unit_id=f"u{n}"))
                    for n in range(UNITS)
                ]
                await tx.append_event(run.id, "run_created")
            runs[run.id] = [unit.id for unit in made]
            units.update({unit.id: unit.status for unit in made})
            ack("run", run.id, UNITS)

        async def append() -> None:
            run_id = rng.choice(list(runs))
            event = await db.append_event(run_id, "tick", unit_id="u0", payload={"r": rng.random()})
            ack("event", run_id, event.sequence, event.id)

        async def advance() -> None:
            waiting = [unit_id for unit_id, status in units.items() if status in NEXT]
            if not waiting:
                return
            unit_id = rng.choice(waiting)
            units[unit_id] = status = NEXT[units[unit_id]]  # claimed before the await
            await db.update_unit_status(unit_id, status)
            ack("unit", unit_id, status)

        async def complete() -> None:
            run_id = rng.choice(list(runs))
            del runs[run_id]
            status = rng.choice([RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED])
            await db.complete_run(run_id, status)
            ack("complete", run_id, status)

        async def worker() -> None:
            while True:
                if len(runs) < 3:
                    await create()
                    continue
                operation = rng.choices([create, append, advance, complete], [1, 12, 4, 1])[0]
                await operation()

        await asyncio.gather(*(worker() for _ in range(4)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
