"""The four stores measured, each doing the same work on the same schema and PRAGMAs.

- ``sqlite3``: daemon_db's own SQL functions called synchronously on a plain
  sqlite3 connection, each write in its own transaction: the floor.
- ``aiosqlite``: hand-written code as aiosqlite's README shows it: ``execute``
  then ``commit`` per write, ``async with db.execute(...) as cursor`` and
  ``fetchone``/``fetchall`` for reads, rows mapped to records on the loop.
- ``sqlalchemy``: SQLAlchemy 2 async Core on aiosqlite, as Prefect-style code
  uses it, with SQLAlchemy's documented recipe for ``BEGIN IMMEDIATE``.
- ``daemon_db``: this library.

Each store's methods return the records daemon_db returns, so that every store
pays for the same mapping. The sqlite3 store's methods are plain functions.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from daemon_db import DB, EventRecord, Run, RunStatus, UnitStatus
from daemon_db import _timestamps as timestamps
from daemon_db._sqlite import events, runs, units

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
        return self._write(partial(runs.create, run=run, owner_id=None))

    def get_run(self, run_id: str) -> Run | None:
        return runs.get(self.conn, run_id=run_id)

    def update_run_status(self, run_id: str, status: RunStatus) -> Run:
        return self._write(partial(runs.update_status, run_id=run_id, status=status, error=None))

    def update_unit_status(self, unit_id: str, status: UnitStatus) -> object:
        return self._write(
            partial(units.update_status, unit_record_id=unit_id, status=status, error=None)
        )

    def append_event(self, run_id: str, payload: object) -> EventRecord:
        text = json.dumps(payload, separators=(",", ":"))
        return self._write(
            partial(events.append, run_id=run_id, event_type="progress", unit_id=None, payload=text)
        )

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


class NaiveAiosqlite:
    """aiosqlite used the usual way: one await per statement, rows mapped on the loop."""

    name = "aiosqlite"
    is_async = True

    async def open(self, path: Path) -> None:
        self.db = await aiosqlite.connect(path)
        for pragma in PRAGMAS:
            await self.db.execute(pragma)
        # One connection shared by many tasks: read-then-write must not interleave.
        self.lock = asyncio.Lock()

    async def close(self) -> None:
        await self.db.close()

    async def create_run(self, run: Run) -> Run:
        row = stored_row(run)
        await self.db.execute(f"INSERT INTO runs ({RUN_COLUMNS}) VALUES ({'?, ' * 11}?)", row)
        await self.db.commit()
        return run_from_row(row)

    async def get_run(self, run_id: str) -> Run | None:
        async with self.db.execute(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,)) as c:
            row = await c.fetchone()
        return None if row is None else run_from_row(row)

    async def update_run_status(self, run_id: str, status: RunStatus) -> Run | None:
        async with self.lock:
            sql = "SELECT status, started_at, completed_at FROM runs WHERE id = ?"
            async with self.db.execute(sql, (run_id,)) as cursor:
                row = await cursor.fetchone()
            started_at, completed_at = _status_change(row, status.value, status in FINISHED)
            await self.db.execute(
                "UPDATE runs SET status = ?, error = NULL, started_at = ?, completed_at = ?"
                " WHERE id = ?",
                (status.value, started_at, completed_at, run_id),
            )
            await self.db.commit()
        return await self.get_run(run_id)

    async def update_unit_status(self, unit_id: str, status: UnitStatus) -> object:
        async with self.lock:
            sql = "SELECT status, started_at, completed_at FROM units WHERE id = ?"
            async with self.db.execute(sql, (unit_id,)) as cursor:
                row = await cursor.fetchone()
            finished = status in (UnitStatus.COMPLETED, UnitStatus.FAILED)
            started_at, completed_at = _status_change(row, status.value, finished)
            await self.db.execute(
                "UPDATE units SET status = ?, error = NULL, started_at = ?, completed_at = ?"
                " WHERE id = ?",
                (status.value, started_at, completed_at, unit_id),
            )
            await self.db.commit()
        return row

    async def append_event(self, run_id: str, payload: object) -> EventRecord:
        text = json.dumps(payload, separators=(",", ":"))
        created_at = timestamps.to_text(timestamps.now())
        async with self.lock:
            sql = "SELECT COALESCE(MAX(sequence), 0) + 1 FROM events WHERE run_id = ?"
            async with self.db.execute(sql, (run_id,)) as cursor:
                (sequence,) = await cursor.fetchone()  # type: ignore[misc]
            cursor = await self.db.execute(
                "INSERT INTO events (run_id, sequence, event_type, unit_id, payload_json,"
                " created_at) VALUES (?, ?, 'progress', NULL, ?, ?)",
                (run_id, sequence, text, created_at),
            )
            await self.db.commit()
        row = (cursor.lastrowid, run_id, sequence, "progress", None, text, created_at)
        return event_from_row(row)

    async def list_runs_by_status(self, status: RunStatus) -> list[Run]:
        sql = f"SELECT {RUN_COLUMNS} FROM runs WHERE status = ? ORDER BY id"
        async with self.db.execute(sql, (status.value,)) as cursor:
            rows = await cursor.fetchall()
        return [run_from_row(row) for row in rows]

    async def list_events_since(self, run_id: str, sequence: int) -> list[EventRecord]:
        sql = (
            f"SELECT {EVENT_COLUMNS} FROM events WHERE run_id = ? AND sequence > ?"
            " ORDER BY sequence"
        )
        async with self.db.execute(sql, (run_id, sequence)) as cursor:
            rows = await cursor.fetchall()
        return [event_from_row(row) for row in rows]


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


STORES = (RawSqlite, NaiveAiosqlite, SqlAlchemyCore, DaemonDB)
