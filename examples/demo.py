"""Crash and resume, end to end: what ``make demo`` runs.

1. The example daemon (examples/daemon.py) starts three runs of four units each,
   and a fourth run that is poisoned: resuming it kills the daemon. It works
   units concurrently, logging progress events.
2. Part-way, this driver kills it with SIGKILL, then shows what the database
   says, with the daemon-db command line.
3. It starts the daemon again, as a supervisor would, each time it dies: the
   daemon claims what the dead one held (``claim_resumable_runs()``), finishes
   the three healthy runs, and dies resuming the poisoned one; after
   ``max_attempts`` takeovers the store gives that one up (``failed``, with a
   ``run_abandoned`` event) and the crash loop ends.
4. Throughout, a read-only follower in another process tails one run's events
   (``daemon-db events RUN --follow``).
5. The driver checks the result: the three runs completed exactly once, every
   unit of theirs completed, the poisoned run abandoned after its attempts,
   sequences gap-free, and every event acknowledged before a kill still there.

    python examples/demo.py [--db demo.db] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from daemon_db import DB, RunStatus, UnitStatus

HERE = Path(__file__).parent
DAEMON = HERE / "daemon.py"


def banner(text: str) -> None:
    print(f"\n== {text} ==", flush=True)


async def relay(stream: asyncio.StreamReader, prefix: str, lines: asyncio.Queue[str]) -> None:
    """Print a child's output as it comes, each line marked with who said it."""
    while line := await stream.readline():
        text = line.decode().rstrip()
        print(f"{prefix} {text}", flush=True)
        lines.put_nowait(text)


async def start(
    prefix: str, *command: str
) -> tuple[asyncio.subprocess.Process, asyncio.Task[None], asyncio.Queue[str]]:
    """Start a child process whose output is relayed; its lines also go to the queue."""
    child = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    assert child.stdout is not None
    lines: asyncio.Queue[str] = asyncio.Queue()
    return child, asyncio.create_task(relay(child.stdout, prefix, lines)), lines


async def cli(db: Path, *arguments: str) -> None:
    """Show what the database says, through the daemon-db command line."""
    print(f"$ daemon-db {' '.join(arguments)} --db {db}", flush=True)
    child, printing, _ = await start(
        "  ", sys.executable, "-m", "daemon_db", *arguments, "--db", str(db)
    )
    await child.wait()
    await printing


async def first_run(db: Path, said: asyncio.Queue[str]) -> str:
    """Wait until the daemon says it created its runs; return the first one's id."""
    while "created with" not in await said.get():
        pass
    async with DB.open(db, readonly=True) as inspector:
        return (await inspector.list_runs(limit=1))[0].id


async def part_way(said: asyncio.Queue[str], units: int) -> None:
    """Wait until the daemon has completed ``units`` units (of twelve)."""
    while units:
        units -= "completed" in await said.get()


def read_acks(acks: Path) -> list[list[str]]:
    return [line.split() for line in acks.read_text().splitlines() if line]


def remove(*paths: Path) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


async def verify(db: Path, acknowledged: list[list[str]], starts: int) -> list[str]:
    """Every check the demo makes, as lines: those starting with FAIL failed."""
    lines = []
    async with DB.open(db, readonly=True) as inspector:
        runs = await inspector.list_runs()
        healthy = [run for run in runs if run.feature_branch != "feature/demo-poison"]
        stored = {}
        once = gap_free = units_done = True
        for run in runs:
            events = await inspector.list_events(run.id)
            stored.update({(run.id, e.sequence): e.id for e in events})
            gap_free &= [e.sequence for e in events] == list(range(1, len(events) + 1))
            if run in healthy:
                completions = [e for e in events if e.event_type == "run_completed"]
                once &= run.status is RunStatus.COMPLETED and len(completions) == 1
                units = await inspector.list_units_by_run(run.id)
                units_done &= bool(units) and all(u.status is UnitStatus.COMPLETED for u in units)
            else:
                given_up = [e.payload for e in events if e.event_type == "run_abandoned"]
                abandoned = run.status is RunStatus.FAILED and len(given_up) == 1
                attempts = given_up[0]["attempts"] if given_up else None
        kept = all(stored.get((run, int(seq))) == int(event) for run, seq, event in acknowledged)
        still_active = await inspector.resumable_runs()
    checks = [
        (len(healthy) == 3 and once, f"{len(healthy)} healthy runs, each completed exactly once"),
        (units_done, "every unit of theirs completed"),
        (
            len(runs) == 4 and abandoned and not still_active,
            f"the poisoned run given up at its takeover {attempts} (max_attempts 3), in {starts}"
            " starts: the crash loop is over",
        ),
        (gap_free, "every run's event sequences gap-free"),
        (kept, f"all {len(acknowledged)} events acknowledged to the daemon are stored"),
    ]
    for ok, text in checks:
        lines.append(f"{'ok  ' if ok else 'FAIL'} {text}")
    return lines


async def main(db: Path, quick: bool) -> int:
    pace = 0.05 if quick else 0.25
    acks = db.with_name(db.name + ".acks")
    remove(db, Path(f"{db}-wal"), Path(f"{db}-shm"), acks)
    daemon = [
        sys.executable,
        str(DAEMON),
        "--db",
        str(db),
        "--pace",
        str(pace),
        "--acks",
        str(acks),
        "--poison",
    ]

    banner("first start: a fresh database; the daemon starts 3 runs of 4 units, and a poisoned one")
    first, first_output, said = await start("[daemon]  ", *daemon)
    run_id = await first_run(db, said)
    follow = [sys.executable, "-m", "daemon_db", "events", run_id, "--follow", "--db", str(db)]
    follower, follower_output, _ = await start(f"[follower {run_id[-6:]}]", *follow)
    await part_way(said, units=5)
    print("[driver]   kill -9 the daemon, part-way through its work", flush=True)
    first.send_signal(signal.SIGKILL)
    await first.wait()
    await first_output

    banner("what the database says after the crash")
    await cli(db, "runs")
    await cli(db, "resumable")

    starts = 1
    banner("the daemon started again, as a supervisor would, each time it dies")
    while True:
        starts += 1
        again, again_output, _ = await start("[daemon]  ", *daemon)
        code = await again.wait()
        await again_output
        if code == 0:
            break
        print(f"[driver]   the daemon died (exit {code}): start it again", flush=True)
        if starts > 8:
            print("[driver]   still crash-looping after 8 starts: giving up", flush=True)
            return 1
    async with asyncio.timeout(30):
        await follower.wait()  # it ends by itself once its run is finished
        await follower_output

    banner("what the database says now")
    await cli(db, "runs")

    banner("checks")
    lines = await verify(db, read_acks(acks), starts)
    remove(acks)
    for line in lines:
        print(line)
    if any(line.startswith("FAIL") for line in lines):
        return 1
    print(
        "\nthe daemon was killed mid-work, came back, finished every healthy run, gave the"
        " poisoned one up instead of crash-looping, and lost nothing"
    )
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("demo.db"), help="default: ./demo.db")
    parser.add_argument("--quick", action="store_true", help="faster pace, for the test suite")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    sys.exit(asyncio.run(main(arguments.db, arguments.quick)))
