"""``check()`` on PostgreSQL: what the server's own types and constraints cannot promise.

PostgreSQL checks its pages and enforces the schema's types, keys and checks,
so most of what SQLite's check looks for cannot be stored at all (a status
outside the five, a timestamp that is not one, a non-integer parallelism, a
second event with one sequence). What can still be wrong, because another
tool wrote it:

- the schema itself: a constraint or NOT NULL dropped, or added back ``NOT
  VALID`` over rows that break it; then the rules it enforced are checked on
  the rows too;
- references PostgreSQL did not check: foreign keys are triggers, which
  ``session_replication_role = replica`` (a replication tool, a restore)
  skips;
- values the types allow but daemon_db never writes: empty names, JSON that
  is not JSON, an owner's pid below 1 or a lease that never ends, and
  timestamps outside years 1 to 9999 (Python cannot hold them, so asyncpg
  cannot read them);
- the event log: gaps in a run's sequences, or a counter that disagrees with it.

Each is one scan of a table, from one snapshot (the read-only REPEATABLE READ
transaction every read runs in); JSON is parsed here, PostgreSQL 15 having no
way to test it without raising.
"""

from __future__ import annotations

import json
from typing import Any, Final

import asyncpg

from .._errors import show
from .._records import RunStatus, UnitStatus
from . import schema

__all__ = ["changed_at_open", "check"]

_HERE: Final = "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
"""This schema's oid (``current_schema()::regnamespace`` fails on a name that needs quoting)."""

_SHOWN: Final = 20
"""Damaged rows named per table; the rest are counted."""

CONSTRAINTS: Final = {
    "daemon_db_meta": ("daemon_db_meta_pkey", "daemon_db_meta_one_check"),
    "owners": ("owners_pkey",),
    "runs": (
        "runs_pkey",
        "runs_parallelism_check",
        "runs_status_check",
        "runs_owner_id_fkey",
        "runs_attempts_check",
        "runs_next_sequence_check",
    ),
    "units": ("units_pkey", "units_run_id_fkey", "units_status_check", "units_run_id_unit_id_key"),
    "events": (
        "events_pkey",
        "events_run_id_fkey",
        "events_sequence_check",
        "events_run_id_sequence_key",
    ),
}
"""The constraints migration 1 creates, by the names PostgreSQL gives them."""

UNIQUE_INDEXES: Final = ("runs_one_active",)

NOT_NULL: Final = {
    "owners": ("id", "name", "host", "machine", "pid", "lease_until"),
    "runs": (
        "id",
        "repo_path",
        "target_branch",
        "tasks_dir",
        "status",
        "daemon_version",
        "config_json",
        "attempts",
        "next_sequence",
    ),
    "units": ("id", "run_id", "unit_id", "status"),
    "events": ("id", "run_id", "sequence", "event_type", "created_at"),
}

# asyncpg reads a timestamptz into a datetime, whose years are 1 to 9999 (in
# UTC); infinity and -infinity it reads as datetime.max and datetime.min.
_READABLE = (
    "BETWEEN '0001-01-01 00:00:00+00' AND '9999-12-31 23:59:59.999999+00'"
    " OR {0} IN ('infinity', '-infinity')"
)


def _name(column: str, *, optional: bool = False) -> str:
    bad = f"{column} IS NULL OR trim({column}) = ''"
    return f"{column} IS NOT NULL AND trim({column}) = ''" if optional else bad


def _timestamp(column: str, *, optional: bool = True) -> str:
    bad = f"NOT ({column} {_READABLE.format(column)})"
    return f"{column} IS NOT NULL AND {bad}" if optional else f"{column} IS NULL OR {bad}"


def _one_of(column: str, values: Any) -> str:
    return f"{column} IS NULL OR {column} NOT IN ({', '.join(repr(v.value) for v in values)})"


