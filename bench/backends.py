"""The four stores measured, each doing the same work on the same schema and PRAGMAs.

- ``sqlite3``: daemon_db's own SQL functions (ownership included) called
  synchronously on a plain sqlite3 connection, each write in its own
  transaction: the floor.
- ``aiosqlite``: the strongest straightforward aiosqlite code (see
  ``StraightAiosqlite``): one statement per call, autocommit, ``RETURNING``
  and ``execute_fetchall``, records built on the loop with the same fast
  loader daemon_db uses.
- ``sqlalchemy``: SQLAlchemy 2 async Core on aiosqlite, as Prefect-style code
  uses it, with SQLAlchemy's documented recipe for ``BEGIN IMMEDIATE``.
- ``daemon_db``: this library.

Each store's methods return the records daemon_db returns, so that every store
pays for the same mapping. The sqlite3 store's methods are plain functions.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from daemon_db import DB, EventRecord, Run, RunStatus, UnitRecord, UnitStatus
from daemon_db import _timestamps as timestamps
from daemon_db._owner import Owner
from daemon_db._process import this_process
from daemon_db._records import loader
from daemon_db._sqlite import events, owners, runs, units

T = TypeVar("T")

PRAGMAS = (
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA trusted_schema = OFF",
    "PRAGMA busy_timeout = 5000",
)
RUN_COLUMNS = (
    "id, feature_branch, repo_path, target_branch, tasks_dir, parallelism, status,"
    " daemon_version, started_at, completed_at, error, config_json"
)
EVENT_COLUMNS = "id, run_id, sequence, event_type, unit_id, payload_json, created_at"
UNIT_COLUMNS = "id, run_id, unit_id, status, branch, worktree_path, started_at, completed_at, error"
OWNER_ID = "bench-owner"
FINISHED = {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}


def _text(moment: datetime | None) -> str | None:
    return None if moment is None else timestamps.to_text(moment)


def _moment(text: str | None) -> datetime | None:
    return None if text is None else timestamps.from_text(text)


def run_row(run: Run) -> tuple[object, ...]:
    return (
        run.id,
        run.feature_branch,
        run.repo_path,
        run.target_branch,
        run.tasks_dir,
        run.parallelism,
        run.status.value,
        run.daemon_version,
        _text(run.started_at),
        _text(run.completed_at),
        run.error,
        run.config_json,
    )


def stored_row(run: Run) -> tuple[object, ...]:
    """The row daemon_db would store for ``run``: its status's timestamps filled in."""
    started_at, completed_at = timestamps.on_create(
        run.started_at,
        run.completed_at,
        running=run.status is RunStatus.RUNNING,
        finished=run.status in FINISHED,
    )
    row = run_row(run)
    return (*row[:8], _text(started_at), _text(completed_at), *row[10:])


def run_from_row(row: Any) -> Run:
    """Map a row on the event loop, the way hand-written code does."""
    return Run(
        id=row[0],
        feature_branch=row[1],
        repo_path=row[2],
        target_branch=row[3],
        tasks_dir=row[4],
        parallelism=row[5],
        status=RunStatus(row[6]),
        daemon_version=row[7],
        started_at=_moment(row[8]),
        completed_at=_moment(row[9]),
        error=row[10],
        config_json=row[11],
    )


def event_from_row(row: Any) -> EventRecord:
    return EventRecord(
        id=row[0],
        run_id=row[1],
        sequence=row[2],
        event_type=row[3],
        unit_id=row[4],
        payload_json=row[5],
        created_at=timestamps.from_text(row[6]),
    )


def _status_change(row: Any, status: str, finished: bool) -> tuple[str | None, str | None]:
    """(started_at, completed_at) after a status change, as daemon_db computes them."""
    old_status, started_at, completed_at = row
    if status == old_status:
        return started_at, completed_at
    now = timestamps.to_text(timestamps.now())
    if status == "running" and started_at is None:
        started_at = now
    return started_at, (now if finished else None)


