"""Resume a daemon can trust, across processes: claims, deaths, hangs and a poisoned run."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from daemon_db import DB, RunStatus
from tests.helpers import report

CHILD = Path(__file__).parent.parent / "children" / "claimer.py"
ROOT = Path(__file__).parent.parent.parent


def _start(*arguments: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), *map(str, arguments)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.stdout is not None
    child.stdout.close()


def test_daemons_starting_together_claim_every_run_exactly_once(tmp_path: Path) -> None:
    path, go, done = tmp_path / "state.db", tmp_path / "go", tmp_path / "done"
    maker = _start("make", path, 50)
    assert maker.stdout is not None
    assert maker.stdout.readline() == "ready\n"
    _kill(maker)  # it died holding 50 runs
    claimers = [_start("claim", path, go, done) for _ in range(5)]
    time.sleep(0.5)  # all opened, waiting
    go.touch()  # now, at the same moment
    taken: list[list[list[object]]] = []
    for claimer in claimers:
        assert claimer.stdout is not None
        taken.append(json.loads(claimer.stdout.readline()))
    done.touch()
    for claimer in claimers:
        assert claimer.wait(timeout=60) == 0
        assert claimer.stdout is not None
        claimer.stdout.close()
    ids = [run_id for each in taken for run_id, _ in each]
    assert len(ids) == len(set(ids)) == 50  # disjoint, and together every run
    assert {attempt for each in taken for _, attempt in each} == {1}
    report(
        f"claims: 5 processes claiming at once took 50 runs of a dead owner exactly once"
        f" (sets of {sorted(len(each) for each in taken)})"
    )


async def test_a_hung_owner_loses_its_runs_when_its_lease_expires(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    hung = _start("hang", path, 1.5, 3)
    try:
        assert hung.stdout is not None
        made = json.loads(hung.stdout.readline())
        async with DB.open(path) as db:
            assert (await db.claim_resumable_runs()).resumed == []  # alive: its lease runs
            [*found] = await db.resumable_runs()
            assert {(r.owner, r.owner_alive) for r in found} == {("hung", True)}
            began = time.monotonic()
            while not (claimed := await db.claim_resumable_runs()).resumed:
                await asyncio.sleep(0.1)
            waited = time.monotonic() - began
            assert [(r.run.id, r.attempt) for r in claimed.resumed] == [(i, 1) for i in made]
            assert hung.poll() is None  # its process still runs: the lease decided
    finally:
        _kill(hung)
    report(f"a hung owner (loop blocked, process alive) lost its 3 runs {waited:.1f} s later")


def test_a_poisoned_run_is_abandoned_and_the_others_finish(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    seed = _start("seed", path)
    assert seed.stdout is not None
    assert seed.stdout.readline() == "ready\n"
    assert seed.wait(timeout=30) == 0
    seed.stdout.close()
    starts, lines = 0, []
    while True:  # what a supervisor does: start the daemon again after each crash
        starts += 1
        daemon = subprocess.run(
            [sys.executable, str(CHILD), "daemon", str(path), "2"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        lines += daemon.stdout.splitlines()
        if daemon.returncode == 0:
            break
        assert daemon.returncode == 70, daemon.stderr  # killed by the poisoned run
        assert starts < 10, lines
    poison_attempts = [line.split()[-1] for line in lines if line.startswith("resuming poison")]
    assert poison_attempts == ["1", "2"]  # resumed twice, then given up
    assert len([line for line in lines if line.startswith("completed")]) == 3
    assert len([line for line in lines if line.startswith("abandoned")]) == 1
    assert starts == 3

    async def check() -> None:
        async with DB.open(path, readonly=True) as db:
            runs = await db.list_runs()
            poisoned = [run for run in runs if run.feature_branch == "poison"]
            assert [run.status for run in poisoned] == [RunStatus.FAILED]
            assert poisoned[0].error is not None
            assert "died 3 times" in poisoned[0].error
            events = await db.list_events(poisoned[0].id)
            assert [e.event_type for e in events] == ["run_abandoned"]
            assert (
                sorted(run.status for run in runs if run not in poisoned)
                == [RunStatus.COMPLETED] * 3
            )
            assert await db.resumable_runs() == []

    asyncio.run(check())
    report(
        f"poisoned run: abandoned after max_attempts=2 in {starts} starts of a daemon it"
        " killed each time; the 3 other runs finished"
    )