_VALUES: Final = {
    "runs": {
        "id": _name("id"),
        "feature_branch": _name("feature_branch", optional=True),
        "repo_path": _name("repo_path"),
        "target_branch": _name("target_branch"),
        "tasks_dir": _name("tasks_dir"),
        "parallelism": "parallelism < 1",
        "status": _one_of("status", RunStatus),
        "daemon_version": "daemon_version IS NULL",
        "started_at": _timestamp("started_at"),
        "completed_at": _timestamp("completed_at"),
        "attempts": "attempts IS NULL OR attempts < 0",
        "next_sequence": "next_sequence IS NULL OR next_sequence < 1",
    },
    "units": {
        "id": _name("id"),
        "run_id": "run_id IS NULL",
        "unit_id": _name("unit_id"),
        "status": _one_of("status", UnitStatus),
        "branch": _name("branch", optional=True),
        "worktree_path": _name("worktree_path", optional=True),
        "started_at": _timestamp("started_at"),
        "completed_at": _timestamp("completed_at"),
    },
    # An owner whose lease is infinity, or more than a year away (MAX_LEASE, and
    # a day for clocks), is alive for good: daemon_db never writes it (a crashed
    # owner's lease is set to -infinity).
    "owners": {
        "id": _name("id"),
        "name": _name("name"),
        "machine": _name("machine"),
        "pid": "pid IS NULL OR pid < 1",
        "lease_until": "lease_until IS NULL OR lease_until > now() + interval '366 days'",
    },
    "events": {
        "run_id": "run_id IS NULL",
        "sequence": "sequence IS NULL OR sequence < 1",
        "event_type": _name("event_type"),
        "created_at": _timestamp("created_at", optional=False),
    },
}
"""For each table, each column's rule broken: values daemon_db never writes."""

_JSON: Final = (
    ("runs", "config_json", "SELECT id, config_json FROM runs", True),
    (
        "events",
        "payload_json",
        "SELECT id, payload_json FROM events WHERE payload_json IS NOT NULL",
        False,
    ),
)
"""Columns holding JSON text: (table, column, query, whether it must be an object)."""


async def check(conn: Any) -> list[str]:
    """Everything wrong with the database, one line each: [] when all is well."""
    problems = await _marker(conn)
    encoding = await schema.encoding_problem(conn)
    if encoding is not None:
        problems.append(f"encoding: {encoding}")
    parts = [
        (_schema, "schema"),
        (_references, "foreign key"),
        (_one_active, "one active run"),
        (_sequences, "sequences"),
        (_damaged_values, "damaged value"),
        (_damaged_json, "damaged value"),
    ]
    if encoding is not None and schema.server_encoding(conn) == "SQL_ASCII":
        parts.insert(0, (_not_utf8, "damaged value"))
    for part, name in parts:
        try:
            async with conn.transaction():  # a savepoint: the check goes on after one fails
                problems += await part(conn)
        except asyncpg.CharacterNotInRepertoireError:
            problems.append(f"{name}: not checked, as it reads text that is not UTF-8")
        except asyncpg.PostgresError as exc:
            if not str(getattr(exc, "sqlstate", "")).startswith(_NOT_AS_OURS):
                raise
            # Another tool renamed or retyped a column the part reads: say so, go on.
            reason = str(exc).strip().splitlines()[0]
            problems.append(f"{name}: not checked: {reason} (SQLSTATE {exc.sqlstate})")
    return problems


_NOT_AS_OURS: Final = ("42", "22")
"""SQLSTATE classes of a query meeting a schema or data not as daemon_db made them
(an undefined column, a type without ordering; a value it cannot convert)."""


_NO_TEXT: Final = ("B", "D", "G", "I", "N", "T", "V")
"""``pg_type`` categories that hold no text: boolean, date and time, geometric,
network, numeric, timespan, bit string. Every other column may (another tool
may retype one of ours, to ``jsonb`` or ``name``, or add its own)."""


async def _not_utf8(conn: Any) -> list[str]:
    """Text that is not UTF-8, which a ``SQL_ASCII`` database lets another tool store.

    The server then refuses to send the row to a UTF-8 client (SQLSTATE
    22021), so each column is read as its bytes (``convert_to`` into the
    database's own encoding changes nothing), and only where a byte is not
    ASCII: valid UTF-8 is let be.
    """
    problems: list[str] = []
    columns: dict[str, list[tuple[str, str]]] = {}
    for table, column, category in await conn.fetch(
        "SELECT c.relname::text, a.attname::text, t.typcategory::text FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_type t ON t.oid = a.atttypid"
        f" WHERE c.relnamespace = {_HERE} AND c.relname = ANY($1::text[])"
        " AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY array_position($1::text[], c.relname::text), a.attnum",
        [table for table in schema.TABLES if table != "daemon_db_meta"],
    ):
        columns.setdefault(table, []).append((column, category))
    for table, found in columns.items():
        names = [column for column, category in found if category not in _NO_TEXT]
        if not names:
            continue
        key = _row_key(dict(found).get("id"))
        texts = [f"{_quoted(name)}::text" for name in names]
        as_bytes = ", ".join(f"convert_to({text}, 'SQL_ASCII')" for text in texts)
        beyond_ascii = " OR ".join(rf"{text} ~ E'[\\x80-\\xff]'" for text in texts)
        query = f"SELECT {key}, {as_bytes} FROM {table} WHERE {beyond_ascii} ORDER BY 1"
        damaged = 0
        async for record_id, *values in conn.cursor(query, prefetch=1000):
            for name, value in zip(names, values, strict=True):
                if value is None or _utf8(value) is not value:
                    continue
                damaged += 1
                if damaged <= _SHOWN:
                    shown_id = _utf8(record_id) if type(record_id) is bytes else record_id
                    problems.append(
                        f"damaged value: {table} row {show(shown_id)}:"
                        f" {name}={show(value)} is not UTF-8 text"
                    )
        if damaged > _SHOWN:
            problems.append(f"damaged value: {damaged - _SHOWN} more values in {table}")
    return problems