class RawSqlite:
    """daemon_db's SQL, called synchronously: the floor."""

    name = "sqlite3"
    is_async = False

    def open(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        for pragma in PRAGMAS:
            self.conn.execute(pragma)
        self.owner = Owner(id=OWNER_ID, name="bench", process=this_process(), lease=3600.0)

    def close(self) -> None:
        self.conn.close()

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = work(self.conn)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return result

    def create_run(self, run: Run) -> Run:
        return self._write(partial(owners.create_run, run=run, owner=self.owner))

    def get_run(self, run_id: str) -> Run | None:
        return runs.get(self.conn, run_id=run_id)

    def update_run_status(self, run_id: str, status: RunStatus) -> Run:
        return self._write(
            partial(
                owners.update_run_status,
                run_id=run_id,
                status=status,
                error=None,
                expected=None,
                owner=self.owner,
            )
        )

    def update_unit_status(self, unit_id: str, status: UnitStatus) -> object:
        return self._write(
            partial(units.update_status, unit_record_id=unit_id, status=status, error=None)
        )

    def append_event(self, run_id: str, payload: object) -> EventRecord:
        text = json.dumps(payload, separators=(",", ":"))
        return self._write(
            partial(events.append, run_id=run_id, event_type="progress", unit_id=None, payload=text)
        )

    def append_events(self, run_id: str, payloads: list[object]) -> None:
        """Several appends in one transaction: sqlite3 committing per 100."""
        texts = [json.dumps(payload, separators=(",", ":")) for payload in payloads]

        def appends(conn: sqlite3.Connection) -> None:
            for text in texts:
                events.append(
                    conn, run_id=run_id, event_type="progress", unit_id=None, payload=text
                )

        self._write(appends)

    def list_runs_by_status(self, status: RunStatus) -> list[Run]:
        return runs.list_page(
            self.conn,
            statuses={status},
            feature_branch=None,
            repo_path=None,
            after=None,
            newest_first=False,
            limit=-1,
        )

    def list_events_since(self, run_id: str, sequence: int) -> list[EventRecord]:
        return events.list_page(self.conn, run_id=run_id, after=sequence, limit=-1)


class StraightAiosqlite:
    """aiosqlite as a competent user writes it, apart from daemon_db.

    The strongest straightforward shape: the connection in autocommit mode
    (``isolation_level=None``), so that each write is one statement that
    commits by itself; ``execute_fetchall`` for reads and for writes that
    return their row (``RETURNING``): one round trip to aiosqlite's thread per
    call. An append computes its sequence in the same statement
    (``INSERT ... SELECT COALESCE(MAX(sequence), 0) + 1``), and a status change
    its timestamps (``CASE``), so nothing reads before it writes and no lock is
    needed. A run is stored held by its creator, as daemon_db stores it (one
    owner row, registered at open, its id in each run's ``owner_id``).
    Records are built on the event loop with daemon_db's record
    classes and their fast loader (``daemon_db._records.loader``, the only
    daemon_db internal used), so that both build the same records at the same
    cost; everything else here is plain aiosqlite.
    """

    name = "aiosqlite"
    is_async = True

    async def open(self, path: Path) -> None:
        self.db = await aiosqlite.connect(path, isolation_level=None)
        for pragma in PRAGMAS:
            await self.db.execute(pragma)
        # Runs are held by their creator, as daemon_db's are: one owner row,
        # registered once (daemon_db looks its lease up on each create as well).
        await self.db.execute(
            "INSERT OR IGNORE INTO owners (id, name, host, machine, pid, started, lease_until)"
            " VALUES (?, 'bench', 'bench', 'bench', 1, NULL, '9999-12-31T00:00:00.000000Z')",
            (OWNER_ID,),
        )

    async def close(self) -> None:
        await self.db.close()

    async def create_run(self, run: Run) -> Run:
        row = stored_row(run)
        await self.db.execute(
            f"INSERT INTO runs ({RUN_COLUMNS}, owner_id) VALUES ({'?, ' * 12}?)", (*row, OWNER_ID)
        )
        return _load_run(row)

    async def get_run(self, run_id: str) -> Run | None:
        rows = await self.db.execute_fetchall(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)
        )
        return None if not rows else _load_run(next(iter(rows)))

    async def update_run_status(self, run_id: str, status: RunStatus) -> Run | None:
        rows = await self.db.execute_fetchall(
            f"UPDATE runs SET {_STATUS_CHANGE} WHERE id = :id RETURNING {RUN_COLUMNS}",
            _status_params(run_id, status.value, status in FINISHED),
        )
        return None if not rows else _load_run(next(iter(rows)))

    async def update_unit_status(self, unit_id: str, status: UnitStatus) -> object:
        finished = status in (UnitStatus.COMPLETED, UnitStatus.FAILED)
        rows = await self.db.execute_fetchall(
            f"UPDATE units SET {_STATUS_CHANGE} WHERE id = :id RETURNING {UNIT_COLUMNS}",
            _status_params(unit_id, status.value, finished),
        )
        return None if not rows else _load_unit(next(iter(rows)))

    async def append_event(self, run_id: str, payload: object) -> EventRecord:
        text = json.dumps(payload, separators=(",", ":"))
        now = timestamps.now()
        rows = await self.db.execute_fetchall(
            "INSERT INTO events (run_id, sequence, event_type, unit_id, payload_json, created_at)"
            " SELECT :run, COALESCE(MAX(sequence), 0) + 1, 'progress', NULL, :payload, :now"
            " FROM events WHERE run_id = :run RETURNING id, sequence",
            {"run": run_id, "payload": text, "now": timestamps.to_text(now)},
        )
        ((event_id, sequence),) = rows
        return _load_event(event_id, run_id, sequence, "progress", None, text, now)

    async def list_runs_by_status(self, status: RunStatus) -> list[Run]:
        rows = await self.db.execute_fetchall(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE status = ? ORDER BY id", (status.value,)
        )
        return [_load_run(row) for row in rows]

    async def list_events_since(self, run_id: str, sequence: int) -> list[EventRecord]:
        rows = await self.db.execute_fetchall(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE run_id = ? AND sequence > ?"
            " ORDER BY sequence",
            (run_id, sequence),
        )
        return [_load_event_row(row) for row in rows]

    async def iter_events(self, run_id: str, sequence: int) -> AsyncIterator[EventRecord]:
        """Keyset pages of 256 with execute_fetchall: what a user streaming a log writes."""
        while True:
            rows = await self.db.execute_fetchall(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE run_id = ? AND sequence > ?"
                " ORDER BY sequence LIMIT 256",
                (run_id, sequence),
            )
            for row in rows:
                event = _load_event_row(row)
                sequence = event.sequence
                yield event
            if len(rows) < 256:  # type: ignore[arg-type]
                return


