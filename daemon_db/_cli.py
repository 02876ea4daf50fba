"""The ``daemon-db`` command line: look inside a daemon's state, check it, copy it, prune it.

Inspection commands open the database read-only, so they are safe beside a
running daemon, and never create a file. User errors are one line on stderr
and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, fields
from datetime import timedelta
from typing import TextIO

from . import _output as output
from . import _timestamps as timestamps
from ._db import DB
from ._errors import DaemonDBError, SchemaVersionError
from ._records import EventRecord, RunStatus, UnitStatus

__all__ = ["main"]

RUN_COLUMNS = ["id", "status", "feature_branch", "repo_path", "started_at", "completed_at", "error"]
UNIT_COLUMNS = ["unit_id", "status", "branch", "started_at", "completed_at", "error"]
EVENT_COLUMNS = ["sequence", "created_at", "event_type", "unit_id", "payload_json"]
DURATION = re.compile(r"(\d+)([wdhms])")
UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


class UsageError(Exception):
    """A mistake on the command line, reported as one line."""


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if not args.db:
        print("daemon-db: error: no database: pass --db PATH or set DAEMON_DB", file=sys.stderr)
        return 2
    try:
        status: int = asyncio.run(args.run(args))
        sys.stdout.flush()
    except (UsageError, DaemonDBError) as exc:
        print(f"daemon-db: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status


# Inspection: read-only, never creating a file.


async def runs(args: argparse.Namespace) -> int:
    async with DB.open(args.db, readonly=True) as db:
        found = await db.list_runs(
            status=args.status,
            feature_branch=args.branch,
            repo_path=args.repo,
            limit=args.limit,
            after=args.after,
            newest_first=args.newest_first,
        )
    output.write([output.as_row(run) for run in found], args.form, sys.stdout, RUN_COLUMNS)
    return 0


async def show(args: argparse.Namespace) -> int:
    async with DB.open(args.db, readonly=True) as db:
        run = await db.get_run(args.run_id)
        if run is None:
            raise UsageError(f"no run with id {args.run_id!r} in {args.db}")
        units = await db.list_units_by_run(run.id)
        count = await db.get_next_sequence(run.id) - 1
        latest = await db.list_events_since(run.id, max(0, count - args.events))
    if args.form == "json":
        shown = {
            "run": output.as_row(run),
            "units": [output.as_row(unit) for unit in units],
            "events": count,
            "latest_events": [output.as_row(event) for event in latest],
        }
        sys.stdout.write(json.dumps(shown, indent=2) + "\n")
        return 0
    for name, value in output.as_row(run).items():
        sys.stdout.write(f"{name:15} {'' if value is None else value}\n")
    sys.stdout.write(f"\nunits: {len(units)}\n")
    output.write([output.as_row(unit) for unit in units], "table", sys.stdout, UNIT_COLUMNS)
    sys.stdout.write(f"\nevents: {count}, the latest {len(latest)}:\n")
    output.write([output.as_row(event) for event in latest], "table", sys.stdout, EVENT_COLUMNS)
    return 0


async def events(args: argparse.Namespace) -> int:
    async with DB.open(args.db, readonly=True) as db:
        if not args.follow:
            if await db.get_run(args.run_id) is None:
                raise UsageError(f"no run with id {args.run_id!r} in {args.db}")
            found = await db.list_events_since(args.run_id, args.since)
            rows = [output.as_row(event) for event in found]
            output.write(rows, args.form, sys.stdout, EVENT_COLUMNS)
            return 0
        stream = _Stream(args.form, sys.stdout)
        try:
            async for event in db.follow_events(args.run_id, args.since):
                stream.write(event)
        finally:
            stream.close()
    return 0


async def resumable(args: argparse.Namespace) -> int:
    async with DB.open(args.db, readonly=True) as db:
        found = await db.resumable_runs()
    rows = []
    for item in found:
        done = sum(unit.status is UnitStatus.COMPLETED for unit in item.units)
        in_flight = [unit.unit_id for unit in item.units if unit.status is UnitStatus.RUNNING]
        rows.append(
            {
                **output.as_row(item.run, ["id", "status", "feature_branch", "repo_path"]),
                "units_completed": f"{done}/{len(item.units)}",
                "units_running": ", ".join(in_flight),
                "next_sequence": item.next_sequence,
            }
        )
    output.write(rows, args.form, sys.stdout)
    return 0


async def stats(args: argparse.Namespace) -> int:
    async with DB.open(args.db, readonly=True) as db:
        figures = await db.stats()
    if args.form == "json":
        sys.stdout.write(json.dumps(asdict(figures), indent=2) + "\n")
        return 0
    lines = {
        "path": figures.path,
        "schema version": figures.schema_version,
        "file size": f"{figures.file_bytes:,} bytes (WAL {figures.wal_bytes:,} bytes)",
        "runs": ", ".join(f"{status} {n}" for status, n in figures.runs.items()),
        "units": ", ".join(f"{status} {n}" for status, n in figures.units.items()),
        "events": f"{figures.events:,}",
    }
    for name, value in lines.items():
        sys.stdout.write(f"{name:15} {value}\n")
    return 0


async def check(args: argparse.Namespace) -> int:
    async with DB.open(args.db, readonly=True) as db:
        problems = await db.check()
    for problem in problems:
        sys.stdout.write(f"{problem}\n")
    if problems:
        return 1
    sys.stdout.write(
        "ok: integrity, foreign keys, schema version, one active run per branch and repo,"
        " gap-free event sequences\n"
    )
    return 0


# Changes: these open the file read-write, but never create it.


async def migrate(args: argparse.Namespace) -> int:
    _must_exist(args.db)
    try:
        async with DB.open(args.db, readonly=True):
            pass
    except SchemaVersionError as exc:
        if exc.found > exc.supported:
            raise
        async with DB.open(args.db):
            pass
        sys.stdout.write(f"migrated {args.db} from schema version {exc.found} to {exc.supported}\n")
        return 0
    sys.stdout.write(f"{args.db} is at the current schema version: nothing to do\n")
    return 0


async def backup(args: argparse.Namespace) -> int:
    if not args.force:
        _must_not_exist(args.destination)
    on_terminal = sys.stderr.isatty()

    def progress(copied: int, total: int) -> None:
        if on_terminal:
            sys.stderr.write(f"\rcopied {copied:,} of {total:,} pages")

    async with DB.open(args.db, readonly=True) as db:
        pages = await db.backup(args.destination, overwrite=args.force, progress=progress)
    if on_terminal:
        sys.stderr.write("\n")
    sys.stdout.write(f"copied {args.db} to {args.destination} ({pages:,} pages)\n")
    return 0


async def prune(args: argparse.Namespace) -> int:
    _must_exist(args.db)
    cutoff = timestamps.now() - args.older_than
    async with DB.open(args.db, readonly=args.dry_run) as db:
        removed = await db.prune_runs(cutoff, dry_run=args.dry_run)
    rows = [output.as_row(run) for run in removed]
    output.write(rows, args.form, sys.stdout, RUN_COLUMNS)
    verb = "would remove" if args.dry_run else "removed"
    print(
        f"{verb} {len(removed)} finished run(s) completed before {timestamps.to_text(cutoff)}",
        file=sys.stderr,
    )
    return 0


def _must_exist(path: str) -> None:
    if not os.path.isfile(path):
        raise UsageError(f"{path}: no such database file")


def _must_not_exist(path: str) -> None:
    if os.path.exists(path):
        raise UsageError(f"{path} exists (pass --force to overwrite it)")


class _Stream:
    """Events printed one at a time as they arrive, in the chosen form."""

    def __init__(self, form: str, out: TextIO) -> None:
        self._form, self._out, self._count = form, out, 0
        names = [field.name for field in fields(EventRecord)]
        self._csv = csv.DictWriter(out, fieldnames=names, lineterminator="\n")

    def write(self, event: EventRecord) -> None:
        row = output.as_row(event)
        if self._form == "json":
            self._out.write(("[\n  " if self._count == 0 else ",\n  ") + json.dumps(row))
        elif self._form == "nl":
            self._out.write(json.dumps(row) + "\n")
        elif self._form == "csv":
            if self._count == 0:
                self._csv.writeheader()
            self._csv.writerow(row)
        else:
            unit = f"  unit {row['unit_id']}" if row["unit_id"] else ""
            line = f"{row['sequence']:>6}  {row['created_at']}  {row['event_type']}{unit}"
            self._out.write(f"{line}  {row['payload_json'] or ''}".rstrip() + "\n")
        self._count += 1
        self._out.flush()

    def close(self) -> None:
        if self._form == "json":
            self._out.write("\n]\n" if self._count else "[]\n")
        self._out.flush()


def _duration(text: str) -> timedelta:
    parts = DURATION.findall(text)
    if not parts or "".join(n + unit for n, unit in parts) != text:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration such as 30d, 12h, 90m or 1w2d"
        )
    return timedelta(**{UNITS[unit]: int(n) for n, unit in parts})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="daemon-db",
        description="Look inside a daemon_db state store, check it, back it up, prune it.",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    database = argparse.ArgumentParser(add_help=False)
    database.add_argument(
        "--db",
        metavar="PATH",
        default=os.environ.get("DAEMON_DB"),
        help="the database file (default: $DAEMON_DB)",
    )
    forms = argparse.ArgumentParser(add_help=False)
    form = forms.add_mutually_exclusive_group()
    form.set_defaults(form="table")
    form.add_argument(
        "--json", dest="form", action="store_const", const="json", help="a JSON array"
    )
    form.add_argument("--nl", dest="form", action="store_const", const="nl", help="JSON lines")
    form.add_argument("--csv", dest="form", action="store_const", const="csv", help="CSV")

    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", dest="form", action="store_const", const="json", help="JSON")

    def command(
        name: str, run: Callable[[argparse.Namespace], Awaitable[int]], text: str, forms_: str
    ) -> argparse.ArgumentParser:
        parents = {"all": [database, forms], "json": [database, as_json], "": [database]}
        sub = commands.add_parser(name, parents=parents[forms_], help=text, description=text)
        sub.set_defaults(run=run, form="table")
        return sub

    sub = command("runs", runs, "list runs, oldest first", "all")
    sub.add_argument(
        "--status",
        action="append",
        choices=[status.value for status in RunStatus],
        help="only runs in this status (repeat for several)",
    )
    sub.add_argument("--branch", help="only runs of this feature branch")
    sub.add_argument("--repo", help="only runs of this repository path")
    sub.add_argument("--limit", type=int, help="at most this many runs")
    sub.add_argument("--after", metavar="ID", help="the runs after this run id (paging)")
    sub.add_argument("--newest-first", action="store_true", help="newest run first")

    sub = command("show", show, "a run, its units, its event count and latest events", "json")
    sub.add_argument("run_id", metavar="RUN_ID")
    sub.add_argument("--events", type=int, default=10, metavar="N", help="latest events shown")

    sub = command("events", events, "a run's events; --follow tails them live", "all")
    sub.add_argument("run_id", metavar="RUN_ID")
    sub.add_argument("--since", type=int, default=0, metavar="N", help="events after sequence N")
    sub.add_argument(
        "--follow", action="store_true", help="keep printing new events until the run finishes"
    )

    command("resumable", resumable, "what a daemon starting now would resume", "all")
    command("stats", stats, "runs and units by status, events, file sizes, schema", "json")
    command("check", check, "check integrity, keys, schema and rules; exit 1 on a problem", "")
    command("migrate", migrate, "apply pending schema migrations (inspectors never do)", "")

    sub = command("backup", backup, "a consistent copy, safe while the daemon writes", "")
    sub.add_argument("destination", metavar="DEST", help="the file to write")
    sub.add_argument("--force", action="store_true", help="overwrite DEST if it exists")

    sub = command("prune", prune, "delete finished runs completed before a cutoff", "all")
    sub.add_argument(
        "--older-than",
        type=_duration,
        required=True,
        metavar="DURATION",
        help="completed longer ago than this: 30d, 12h, 90m, 1w2d",
    )
    sub.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    return parser