def _row_key(category: str | None) -> str:
    """How ``_not_utf8`` names a row, by the ``id`` column's type category (None: no id).

    A number as it is (events'), text as its bytes, anything else as its text;
    without an id (another tool renamed it), the row's place in the table.
    """
    if category is None:
        return "ctid::text"
    if category == "N":
        return "id"
    return "convert_to(id::text, 'SQL_ASCII')"


def _quoted(name: str) -> str:
    """A column's name as SQL names it (another tool's may need quotes: "Note", "order")."""
    return '"' + name.replace('"', '""') + '"'


def _utf8(raw: bytes) -> str | bytes:
    """Bytes as text, or as they are if they are not UTF-8 (shown so, as on SQLite)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


async def _marker(conn: Any) -> list[str]:
    row = await conn.fetchrow("SELECT application, version FROM daemon_db_meta")
    if row is not None and (row[0], row[1]) == (schema.APPLICATION, schema.SCHEMA_VERSION):
        return []
    return [
        f"schema: {tuple(row) if row else 'no marker'}; expected"
        f" ({schema.APPLICATION!r}, {schema.SCHEMA_VERSION})"
    ]


async def _schema(conn: Any) -> list[str]:
    """Constraints, unique indexes and NOT NULLs of the schema that are gone or not valid."""
    problems: list[str] = []
    found = {
        (row[0], row[1]): row[2]
        for row in await conn.fetch(
            "SELECT conrelid::regclass::text, conname, convalidated FROM pg_constraint"
            f" WHERE connamespace = {_HERE}"
        )
    }
    for table, names in CONSTRAINTS.items():
        for name in names:
            valid = found.get((table, name))
            if valid is None:
                problems.append(f"schema: constraint {name} of {table} is missing")
            elif not valid:
                problems.append(
                    f"schema: constraint {name} of {table} is NOT VALID: rows may break it"
                )
    problems += await changed_at_open(conn)
    nullable = {
        (row[0], row[1])
        for row in await conn.fetch(
            "SELECT table_name::text, column_name::text FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND is_nullable = 'YES'"
        )
    }
    for table, columns in NOT_NULL.items():
        for column in columns:
            if (table, column) in nullable:
                problems.append(f"schema: {table}.{column} has lost its NOT NULL")
    return problems


async def changed_at_open(conn: Any) -> list[str]:
    """What another tool changed that would lose writes or lift a rule: a read-write open refuses.

    A trigger or rule of its own on one of daemon_db's tables may stop or change
    any write (a ``BEFORE INSERT`` trigger returning NULL drops an event its
    append acknowledges); without its unique index, two active runs of a branch
    are let in. A dropped check or NOT NULL lets in values that reads then
    report as damaged, and is left to ``check()``.
    """
    problems: list[str] = []
    indexes = {
        row[0]: row[1]
        for row in await conn.fetch(
            "SELECT c.relname, i.indisunique AND i.indisvalid FROM pg_index i"
            " JOIN pg_class c ON c.oid = i.indexrelid"
            f" WHERE c.relnamespace = {_HERE}"
        )
    }
    for name in UNIQUE_INDEXES:
        if not indexes.get(name, False):
            problems.append(f"schema: unique index {name} is missing or not valid")
    for table, kind, name in await conn.fetch(
        "SELECT c.relname::text, 'trigger', t.tgname::text FROM pg_trigger t"
        " JOIN pg_class c ON c.oid = t.tgrelid"
        f" WHERE NOT t.tgisinternal AND c.relnamespace = {_HERE}"
        " AND c.relname = ANY($1::text[])"
        " UNION ALL SELECT tablename::text, 'rule', rulename::text FROM pg_rules"
        " WHERE schemaname = current_schema() AND tablename = ANY($1::text[])"
        " ORDER BY 1, 2, 3",
        list(schema.TABLES),
    ):
        problems.append(
            f"schema: {kind} {name} on {table} is not daemon_db's (another tool added it)"
        )
    return problems


async def _references(conn: Any) -> list[str]:
    """Rows that refer to a missing row (foreign keys are triggers, which can be skipped)."""
    problems: list[str] = []
    for table, column, parent in (
        ("units", "run_id", "runs"),
        ("events", "run_id", "runs"),
        ("runs", "owner_id", "owners"),
    ):
        for record_id, value in await conn.fetch(
            f"SELECT t.id, t.{column} FROM {table} t WHERE t.{column} IS NOT NULL"
            f" AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.id = t.{column})"
            f" ORDER BY t.id LIMIT {_SHOWN}"
        ):
            problems.append(
                f"foreign key: {table} row {show(record_id)} refers to a missing {parent} row"
                f" ({column}={show(value)})"
            )
    return problems


async def _one_active(conn: Any) -> list[str]:
    # As the index has it: a run without a branch is nobody's rival.
    return [
        f"one active run: {count} active runs on {show(branch)} in {show(repo)}"
        f" ({first} ... {last})"
        for branch, repo, count, first, last in await conn.fetch(
            'SELECT feature_branch, repo_path, COUNT(*), MIN(id COLLATE "C"), MAX(id COLLATE "C")'
            " FROM runs WHERE status IN ('pending', 'running') AND feature_branch IS NOT NULL"
            " GROUP BY feature_branch, repo_path HAVING COUNT(*) > 1"
        )
    ]


async def _sequences(conn: Any) -> list[str]:
    """Each run's events numbered 1, 2, ... without a gap, and its counter one past the last."""
    return [
        f"sequences: run {run_id} has {count} events ({distinct} sequences, from {lowest}"
        f" up to {highest}), next sequence {following}"
        for run_id, count, distinct, lowest, highest, following in await conn.fetch(
            "SELECT runs.id, COUNT(events.id), COUNT(DISTINCT events.sequence),"
            " COALESCE(MIN(events.sequence), 1), COALESCE(MAX(events.sequence), 0),"
            " runs.next_sequence FROM runs LEFT JOIN events ON events.run_id = runs.id"
            " GROUP BY runs.id HAVING COUNT(events.id) <> COALESCE(MAX(events.sequence), 0)"
            " OR COUNT(DISTINCT events.sequence) <> COUNT(events.id)"
            " OR COALESCE(MIN(events.sequence), 1) <> 1"
            " OR runs.next_sequence IS DISTINCT FROM COALESCE(MAX(events.sequence), 0) + 1"
            ' ORDER BY runs.id COLLATE "C"'
        )
    ]