_STATUS_CHANGE = (
    # The timestamp rules of daemon_db in one statement: running starts the
    # clock once; a finished status stamps the finish; leaving one clears it;
    # the same status again changes nothing but the error.
    "started_at = CASE WHEN status <> :status AND :status = 'running' AND started_at IS NULL"
    " THEN :now ELSE started_at END,"
    " completed_at = CASE WHEN status = :status THEN completed_at"
    " WHEN :finished THEN :now ELSE NULL END,"
    " status = :status, error = NULL"
)


def _status_params(key: str, status: str, finished: bool) -> dict[str, object]:
    return {
        "id": key,
        "status": status,
        "finished": finished,
        "now": timestamps.to_text(timestamps.now()),
    }


_run_loader = loader(Run)
_unit_loader = loader(UnitRecord)
_load_event = loader(EventRecord)
_RUN_STATUSES = {status.value: status for status in RunStatus}
_UNIT_STATUSES = {status.value: status for status in UnitStatus}


def _load_run(row: Any) -> Run:
    return _run_loader(
        *row[:6], _RUN_STATUSES[row[6]], row[7], _moment(row[8]), _moment(row[9]), *row[10:]
    )


def _load_unit(row: Any) -> UnitRecord:
    return _unit_loader(
        *row[:3], _UNIT_STATUSES[row[3]], row[4], row[5], _moment(row[6]), _moment(row[7]), row[8]
    )


def _load_event_row(row: Any) -> EventRecord:
    return _load_event(*row[:6], timestamps.from_text(row[6]))


