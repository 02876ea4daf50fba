"""Values another tool wrote into a PostgreSQL store: check() names them, reads raise typed errors.

SQLite's version is test_damaged_rows.py. PostgreSQL's types and constraints
refuse most of those values, so the damage here is what they let through (or
what a tool did to the schema itself), written with plain asyncpg as that
tool would.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

import daemon_db._postgres.db
from daemon_db import DB, DamagedRecordError, DatabaseError, Run, RunStatus, UnitRecord, UnitStatus
from tests.helpers import new_run, new_unit, report


@pytest.fixture
async def stored(postgres_url: str) -> tuple[Run, UnitRecord, int]:
    """A store with a run, a unit and three events, and no DB open on it."""
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run(status="running"))
        unit = await db.create_unit(new_unit(run, "u1", status="running"))
        events = [await db.append_event(run.id, "e", payload={"n": n}) for n in range(3)]
        assert await db.check() == []
    return run, unit, events[1].id


async def _edit(url: str, *statements: str, replica: bool = False) -> None:
    conn = await asyncpg.connect(url)
    try:
        if replica:  # as a replication or restore tool: foreign keys are not checked
            await conn.execute("SET session_replication_role = replica")
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _problems(url: str) -> list[str]:
    async with DB.open(url, readonly=True) as db:
        return await db.check()


# (what another tool did, given the run id, unit id and an event id; what check() says)
DAMAGE = [
    (
        "config not an object",
        ["UPDATE runs SET config_json = '[1, 2]' WHERE id = '{run}'"],
        ["damaged value: runs row '{run}': config_json='[1, 2]'"],
    ),
    (
        "payload not JSON",
        ["UPDATE events SET payload_json = '{{not json' WHERE id = {event}"],
        ["damaged value: events row {event}: payload_json='{{not json'"],
    ),
    (
        "empty repo path",
        ["UPDATE runs SET repo_path = '  ' WHERE id = '{run}'"],
        ["damaged value: runs row '{run}': repo_path='  '"],
    ),
    (
        "timestamp past year 9999",
        ["UPDATE units SET started_at = '20000-01-01Z' WHERE id = '{unit}'"],
        ["damaged value: units row '{unit}': started_at='20000-01-01 00:00:00+00'"],
    ),
    (
        "timestamp before year 1",
        ["UPDATE runs SET started_at = '0044-03-15Z BC' WHERE id = '{run}'"],
        ["damaged value: runs row '{run}': started_at='0044-03-15 00:00:00+00 BC'"],
    ),
    (
        "an owner that never expires",
        [
            "INSERT INTO owners (id, name, host, machine, pid, lease_until)"
            " VALUES ('o1', 'elsewhere', 'h', 'm', 7, 'infinity')"
        ],
        ["damaged value: owners row 'o1': lease_until='infinity'"],
    ),
    (
        "an owner with pid 0",
        [
            "INSERT INTO owners (id, name, host, machine, pid, lease_until)"
            " VALUES ('o2', 'elsewhere', 'h', 'm', 0, now())"
        ],
        ["damaged value: owners row 'o2': pid='0'"],
    ),
    (
        "a gap in the sequences",
        ["DELETE FROM events WHERE id = {event}"],
        ["sequences: run {run} has 2 events (2 sequences, from 1 up to 3), next sequence 4"],
    ),
    (
        "a counter behind the log",
        ["UPDATE runs SET next_sequence = 2 WHERE id = '{run}'"],
        ["sequences: run {run} has 3 events (3 sequences, from 1 up to 3), next sequence 2"],
    ),
    (
        "a status check dropped",
        [
            "ALTER TABLE runs DROP CONSTRAINT runs_status_check",
            "UPDATE runs SET status = 'paused' WHERE id = '{run}'",
        ],
        [
            "schema: constraint runs_status_check of runs is missing",
            "damaged value: runs row '{run}': status='paused'",
        ],
    ),
    (
        "a check added back NOT VALID",
        [
            "ALTER TABLE runs DROP CONSTRAINT runs_parallelism_check",
            "UPDATE runs SET parallelism = 0 WHERE id = '{run}'",
            "ALTER TABLE runs ADD CONSTRAINT runs_parallelism_check"
            " CHECK (parallelism >= 1) NOT VALID",
        ],
        [
            "schema: constraint runs_parallelism_check of runs is NOT VALID",
            "damaged value: runs row '{run}': parallelism='0'",
        ],
    ),
    (
        "NOT NULL dropped",
        [
            "ALTER TABLE units ALTER COLUMN status DROP NOT NULL",
            "UPDATE units SET status = NULL WHERE id = '{unit}'",
        ],
        [
            "schema: units.status has lost its NOT NULL",
            "damaged value: units row '{unit}': status=None",
        ],
    ),
    (
        "two active runs on one branch",
        [
            "DROP INDEX runs_one_active",
            "INSERT INTO runs (id, feature_branch, repo_path, target_branch, tasks_dir, status)"
            " SELECT 'zz-second', feature_branch, repo_path, target_branch, tasks_dir, 'pending'"
            " FROM runs WHERE id = '{run}'",
        ],
        [
            "schema: unique index runs_one_active is missing",
            "one active run: 2 active runs on",
        ],
    ),
]


@pytest.mark.parametrize(
    ("statements", "says"), [d[1:] for d in DAMAGE], ids=[d[0] for d in DAMAGE]
)
async def test_check_names_what_another_tool_wrote(
    postgres_url: str,
    stored: tuple[Run, UnitRecord, int],
    statements: list[str],
    says: list[str],
) -> None:
    run, unit, event = stored
    names = {"run": run.id, "unit": unit.id, "event": event}
    await _edit(postgres_url, *(s.format(**names) for s in statements))
    problems = await _problems(postgres_url)
    for line in says:
        assert any(p.startswith(line.format(**names)) for p in problems), (line, problems)
    assert len(problems) == len(says), problems


async def test_rows_whose_references_were_not_checked_are_named(
    postgres_url: str, stored: tuple[Run, UnitRecord, int]
) -> None:
    run, _, _ = stored
    await _edit(
        postgres_url,
        "INSERT INTO units (id, run_id, unit_id, status)"
        " VALUES ('lost', 'no-such-run', 'u', 'ready')",
        f"UPDATE runs SET owner_id = 'no-such-owner' WHERE id = '{run.id}'",
        replica=True,
    )
    problems = await _problems(postgres_url)
    assert problems == [
        "foreign key: units row 'lost' refers to a missing runs row (run_id='no-such-run')",
        f"foreign key: runs row {run.id!r} refers to a missing owners row"
        " (owner_id='no-such-owner')",
    ]


# (table, column, what another tool did (given the row id), the value as read, what it says)
UNREADABLE = [
    ("runs", "started_at", [], "20000-01-01Z", "20000-01-01 00:00:00+00", "years 1 to 9999"),
    ("runs", "completed_at", [], "0044-03-15Z BC", "0044-03-15 00:00:00+00 BC", "years 1"),
    ("units", "started_at", [], "20000-01-01Z", "20000-01-01 00:00:00+00", "years 1 to 9999"),
    (
        "runs",
        "status",
        ["ALTER TABLE runs DROP CONSTRAINT runs_status_check"],
        "paused",
        "paused",
        "not a run status",
    ),
    (
        "units",
        "status",
        ["ALTER TABLE units DROP CONSTRAINT units_status_check"],
        "stuck",
        "stuck",
        "not a unit status",
    ),
    (
        "runs",
        "parallelism",
        ["ALTER TABLE runs DROP CONSTRAINT runs_parallelism_check"],
        "0",
        0,
        "integer >= 1",
    ),
]


@pytest.mark.parametrize(
    ("table", "column", "before", "written", "value", "says"),
    UNREADABLE,
    ids=[f"{d[0]}.{d[1]}={d[3]}" for d in UNREADABLE],
)
async def test_a_value_the_store_cannot_read_is_a_typed_error_naming_table_row_and_column(
    postgres_url: str,
    table: str,
    column: str,
    before: list[str],
    written: str,
    value: str,
    says: str,
) -> None:
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run(status="running"))
        unit = await db.create_unit(new_unit(run, "u1", status="running"))
        healthy = await db.create_run(new_run(status="running"))
        await db.create_unit(new_unit(healthy, "u1"))
    record_id = run.id if table == "runs" else unit.id
    await _edit(
        postgres_url,
        *before,
        f"UPDATE {table} SET {column} = '{written}' WHERE id = '{record_id}'",
    )

    async with DB.open(postgres_url) as db:
        read = db.get_run(run.id) if table == "runs" else db.get_unit(unit.id)
        with pytest.raises(DamagedRecordError) as raised:
            await read
        error = raised.value
        assert isinstance(error, DatabaseError)
        assert (error.table, error.record_id, error.column, error.value) == (
            table,
            record_id,
            column,
            value,
        )
        assert error.path == db.path
        assert says in str(error)
        assert error.__cause__ is None

        # Inside a block too, and the block goes on.
        async with db.transaction() as tx:
            with pytest.raises(DamagedRecordError):
                await (tx.get_run(run.id) if table == "runs" else tx.get_unit(unit.id))
            assert await tx.get_run(healthy.id) == healthy

        # Start-up resumes every healthy run and reports the damaged one apart.
        found = await db.resumable_runs()
        assert [item.run.id for item in found] == [healthy.id]
        assert [(e.table, e.record_id, e.column) for e in found.damaged] == [
            (table, record_id, column)
        ]
        problems = await db.check()
        assert any(table in p and record_id in p and column in p for p in problems), problems

        if table == "runs":  # writes that read the row first say so too
            with pytest.raises(DamagedRecordError):
                await db.update_run_status(run.id, RunStatus.FAILED)
            with pytest.raises(DamagedRecordError):
                await db.list_runs()
            if column == "status":  # a follower reads the status alone
                with pytest.raises(DamagedRecordError, match=f"{record_id}.*status"):
                    await anext(aiter(db.follow_events(run.id)))
        else:
            with pytest.raises(DamagedRecordError):
                await db.update_unit_status(unit.id, UnitStatus.FAILED)
        assert await db.get_run(healthy.id) == healthy  # the pool's connections still read
        assert await db.delete_run(run.id)  # the way out: the run can still be removed
        if not before:
            assert await db.check() == []


async def test_a_claim_takes_the_healthy_runs_and_lists_the_damaged_apart(
    postgres_url: str,
) -> None:
    async with DB.open(postgres_url, owner="dead") as dead:
        damaged = await dead.create_run(new_run(status="running"))
        healthy = await dead.create_run(new_run(status="running"))
    await _edit(
        postgres_url, f"UPDATE runs SET started_at = '20000-01-01Z' WHERE id = '{damaged.id}'"
    )
    async with DB.open(postgres_url, owner="next") as db:
        claimed = await db.claim_resumable_runs()
        assert [r.run.id for r in claimed.resumed] == [healthy.id]
        assert [(e.table, e.record_id, e.column) for e in claimed.damaged] == [
            ("runs", damaged.id, "started_at")
        ]


# Before, between and after the five statuses, and none at all.
STRANGE_STATUSES = ["", "RUNNING", "cancelled ", "completes", "go", "paused", "z", None]


async def test_start_up_reports_every_run_whose_status_is_none_of_the_five(
    postgres_url: str,
) -> None:
    async with DB.open(postgres_url, owner="dead") as db:
        strange = [await db.create_run(new_run(status="running")) for _ in STRANGE_STATUSES]
        healthy = await db.create_run(new_run(status="running"))
        for status in RunStatus:
            if status not in (RunStatus.PENDING, RunStatus.RUNNING):
                await db.create_run(new_run(status=status))
    conn = await asyncpg.connect(postgres_url)
    try:
        await conn.execute("ALTER TABLE runs DROP CONSTRAINT runs_status_check")
        await conn.execute("ALTER TABLE runs ALTER COLUMN status DROP NOT NULL")
        edits = list(zip(strange, STRANGE_STATUSES, strict=True))
        await conn.executemany(
            "UPDATE runs SET status = $1 WHERE id = $2", [(status, run.id) for run, status in edits]
        )
    finally:
        await conn.close()
    expected = sorted(((run.id, "status", status) for run, status in edits), key=str)

    async with DB.open(postgres_url, owner="next") as db:
        found = await db.resumable_runs()
        assert [item.run.id for item in found] == [healthy.id]
        damaged = [(e.record_id, e.column, e.value) for e in found.damaged]
        assert sorted(damaged, key=str) == expected
        claimed = await db.claim_resumable_runs()
        assert [item.run.id for item in claimed.resumed] == [healthy.id]
        damaged = [(e.record_id, e.column, e.value) for e in claimed.damaged]
        assert sorted(damaged, key=str) == expected
        held = await asyncpg.connect(postgres_url)
        try:  # left where they are
            assert await held.fetch("SELECT id FROM runs WHERE owner_id IS NOT NULL") == [
                (healthy.id,)
            ]
        finally:
            await held.close()


async def test_an_event_the_store_cannot_read_is_named(postgres_url: str) -> None:
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run())
        event = await db.append_event(run.id, "e", payload={"a": 1})
    await _edit(
        postgres_url, f"UPDATE events SET created_at = '20000-01-01Z' WHERE id = {event.id}"
    )
    async with DB.open(postgres_url) as db:
        with pytest.raises(DamagedRecordError) as raised:
            await db.list_events(run.id)
        assert (raised.value.table, raised.value.record_id, raised.value.column) == (
            "events",
            event.id,
            "created_at",
        )
        assert any("created_at" in p for p in await db.check())


async def test_many_damaged_rows_are_counted_past_the_first_twenty(postgres_url: str) -> None:
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run())
        for n in range(25):
            await db.append_event(run.id, "e", payload=n)
    await _edit(postgres_url, "UPDATE events SET payload_json = 'nope'")
    problems = await _problems(postgres_url)
    assert len(problems) == 21
    assert problems[-1] == "damaged value: 5 more rows in events"
    report(
        f"damaged rows (PostgreSQL): check() names {len(DAMAGE) + 1} kinds of damage another"
        " tool can write past PostgreSQL's own types and constraints"
    )


async def test_a_claim_leaves_a_run_whose_units_are_damaged_where_it_is(
    postgres_url: str,
) -> None:
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run(status="running"))
        unit = await db.create_unit(new_unit(run, "u1"))
    await _edit(
        postgres_url, f"UPDATE units SET started_at = '20000-01-01Z' WHERE id = '{unit.id}'"
    )

    async with DB.open(postgres_url, owner="first") as first:
        claimed = await first.claim_resumable_runs()
        assert claimed.resumed == []
        assert [(e.table, e.record_id) for e in claimed.damaged] == [("units", unit.id)]
        # Not taken (ClaimedRuns.damaged says so): once an operator mends the unit,
        # another daemon claims the run.
        await _edit(postgres_url, f"UPDATE units SET started_at = NULL WHERE id = '{unit.id}'")
        async with DB.open(postgres_url, owner="second") as second:
            [resumed] = (await second.claim_resumable_runs()).resumed
            assert resumed.run.id == run.id
            assert resumed.owner == "second"


@pytest.mark.parametrize("max_attempts", [None, 3])
async def test_the_largest_attempts_stops_no_claim(
    postgres_url: str, max_attempts: int | None
) -> None:
    # attempts is an int4 here: one attempt more than its largest value would fail
    # the whole claim, and no run would resume. The count stops there instead.
    with contextlib.suppress(RuntimeError):
        async with DB.open(postgres_url, owner="dead") as dead:
            run = await dead.create_run(new_run(status="running"))
            raise RuntimeError("the daemon died")
    await _edit(postgres_url, f"UPDATE runs SET attempts = {2**31 - 1}")

    async with DB.open(postgres_url, owner="next") as db:
        assert await db.check() == []
        claimed = await db.claim_resumable_runs(max_attempts=max_attempts)
        taken = [item.run.id for item in claimed.resumed] + [r.id for r in claimed.abandoned]
        assert taken == [run.id]
        assert await db.check() == []


@pytest.mark.parametrize("batch", [1, 500])
async def test_a_prune_passes_over_damaged_runs_and_names_them(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    # One damaged run made every prune raise, for good. Batches of damaged runs
    # alone (one run a batch) must not end the prune, nor find a run twice.
    monkeypatch.setattr(daemon_db._postgres.db, "PRUNE_BATCH_RUNS", batch)
    old = datetime(2020, 1, 1, tzinfo=UTC)
    async with DB.open(postgres_url) as db:
        made = [
            await db.create_run(new_run(status="completed", completed_at=old + timedelta(n)))
            for n in range(6)
        ]
        active = await db.create_run(new_run(status="running"))
    # Each read another way: a timestamp Python cannot hold (before every other
    # run, and after), and a value a dropped check let in.
    damage = {
        made[0].id: ("completed_at", "0044-03-15Z BC"),
        made[1].id: ("parallelism", "0"),
        made[4].id: ("started_at", "20000-01-01Z"),
    }
    await _edit(
        postgres_url,
        "ALTER TABLE runs DROP CONSTRAINT runs_parallelism_check",
        *(f"UPDATE runs SET {c} = '{v}' WHERE id = '{i}'" for i, (c, v) in damage.items()),
        # Read as year 1, and removed; as a batch's key it must stay -infinity,
        # or the next batch would start after the other.
        *(f"UPDATE runs SET completed_at = '-infinity' WHERE id = '{made[n].id}'" for n in (2, 3)),
    )
    healthy = [run for run in made if run.id not in damage]

    async with DB.open(postgres_url) as db:
        for dry_run, removed in [(True, healthy), (False, healthy), (False, [])]:
            found = await db.prune_runs(datetime.now(UTC), dry_run=dry_run)
            assert [run.id for run in found] == [run.id for run in removed]
            assert sorted((e.table, e.record_id, e.column) for e in found.damaged) == sorted(
                ("runs", run_id, column) for run_id, (column, _) in damage.items()
            )
        assert {run.id for run in await db.list_runs(status=RunStatus.RUNNING)} == {active.id}
    conn = await asyncpg.connect(postgres_url)
    try:
        left = {row[0] for row in await conn.fetch("SELECT id FROM runs")}
    finally:
        await conn.close()
    assert left == {active.id, *damage}