async def _damaged_values(conn: Any) -> list[str]:
    """Stored values that break the store's rules: one scan a table, columns found after.

    Values are read back as text, so that a timestamp asyncpg cannot read is shown too.
    """
    problems: list[str] = []
    for table, rules in _VALUES.items():
        anything = " OR ".join(f"({condition})" for condition in rules.values())
        rows = await conn.fetch(
            f"SELECT id, count(*) OVER () FROM {table} WHERE {anything} LIMIT {_SHOWN}"
        )
        hits = ", ".join(f"({condition}) IS TRUE" for condition in rules.values())
        values = ", ".join(f"{column}::text" for column in rules)
        for record_id, _ in rows:
            found = await conn.fetchrow(
                f"SELECT ARRAY[{hits}], {values} FROM {table} WHERE id = $1", record_id
            )
            for index, column in enumerate(rules):
                if found[0][index]:
                    problems.append(
                        f"damaged value: {table} row {show(record_id)}: {column}="
                        f"{show(found[index + 1])} is not what daemon_db writes"
                    )
        if rows and rows[0][1] > len(rows):
            problems.append(f"damaged value: {rows[0][1] - len(rows)} more rows in {table}")
    return problems


async def _damaged_json(conn: Any) -> list[str]:
    """JSON columns whose text is not JSON (or, for a run's config, not an object)."""
    problems: list[str] = []
    for table, column, query, an_object in _JSON:
        damaged = 0
        async for record_id, text in conn.cursor(query, prefetch=1000):
            if text is not None and _json(text, an_object=an_object):
                continue
            damaged += 1
            if damaged <= _SHOWN:
                problems.append(
                    f"damaged value: {table} row {show(record_id)}: {column}={show(text)}"
                    " is not what daemon_db writes"
                )
        if damaged > _SHOWN:
            problems.append(f"damaged value: {damaged - _SHOWN} more rows in {table}")
    return problems


def _json(text: str, *, an_object: bool) -> bool:
    try:
        value = json.loads(text)
    except ValueError:
        return False
    return isinstance(value, dict) or not an_object
