"""Calls as users write them, checked by ``make typecheck`` (mypy --strict), never run.

The docs say a status may be given as its string value; the annotations must
say so too, or a user's type checker refuses what the library accepts.
"""

from __future__ import annotations

from daemon_db import DB, Run, RunStatus, UnitRecord, UnitStatus


async def statuses_as_strings(db: DB, run_id: str, unit_id: str) -> None:
    await db.update_run_status(run_id, "running", expected="pending")
    await db.update_run_status(run_id, RunStatus.FAILED, expected=["running", RunStatus.PENDING])
    await db.complete_run(run_id, "completed")
    runs: list[Run] = await db.list_runs_by_status("running")
    runs = await db.list_runs(status=["pending", "running"])
    await db.update_unit_status(unit_id, "completed", expected=UnitStatus.RUNNING)
    units: list[UnitRecord] = await db.list_units_by_status(run_id, "ready")
    async with await DB.open("state.db") as again, again.transaction() as tx:
        await tx.update_unit_status(unit_id, "failed", "boom", expected=["running"])
    del runs, units