class SqlAlchemyCore:
    """SQLAlchemy 2 async Core on aiosqlite."""

    name = "sqlalchemy"
    is_async = True

    async def open(self, path: Path) -> None:
        self.engine: AsyncEngine = create_async_engine(f"sqlite+aiosqlite:///{path}")

        @sa.event.listens_for(self.engine.sync_engine, "connect")
        def connect(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None  # SQLAlchemy's recipe: we emit BEGIN
            cursor = dbapi_connection.cursor()
            for pragma in PRAGMAS:
                cursor.execute(pragma)
            # Its pool's connections queue for the write lock in SQLite's busy
            # handler, which is not fair: with 100 tasks appending, one waited
            # past 5 s and the benchmark failed ("database is locked").
            cursor.execute("PRAGMA busy_timeout = 60000")
            cursor.close()

        @sa.event.listens_for(self.engine.sync_engine, "begin")
        def begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        meta = sa.MetaData()
        self.runs = sa.Table(
            "runs",
            meta,
            *(sa.Column(name.strip()) for name in RUN_COLUMNS.split(",")),
        )
        self.units = sa.Table(
            "units",
            meta,
            *(sa.Column(n) for n in ("id", "status", "started_at", "completed_at", "error")),
        )
        self.events = sa.Table(
            "events", meta, *(sa.Column(name.strip()) for name in EVENT_COLUMNS.split(","))
        )

    async def close(self) -> None:
        await self.engine.dispose()

    async def create_run(self, run: Run) -> Run:
        row = stored_row(run)
        async with self.engine.begin() as conn:
            await conn.execute(
                sa.insert(self.runs).values(dict(zip(self.runs.c.keys(), row, strict=True)))
            )
        return run_from_row(row)

    async def get_run(self, run_id: str) -> Run | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(self.runs).where(self.runs.c.id == run_id))).first()
        return None if row is None else run_from_row(row)

    async def _update_status(self, table: sa.Table, key: str, status: str, finished: bool) -> None:
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(table.c.status, table.c.started_at, table.c.completed_at).where(
                        table.c.id == key
                    )
                )
            ).first()
            started_at, completed_at = _status_change(row, status, finished)
            await conn.execute(
                sa.update(table)
                .where(table.c.id == key)
                .values(status=status, error=None, started_at=started_at, completed_at=completed_at)
            )

    async def update_run_status(self, run_id: str, status: RunStatus) -> Run | None:
        await self._update_status(self.runs, run_id, status.value, status in FINISHED)
        return await self.get_run(run_id)

    async def update_unit_status(self, unit_id: str, status: UnitStatus) -> None:
        finished = status in (UnitStatus.COMPLETED, UnitStatus.FAILED)
        await self._update_status(self.units, unit_id, status.value, finished)

    async def append_event(self, run_id: str, payload: object) -> EventRecord:
        text = json.dumps(payload, separators=(",", ":"))
        created_at = timestamps.to_text(timestamps.now())
        table = self.events
        async with self.engine.begin() as conn:
            sequence = (
                await conn.execute(
                    sa.select(sa.func.coalesce(sa.func.max(table.c.sequence), 0) + 1).where(
                        table.c.run_id == run_id
                    )
                )
            ).scalar_one()
            result = await conn.execute(
                sa.insert(table).values(
                    run_id=run_id,
                    sequence=sequence,
                    event_type="progress",
                    unit_id=None,
                    payload_json=text,
                    created_at=created_at,
                )
            )
        event_id = result.inserted_primary_key[0] if result.inserted_primary_key else None
        return event_from_row((event_id or 1, run_id, sequence, "progress", None, text, created_at))

    async def list_runs_by_status(self, status: RunStatus) -> list[Run]:
        query = (
            sa.select(self.runs).where(self.runs.c.status == status.value).order_by(self.runs.c.id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [run_from_row(row) for row in rows]

    async def list_events_since(self, run_id: str, sequence: int) -> list[EventRecord]:
        table = self.events
        query = (
            sa.select(table)
            .where(table.c.run_id == run_id, table.c.sequence > sequence)
            .order_by(table.c.sequence)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [event_from_row(row) for row in rows]


class DaemonDB:
    """This library."""

    name = "daemon_db"
    is_async = True

    async def open(self, path: Path) -> None:
        self.db = await DB.open(path)

    async def close(self) -> None:
        await self.db.close()

    async def create_run(self, run: Run) -> Run:
        return await self.db.create_run(run)

    async def get_run(self, run_id: str) -> Run | None:
        return await self.db.get_run(run_id)

    async def update_run_status(self, run_id: str, status: RunStatus) -> Run:
        return await self.db.update_run_status(run_id, status)

    async def update_unit_status(self, unit_id: str, status: UnitStatus) -> object:
        return await self.db.update_unit_status(unit_id, status)

    async def append_event(self, run_id: str, payload: object) -> EventRecord:
        return await self.db.append_event(run_id, "progress", payload=payload)

    async def list_runs_by_status(self, status: RunStatus) -> list[Run]:
        return await self.db.list_runs_by_status(status)

    async def list_events_since(self, run_id: str, sequence: int) -> list[EventRecord]:
        return await self.db.list_events_since(run_id, sequence)

    def iter_events(self, run_id: str, sequence: int) -> AsyncIterator[EventRecord]:
        return self.db.iter_events(run_id, sequence)


STORES = (RawSqlite, StraightAiosqlite, SqlAlchemyCore, DaemonDB)
