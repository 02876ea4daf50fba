"""The PostgreSQL engine's own rules: opening, migrating, refusing, and its URL in errors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import string
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from daemon_db import DB, DatabaseError, InvalidRecordError, Run, RunStatus, SchemaVersionError
from daemon_db._postgres import schema
from daemon_db._postgres.db import PostgresDB
from daemon_db._postgres.url import shown_url
from tests import postgres_server
from tests.helpers import new_run, new_unit


async def _tables(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        found = await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        )
        return [row[0] for row in found]
    finally:
        await conn.close()


async def _execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def test_an_empty_database_is_migrated_once_by_daemons_opening_together(
    postgres_url: str,
) -> None:
    opened = await asyncio.gather(*(DB.open(postgres_url) for _ in range(5)))
    try:
        assert all(isinstance(db, DB) for db in opened)
        await opened[0].create_run(new_run())
        assert [await db.check() for db in opened] == [[]] * 5
    finally:
        await asyncio.gather(*(db.close() for db in opened))
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT version FROM daemon_db_meta") == schema.SCHEMA_VERSION
    finally:
        await conn.close()


async def test_session_settings_a_database_defaults_to_do_not_change_the_store(
    postgres_url: str,
) -> None:
    # Set by an administrator for other applications: with the DateStyle, one
    # damaged run's timestamps were misread, and every run went to `damaged`;
    # with the isolation level, most appends from two daemons failed (40001).
    async with DB.open(postgres_url) as db:
        damaged, healthy = [await db.create_run(new_run(status="running")) for _ in range(2)]
        await db._close(crashed=True)
    name = postgres_url.rsplit("/", 1)[1]
    await _execute(
        postgres_url,
        f"ALTER DATABASE {name} SET datestyle = 'SQL, DMY'",
        f"ALTER DATABASE {name} SET default_transaction_isolation = 'serializable'",
        f"UPDATE runs SET started_at = '10000-01-01' WHERE id = '{damaged.id}'",
    )
    async with DB.open(postgres_url) as first, DB.open(postgres_url) as second:
        claimed = await first.claim_resumable_runs()
        assert [taken.run.id for taken in claimed.resumed] == [healthy.id]
        [error] = claimed.damaged
        assert "started_at='10000-01-01" in str(error)
        await asyncio.gather(*(db.append_event(healthy.id, "tick") for db in (first, second) * 25))
        events = await first.list_events(healthy.id)
        assert [event.sequence for event in events] == list(range(1, 51))


async def test_another_applications_database_is_refused_untouched(postgres_url: str) -> None:
    await _execute(postgres_url, "CREATE TABLE orders (id INTEGER)")
    for readonly in (False, True):
        with pytest.raises(DatabaseError, match="not a daemon_db database"):
            await DB.open(postgres_url, readonly=readonly)
    assert await _tables(postgres_url) == ["orders"]


# Newer, or set by another tool to what no release writes.
@pytest.mark.parametrize(
    ("version", "says"),
    [(schema.SCHEMA_VERSION + 1, "newer release"), (0, "no release"), (-1, "no release")],
)
async def test_a_newer_schema_is_refused_untouched(
    postgres_url: str, version: int, says: str
) -> None:
    async with DB.open(postgres_url):
        pass
    await _execute(postgres_url, f"UPDATE daemon_db_meta SET version = {version}")
    before = await _tables(postgres_url)
    for readonly in (False, True):
        with pytest.raises(SchemaVersionError, match=says) as raised:
            await DB.open(postgres_url, readonly=readonly)
        assert raised.value.found == version
    assert await _tables(postgres_url) == before


@pytest.mark.parametrize("encoding", ["SQL_ASCII", "LATIN1"])
async def test_a_database_not_in_utf8_is_refused_for_writing_and_named_by_check(
    postgres: postgres_server.Server, encoding: str
) -> None:
    # SQL_ASCII takes any bytes as text, and bytes that are not UTF-8 made every
    # read of their row raise, start-up too; LATIN1 refuses a write of "日本".
    url = postgres.new_database(encoding)
    for readonly in (False, True):  # not "needs migrating: open it read-write once"
        with pytest.raises(DatabaseError, match=f"its encoding is {encoding},.* needs UTF8"):
            await DB.open(url, readonly=readonly)
    assert await _tables(url) == []  # refused before anything was written

    # A read-only open reads it, so that its data can be looked at and moved.
    conn = await asyncpg.connect(url)
    try:
        for statement in schema.MIGRATIONS[0]:
            await conn.execute(statement)
        await conn.execute(
            "INSERT INTO daemon_db_meta (application, version) VALUES ($1, $2)",
            schema.APPLICATION,
            schema.SCHEMA_VERSION,
        )
    finally:
        await conn.close()
    async with DB.open(url, readonly=True) as db:
        assert await db.list_runs() == []
        assert [p.split(",")[0] for p in await db.check()] == [
            f"encoding: its encoding is {encoding}"
        ]


async def test_a_sql_ascii_database_s_text_that_is_not_utf8_is_named_by_check(
    postgres: postgres_server.Server,
) -> None:
    # Read-only, such a database is read; the server refuses to send a row whose
    # text is not UTF-8 (22021), so the error points to check(), which names it.
    url = postgres.new_database("SQL_ASCII")
    conn = await asyncpg.connect(url)
    try:
        for migration in schema.MIGRATIONS:
            for statement in migration:
                await conn.execute(statement)
        await conn.execute(
            "INSERT INTO daemon_db_meta (application, version) VALUES ($1, $2)",
            schema.APPLICATION,
            schema.SCHEMA_VERSION,
        )
        # Another tool's bytes: b'\xff' and a cut character are not UTF-8; "é" is.
        await conn.executemany(
            "INSERT INTO runs (id, feature_branch, repo_path, target_branch, tasks_dir,"
            " parallelism, status, config_json) VALUES (convert_from($1::bytea, 'SQL_ASCII'),"
            " convert_from($2::bytea, 'SQL_ASCII'), '/srv/repo', 'main', 'tasks', 1, $3,"
            " convert_from($4::bytea, 'SQL_ASCII'))",
            [
                (b"R1", b"feature/\xff", "running", b"{}"),
                (b"R2\xc3", b"feature/b", "completed", b'{"a": "\xe6\x97"}'),
                (b"R3", "feature/\u00e9".encode(), "running", b"{}"),
            ],
        )
        # Another tool's column, whose name needs quotes, and a column it retyped.
        await conn.execute('ALTER TABLE runs ADD COLUMN "Note" text')
        await conn.execute("ALTER TABLE runs ALTER COLUMN error TYPE name")
        await conn.execute(
            "UPDATE runs SET \"Note\" = convert_from($1::bytea, 'SQL_ASCII'),"
            " error = convert_from($1::bytea, 'SQL_ASCII') WHERE id = 'R1'",
            b"bad \xfe",
        )
        await conn.execute(
            "INSERT INTO events (run_id, sequence, event_type, created_at)"
            " VALUES ('R3', 1, convert_from($1::bytea, 'SQL_ASCII'), now())",
            b"started\xff",
        )
        await conn.execute("UPDATE runs SET next_sequence = 2 WHERE id = 'R3'")
    finally:
        await conn.close()
    async with DB.open(url, readonly=True) as db:
        with pytest.raises(DatabaseError, match=r"not UTF-8.*SQL_ASCII.*check\(\) names it"):
            await db.list_runs()
        assert await db.get_run("R3") == Run(
            id="R3",
            feature_branch="feature/\u00e9",
            repo_path="/srv/repo",
            target_branch="main",
            tasks_dir="tasks",
            parallelism=1,
            status=RunStatus.RUNNING,
        )
        problems = await db.check()
    assert problems[0].startswith("encoding: its encoding is SQL_ASCII")
    assert problems[1:] == [
        "damaged value: runs row 'R1': feature_branch=b'feature/\\xff' is not UTF-8 text",
        "damaged value: runs row 'R1': error=b'bad \\xfe' is not UTF-8 text",
        "damaged value: runs row 'R1': Note=b'bad \\xfe' is not UTF-8 text",
        "damaged value: runs row b'R2\\xc3': id=b'R2\\xc3' is not UTF-8 text",
        "damaged value: runs row b'R2\\xc3': config_json=b'{\"a\": \"\\xe6\\x97\"}'"
        " is not UTF-8 text",
        "damaged value: events row 1: event_type=b'started\\xff' is not UTF-8 text",
        # The JSON check reads every config: it could not read R2's, and says so.
        "damaged value: not checked, as it reads text that is not UTF-8",
    ]


async def test_check_says_which_part_it_could_not_run_on_a_column_another_tool_renamed(
    postgres_url: str,
) -> None:
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run())
        await db.create_unit(new_unit(run, "u1"))
        conn = await asyncpg.connect(postgres_url)
        try:
            await conn.execute("ALTER TABLE units RENAME COLUMN id TO uid")
        finally:
            await conn.close()
        problems = await db.check()  # raised UndefinedColumnError as a DatabaseError
    assert "foreign key: not checked: column t.id does not exist (SQLSTATE 42703)" in problems
    assert 'damaged value: not checked: column "id" does not exist (SQLSTATE 42703)' in problems


async def test_read_only_never_migrates(postgres_url: str) -> None:
    with pytest.raises(SchemaVersionError, match="needs migrating"):
        await DB.open(postgres_url, readonly=True)
    assert await _tables(postgres_url) == []


async def test_read_only_refuses_writes_and_reads_what_a_daemon_wrote(postgres_url: str) -> None:
    async with DB.open(postgres_url) as daemon, DB.open(postgres_url, readonly=True) as inspector:
        run = await daemon.create_run(new_run())
        assert await inspector.get_run(run.id) == run
        assert inspector.readonly
        with pytest.raises(Exception, match="read-only") as raised:
            await inspector.create_run(new_run())
        assert type(raised.value).__name__ == "ReadOnlyError"


async def test_a_uniqueness_rule_another_tool_added_fails_a_create_with_its_own_error(
    postgres_url: str,
) -> None:
    # A create inserts ON CONFLICT DO NOTHING and looks up what it met; a rule
    # it knows nothing of is reported as PostgreSQL words it, nothing stored.
    async with DB.open(postgres_url) as db:
        await _execute(postgres_url, "CREATE UNIQUE INDEX one_per_folder ON runs (tasks_dir)")
        kept = await db.create_run(new_run(tasks_dir="tasks/a"))
        with pytest.raises(DatabaseError, match="one_per_folder"):
            await db.create_run(new_run(tasks_dir="tasks/a"))
        assert [run.id for run in await db.list_runs()] == [kept.id]


async def test_a_server_that_cannot_be_reached_is_a_database_error_without_the_password() -> None:
    url = "postgresql://daemon:hunter2@127.0.0.1:1/registry"
    with pytest.raises(DatabaseError) as raised:
        await DB.open(url)
    assert "hunter2" not in str(raised.value)
    assert raised.value.path == "postgresql://daemon@127.0.0.1:1/registry"


async def test_backup_says_to_use_pg_dump(postgres_url: str, tmp_path: Path) -> None:
    async with DB.open(postgres_url) as db:
        with pytest.raises(DatabaseError, match="pg_dump"):
            await db.backup(tmp_path / "copy.db")
    assert not (tmp_path / "copy.db").exists()


def test_urls_are_shown_without_their_password() -> None:
    assert (
        shown_url("postgresql://u:p@h:5/d?sslmode=require")
        == "postgresql://u@h:5/d?sslmode=require"
    )
    assert shown_url("postgres://u@h/d") == "postgres://u@h/d"
    assert shown_url("postgresql://u:p@[::1]:5/d") == "postgresql://u@[::1]:5/d"
    # libpq's form with the password as a parameter, as asyncpg reads it.
    assert (
        shown_url("postgresql://u@h/d?sslmode=require&password=hunter2&PassWord=x")
        == "postgresql://u@h/d?sslmode=require"
    )
    assert shown_url("postgresql://u@h/d?sslpassword=key%20pw&x=1") == "postgresql://u@h/d?x=1"
    assert shown_url("postgresql://u@h/d?passwords=1") == "postgresql://u@h/d?passwords=1"


async def test_an_error_never_shows_a_password_given_as_a_parameter() -> None:
    url = "postgresql://nobody@127.0.0.1:1/nothing?password=hunter2"
    with pytest.raises(DatabaseError, match="cannot connect") as raised:
        await DB.open(url)
    assert "hunter2" not in str(raised.value)
    assert raised.value.path == "postgresql://nobody@127.0.0.1:1/nothing"


async def _backends(url: str) -> list[int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'daemon_db'"
            " AND datname = current_database()"
        )
    finally:
        await conn.close()
    return [row["pid"] for row in rows]


async def test_the_client_notices_a_server_the_network_lost(postgres_url: str) -> None:
    # asyncpg sets no keepalive: a call behind a cut network waited for good.
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run())
        async with contextlib.aclosing(db.follow_events(run.id)) as following:
            reading = asyncio.ensure_future(anext(following))  # it listens meanwhile
            await asyncio.sleep(0.2)
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
        assert isinstance(db, PostgresDB)
        connections = [*db._pool._holders, db._listener]
        sockets = [
            getattr(c, "_con", c)._transport.get_extra_info("socket")
            for c in connections
            if getattr(c, "_con", c) is not None
        ]
        assert len(sockets) >= 2
        for sock in sockets:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 120_000
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 60


async def test_a_cancelled_read_returns_while_the_server_does_not_answer(
    postgres_url: str,
) -> None:
    # Its ROLLBACK waited for a server that never answered (a stopped one),
    # and the caller's timeout with it (adversary pass): now it waits a second.
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run())
        stopped = await _backends(postgres_url)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        try:
            async with asyncio.timeout(60):  # a hang guard, not a measure
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(db.get_run(run.id), 0.5)
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        assert await db.get_run(run.id) == run  # on a new session


@pytest.mark.parametrize("lease", ["infinity", "9999-12-31", "now() + interval '400 days'"])
async def test_check_names_an_owner_whose_lease_no_release_writes(
    postgres_url: str, lease: str
) -> None:
    # Alive for good, its runs never claimed: 'infinity' was named, a year
    # 9999 passed.
    async with DB.open(postgres_url) as db:
        await db.create_run(new_run())
    await _execute(
        postgres_url,
        "INSERT INTO owners (id, name, host, machine, pid, lease_until)"
        f" VALUES ('odd', 'odd', 'h', 'elsewhere', 1, {lease if '(' in lease else repr(lease)})",
    )
    async with DB.open(postgres_url, readonly=True) as db:
        [problem] = await db.check()
    assert problem.startswith("damaged value: owners row 'odd': lease_until=")


@pytest.mark.parametrize("again_after", [None, 0, 1, 10], ids=["once", "twice", "1", "10"])
async def test_a_cancelled_read_leaves_no_statement_running_on_the_server(
    postgres_url: str, again_after: int | None
) -> None:
    # Ending the session at once went before asyncpg's CancelRequest: each
    # read cancelled behind a lock left a backend waiting with its slot held,
    # until the server had none left; cancelled a second time a few loop turns
    # later, it did the same (adversary passes).
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run())
        locker = await asyncpg.connect(postgres_url)
        try:
            await locker.execute("BEGIN; LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
            for _ in range(5):
                reading = asyncio.create_task(db.get_run(run.id))
                await asyncio.sleep(0.2)  # behind the lock
                reading.cancel()
                if again_after is not None:
                    for _ in range(again_after):
                        await asyncio.sleep(0)
                    reading.cancel()
                await asyncio.wait([reading], timeout=30)  # a hang guard
                assert reading.cancelled()
            waiting = await locker.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = 'daemon_db' AND wait_event_type = 'Lock'"
            )
            assert waiting == 0
        finally:
            await locker.close()
        assert await db.get_run(run.id) == run


async def test_a_read_cancelled_again_while_the_server_does_not_answer_returns(
    postgres_url: str,
) -> None:
    # Cancelled a second time while it waited for its ROLLBACK (a task group,
    # a shutdown), it gave its connection back unsettled, and the pool waited
    # for the stopped server for good (adversary pass).
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run())
        locker = await asyncpg.connect(postgres_url)
        await locker.execute("BEGIN; LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
        stopped: list[int] = []

        async def reading() -> None:
            async with asyncio.timeout(0.5):
                await db.get_run(run.id)  # waits behind the lock, its snapshot begun

        task = asyncio.create_task(reading())
        try:
            await asyncio.sleep(0.2)
            stopped = await _backends(postgres_url)
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)
            await asyncio.sleep(0.6)  # timed out: it waits for the stopped server
            task.cancel()
            await asyncio.wait([task], timeout=30)  # a hang guard, not a measure
            assert task.cancelled()
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
            await locker.close()
        assert await db.get_run(run.id) == run


async def test_a_port_out_of_range_cannot_connect() -> None:
    # asyncpg's OverflowError went through raw, and the CLI printed a traceback.
    with pytest.raises(DatabaseError, match="cannot connect") as raised:
        await DB.open("postgresql://nobody@127.0.0.1:99999/nothing")
    assert "port must be 0-65535" in str(raised.value)


@pytest.mark.parametrize(
    "edit",
    [
        "ALTER TABLE daemon_db_meta ALTER version DROP NOT NULL;"
        " UPDATE daemon_db_meta SET version = NULL",
        "ALTER TABLE daemon_db_meta ALTER version TYPE text;"
        " UPDATE daemon_db_meta SET version = 'one'",
        "ALTER TABLE daemon_db_meta ALTER application DROP NOT NULL;"
        " UPDATE daemon_db_meta SET application = NULL",
    ],
)
async def test_a_damaged_meta_row_is_a_database_error_naming_it(
    postgres_url: str, edit: str
) -> None:
    # Raw TypeError and ValueError from DB.open, and tracebacks from the CLI.
    async with DB.open(postgres_url):
        pass
    await _execute(postgres_url, edit)
    for readonly in (True, False):
        with pytest.raises(DatabaseError, match="daemon_db_meta row is damaged"):
            await DB.open(postgres_url, readonly=readonly)


async def test_a_name_too_long_for_an_index_entry_is_bad_input_naming_it(
    postgres_url: str,
) -> None:
    # Within the store's 4,096 characters, yet over the 2,704 bytes a btree entry
    # holds: it was a raw server message from DatabaseError, several lines long.
    noise = "".join(random.Random(7).choices(string.ascii_letters + string.digits, k=3000))
    async with DB.open(postgres_url) as db:
        for field, run in [
            ("Run.feature_branch", new_run(feature_branch=noise)),
            ("Run.repo_path", new_run(repo_path=f"/{noise}")),
            ("Run.id", new_run(id=noise)),
        ]:
            with pytest.raises(InvalidRecordError, match="2,704 bytes") as raised:
                await db.create_run(run)
            assert raised.value.field == field
        run = await db.create_run(new_run())
        with pytest.raises(InvalidRecordError) as raised:
            await db.create_unit(new_unit(run, noise))
        assert raised.value.field in ("UnitRecord.id", "UnitRecord.unit_id")
        assert await db.list_runs() == [run]
        assert await db.list_units_by_run(run.id) == []


@pytest.mark.parametrize(
    ("query", "busy_timeout", "bound"),
    [("", 0.3, "busy_timeout"), ("?lock_timeout=300", 60.0, "the URL's lock_timeout")],
)
async def test_a_write_waits_for_another_sessions_lock_at_most_busy_timeout(
    postgres_url: str, query: str, busy_timeout: float, bound: str
) -> None:
    # Another host's session holds the run's row and does nothing more (idle in
    # its transaction): without a bound, the write, and a caller's timeout or
    # cancellation with it, would wait for as long as that session lives.
    async with DB.open(postgres_url + query, busy_timeout=busy_timeout) as db:
        run = await db.create_run(new_run(status="pending"))
        # The server ends the holder after 20 s: were the wait unbounded, the
        # writes would then go through, and the test fail rather than hang.
        other = await asyncpg.connect(
            postgres_url, server_settings={"idle_in_transaction_session_timeout": "20s"}
        )
        try:
            holding = other.transaction()
            await holding.start()
            await other.execute("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", run.id)
            for write in (
                lambda: db.update_run_status(run.id, RunStatus.RUNNING),
                lambda: db.append_event(run.id, "tick"),
            ):
                with pytest.raises(DatabaseError, match=f"longer than {bound}") as raised:
                    await write()
                assert "nothing the call did is kept" in str(raised.value)
            with pytest.raises(DatabaseError, match=f"longer than {bound}"):
                async with db.transaction() as tx:
                    await tx.append_event(run.id, "in a block")
            await holding.rollback()
        finally:
            await other.close()
        stored = await db.get_run(run.id)
        assert stored is not None
        assert stored.status is RunStatus.PENDING
        assert await db.list_events(run.id) == []
        await db.append_event(run.id, "free again")


async def test_a_block_that_creates_a_run_does_not_hold_up_the_dbs_other_writes(
    postgres_url: str,
) -> None:
    # Every create and claim registers the DB as the runs' owner in the same
    # statement. Were the owner's row locked by a block that created a run
    # (an upsert locks the row it meets, even when it updates nothing), the
    # DB's other creates, claims and lease renewal would fail after
    # busy_timeout while the block ran on (preparing a worktree, say).
    async with DB.open(postgres_url, busy_timeout=0.3) as db:
        created = asyncio.Event()
        done = asyncio.Event()

        async def long_block() -> Run:
            async with db.transaction() as tx:
                run = await tx.create_run(new_run(status="pending"))
                created.set()
                await done.wait()
            return run

        async def short_block() -> Run:
            async with db.transaction() as tx:
                return await tx.create_run(new_run())

        blocking = asyncio.create_task(long_block())
        await created.wait()
        try:
            others = [await db.create_run(new_run(status="pending"))]
            others.append(await short_block())
            await db._renew_lease()  # type: ignore[attr-defined]
            claimed = await db.claim_resumable_runs()
        finally:
            done.set()
        in_block = await blocking
        # Runs the DB already holds are not claimed again; the block's is its own.
        assert claimed.resumed == []
        assert {run.id for run in await db.list_runs()} == {in_block.id, *(r.id for r in others)}


async def test_a_create_in_a_block_judges_the_lease_by_the_clock_not_the_block_s_start(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Inside a block now() is when the block began. A lease that ran out since
    # (its renewals failing) passed for fresh, so the create did not register
    # the owner again; another DB's claim had meanwhile found it dead and
    # deleted its row, and the create failed its foreign key.
    async with DB.open(postgres_url, owner="a", lease=1.0) as a, DB.open(postgres_url) as b:

        async def failing() -> None:
            raise DatabaseError(postgres_url, "renewal failing")

        monkeypatch.setattr(a, "_renew_lease", failing)
        await type(a)._renew_lease(a)  # type: ignore[attr-defined]
        claimed, go = asyncio.Event(), asyncio.Event()

        async def a_block() -> Run:
            async with a.transaction() as tx:
                await tx.get_run("none")  # the block's transaction, and its now(), begin
                await claimed.wait()
                go.set()
                return await tx.create_run(new_run(status="running"))

        async def b_block() -> None:
            async with b.transaction() as tx:
                assert (await tx.claim_resumable_runs()).resumed == []  # deletes a's row
                claimed.set()
                await go.wait()
                await asyncio.sleep(0.3)  # a's create waits for this block's delete

        creating = asyncio.create_task(a_block())
        await asyncio.sleep(1.3)  # a's lease runs out
        await b_block()
        made = await creating
        [item] = await b.resumable_runs()
        assert (item.run.id, item.owner, item.owner_alive) == (made.id, "a", True)


@pytest.mark.parametrize(
    ("busy_timeout", "query", "setting"),
    [(5.0, "", "5s"), (0, "", "1ms"), (0.25, "", "250ms"), (5.0, "?lock_timeout=1234", "1234ms")],
)
async def test_busy_timeout_is_the_sessions_lock_timeout_unless_the_url_sets_one(
    postgres_url: str, busy_timeout: float, query: str, setting: str
) -> None:
    async with DB.open(postgres_url + query, busy_timeout=busy_timeout) as db:
        assert db._pool is not None  # type: ignore[attr-defined]
        async with db._pool.acquire() as conn:  # type: ignore[attr-defined]
            assert await conn.fetchval("SHOW lock_timeout") == setting


# Another tool's edit that would lose or let in writes is refused at a
# read-write open, as on SQLite (tests/test_schema.py).
@pytest.mark.parametrize(
    ("edit", "says", "undo"),
    [
        pytest.param(
            [
                "CREATE FUNCTION quiet() RETURNS trigger LANGUAGE plpgsql"
                " AS $$ BEGIN RETURN NULL; END $$",
                "CREATE TRIGGER quiet BEFORE INSERT ON events"
                " FOR EACH ROW EXECUTE FUNCTION quiet()",
            ],
            "schema: trigger quiet on events is not daemon_db's (another tool added it)",
            ["DROP TRIGGER quiet ON events"],
            id="trigger added",
        ),
        pytest.param(
            ["CREATE RULE quiet AS ON INSERT TO events DO INSTEAD NOTHING"],
            "schema: rule quiet on events is not daemon_db's (another tool added it)",
            ["DROP RULE quiet ON events"],
            id="rule added",
        ),
        pytest.param(
            ["DROP INDEX runs_one_active"],
            "schema: unique index runs_one_active is missing or not valid",
            [
                "CREATE UNIQUE INDEX runs_one_active ON runs (feature_branch, repo_path)"
                " WHERE status IN ('pending', 'running') AND feature_branch IS NOT NULL"
            ],
            id="index dropped",
        ),
    ],
)
async def test_a_schema_another_tool_changed_is_refused_for_writing(
    postgres_url: str, edit: list[str], says: str, undo: list[str]
) -> None:
    async with DB.open(postgres_url) as db:
        run = await db.create_run(new_run())
        await db.append_event(run.id, "started")
    await _execute(postgres_url, *edit)
    with pytest.raises(DatabaseError, match="another tool changed daemon_db's schema") as raised:
        await DB.open(postgres_url)
    assert says in raised.value.reason
    async with DB.open(postgres_url, readonly=True) as db:
        assert len(await db.list_events(run.id)) == 1
        assert says in await db.check()
    await _execute(postgres_url, *undo)
    async with DB.open(postgres_url) as db:
        await db.append_event(run.id, "resumed")
        assert len(await db.list_events(run.id)) == 2
        assert await db.check() == []


async def test_a_prune_takes_a_run_another_session_held_while_it_passed(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch skips a run another session has locked (SKIP LOCKED), and the
    # next starts after the last run read: the skipped run was left behind.
    import daemon_db._postgres.db as engine

    monkeypatch.setattr(engine, "PRUNE_BATCH_RUNS", 2)
    old = datetime(2020, 1, 1, tzinfo=UTC)
    async with DB.open(postgres_url) as db:
        made = [
            await db.create_run(new_run(status="completed", completed_at=old + timedelta(n)))
            for n in range(5)
        ]
        other = await asyncpg.connect(postgres_url)
        holding = other.transaction()
        await holding.start()
        await other.execute("SELECT 1 FROM runs WHERE id = $1 FOR UPDATE", made[1].id)
        real = engine._delete_finished

        async def lock_ends_with_the_first_sweep(conn: object, **kwargs: object) -> object:
            found = await real(conn, **kwargs)  # type: ignore[arg-type]
            if found[2] is None and not other.is_closed():
                await holding.rollback()
                await other.close()
            return found

        monkeypatch.setattr(engine, "_delete_finished", lock_ends_with_the_first_sweep)
        removed = await db.prune_runs(datetime.now(UTC))
        assert other.is_closed()  # the lock was held through the first sweep
        assert [run.id for run in removed] == [run.id for run in made]  # oldest first
        assert await db.list_runs() == []


async def test_a_claim_never_hands_back_a_run_a_woken_block_made_meanwhile(
    postgres_url: str,
) -> None:
    # A block made a run while its lease was healthy (its owner row only locked
    # by the run's foreign key), the lease ran out (a hung loop), and the block
    # committed while a claim was forgetting dead owners: a snapshot taken before
    # the commit missed the new run, the owner row was deleted, and ON DELETE SET
    # NULL handed the run a live daemon works to the next claim (adversary pass).
    raw = await asyncpg.connect(postgres_url)
    try:
        async with DB.open(postgres_url, owner="slow") as slow, DB.open(postgres_url) as other:
            # Dead owners of a crashed fleet: they only widen the statement's window.
            await raw.execute(
                "INSERT INTO owners (id, name, host, machine, pid, started, lease_until)"
                " SELECT 'dead-' || g, 'dead', 'h', 'elsewhere', g, NULL, '2000-01-01Z'"
                " FROM generate_series(1, 200000) g"
            )
            async with slow.transaction() as tx:
                made = await tx.create_run(new_run(status="running"))
                await raw.execute(
                    "UPDATE owners SET lease_until = '2000-01-01Z' WHERE id = $1", slow._owner.id
                )
                claiming = asyncio.ensure_future(other.claim_resumable_runs())
                async with asyncio.timeout(30):
                    while not await raw.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                        " AND (query LIKE 'SELECT owners.id FROM owners%'"
                        " OR query LIKE 'DELETE FROM owners WHERE id IN%')"
                    ):
                        await asyncio.sleep(0)
                await asyncio.sleep(0.2)  # the loop wakes, and the block commits
            assert (await claiming).resumed == []
            assert await slow.holds(made.id)
            assert await raw.fetchval("SELECT owner_id FROM runs WHERE id = $1", made.id)
    finally:
        await raw.close()
