"""What each ``daemon-db`` command does, once its arguments are parsed (see ``_cli.py``).

Inspection commands open the database read-only and never create a file.
Listings stream: they ask the store for a page of rows at a time and write
each row as it comes, so a long listing is never held in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import sys
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from datetime import datetime
from typing import Final, TypeVar

from . import _output as output
from . import _terminal as terminal
from . import _timestamps as timestamps
from ._db import DB
from ._errors import (
    DaemonDBError,
    DamagedRecordError,
    DatabaseError,
    SchemaVersionError,
    StatusConflictError,
    show,
)
from ._owner import Held
from ._postgres import url
from ._records import (
    ACTIVE_RUN_STATUSES,
    EventRecord,
    PrunedRuns,
    ResumableRun,
    Run,
    RunStatus,
    Stats,
    UnitRecord,
    UnitStatus,
)
from ._sqlite import schema

__all__ = [
    "CommandError",
    "backup",
    "cancel",
    "check",
    "events",
    "fail",
    "migrate",
    "prune",
    "release",
    "resumable",
    "runs",
    "show_run",
    "stats",
]

T = TypeVar("T")

CANDIDATES_SHOWN: Final = 5
"""Run ids an ambiguous id lists before "and N more"."""

CHECKS_DONE: Final = (
    "integrity, foreign keys, schema version and objects, one active run per branch"
    " and repo, gap-free event sequences"
)


class CommandError(Exception):
    """A mistake the command can name: reported as one line, exit status 1."""


# Inspection: read-only, never creating a file.


async def runs(args: argparse.Namespace) -> int:
    """List runs, a page at a time; with ``--limit``, a hint names the next ``--after``."""
    async with _open(args) as db:
        after = None if args.after is None else await _run_id(db, args.after, "--after")
        found = db._iter_owned_runs(
            status=args.status,
            feature_branch=args.branch,
            repo_path=args.repo,
            # One more than shown: it says whether more follow.
            limit=None if args.limit is None else min(args.limit + 1, 2**63 - 1),
            after=after,
            newest_first=args.newest_first,
        )
        fields = (*output.RUN_FIELDS, *output.OWNERSHIP_FIELDS)
        listed = _listing(args, fields, output.run_table(timestamps.now()))
        last = await _write(found, listed, limit=args.limit, as_row=_owned_row)
    if last is not None:
        _note(f"more runs follow: add --after {last[0].id} to see them")
    return 0


def _owned_row(owned: tuple[Run, Held]) -> dict[str, object]:
    """A run as a row, with who holds it."""
    run, holder = owned
    return {
        **output.record_row(run),
        "owner": holder.owner,
        "owner_alive": holder.alive,
        "attempts": holder.attempts,
    }


async def _with_owners(db: DB, page: list[Run]) -> list[dict[str, object]]:
    """These runs as rows with who holds each; a run deleted meanwhile is left out."""
    held = await db._owners_of([run.id for run in page]) if page else {}
    return [_owned_row((run, held[run.id])) for run in page if run.id in held]


async def _write(
    rows: AsyncIterator[T],
    listed: output.Listing,
    *,
    limit: int | None = None,
    as_row: Callable[[T], output.Row] = output.record_row,
    live: bool = False,
) -> T | None:
    """Write ``rows`` (records, by default) up to ``limit``, then close the listing.

    Returns the last row written if more rows followed it (``limit`` cut the
    listing), else None. ``live`` sends each row on at once, for a follower.
    A listing an error (or Ctrl-C) stops is ``cut`` rather than closed.
    """
    try:
        more = await _copy(rows, listed, limit=limit, as_row=as_row, live=live)
    except (asyncio.CancelledError, KeyboardInterrupt):
        listed.cut()
        if not live:  # Ctrl-C is how a follower ends
            # A cut JSON array still parses: written to a file, it would pass for whole.
            _note(f"interrupted: the listing stops after {listed.count:,} rows")
        raise
    except BaseException:
        listed.cut()
        raise
    listed.close()
    return more


async def _copy(
    rows: AsyncIterator[T],
    listed: output.Listing,
    *,
    limit: int | None,
    as_row: Callable[[T], output.Row],
    live: bool,
) -> T | None:
    """``_write``'s rows into ``listed``: the last row written if more followed it."""
    last: T | None = None
    async with _closing(rows):
        iterator = aiter(rows)
        while True:
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                return None
            except DamagedRecordError:
                if limit is not None and listed.count >= limit:
                    return last  # the row that says more follow is damaged: more follow
                raise
            if limit is not None and listed.count >= limit:
                return last
            listed.add(as_row(item))
            last = item
            if live:
                listed.flush()


async def show_run(args: argparse.Namespace) -> int:
    """A run, its units, its event count and its latest events."""
    async with _open(args) as db:
        run = await db.get_run(await _run_id(db, args.run_id, "RUN_ID"))
        if run is None:  # deleted since its id was found
            raise CommandError(f"RUN_ID {show(args.run_id)}: no such run in {args.db}")
        units = await db.list_units_by_run(run.id)
        count = await db.get_next_sequence(run.id) - 1
        latest = db.iter_events(run.id, max(0, count - args.events))
        [owned] = await _with_owners(db, [run]) or [output.record_row(run)]
        if args.form in ("json", "nl"):
            await _show_as_json(owned, units, count, latest, args)
        elif args.form == "csv":
            output.write_report({**owned, "units": len(units), "events": count}, "csv", sys.stdout)
        else:
            await _show_for_people(run, owned, units, count, latest, args)
    return 0


async def _show_as_json(
    run: output.Row,
    units: list[UnitRecord],
    count: int,
    latest: AsyncIterator[EventRecord],
    args: argparse.Namespace,
) -> None:
    """One object; its latest events streamed into it (``--nl``: all on one line)."""
    indent = 2 if args.form == "json" else None
    head = {
        "run": output.as_data(run),
        "units": [output.as_data(output.record_row(unit)) for unit in units],
        "events": count,
    }
    sys.stdout.write(output.json_object_opening(head, "latest_events", indent))
    listed = output.JsonArray(sys.stdout, indent=indent, level=1, end="")
    await _write(latest, listed, limit=args.events)
    sys.stdout.write("\n}\n" if indent else "}\n")


async def _show_for_people(
    run: Run,
    owned: output.Row,
    units: list[UnitRecord],
    count: int,
    latest: AsyncIterator[EventRecord],
    args: argparse.Namespace,
) -> None:
    now = timestamps.now()
    _pairs([*_run_lines(run, now), ("owner", output.held_by(owned) or "nobody")])
    sys.stdout.write(f"\nunits: {len(units)}\n")
    await _write(
        _aiter(units), output.Table(sys.stdout, output.unit_table(now), colour=_colour(args))
    )
    sys.stdout.write(f"\nevents: {count}, the latest {min(count, args.events)}:\n")
    table = output.Table(sys.stdout, output.event_table(now), colour=_colour(args))
    await _write(latest, table, limit=args.events)


def _run_lines(run: Run, now: datetime) -> list[tuple[str, str]]:
    lines = []
    for name, value in output.as_text(output.record_row(run)).items():
        moment: datetime | None = getattr(run, name) if name.endswith("_at") else None
        text = "" if value is None else str(value)
        lines.append((name, text + (f" ({terminal.ago(moment, now)})" if moment else "")))
    lines.append(("duration", output.duration(output.record_row(run), now)))
    return lines


async def events(args: argparse.Namespace) -> int:
    """A run's events; ``--follow`` keeps printing them until the run finishes."""
    async with _open(args) as db:
        run_id = await _run_id(db, args.run_id, "RUN_ID")
        watched: contextlib.AbstractAsyncContextManager[object] = contextlib.nullcontext()
        if args.follow:
            held = await _say_if_nobody_runs(db, run_id)
            if held is not None:
                watched = _holder_watched(db, run_id, held)
            found = db.follow_events(run_id, args.since)
            listed = _listing(args, output.EVENT_FIELDS, [], stream=True)
        else:
            found = db.iter_events(run_id, args.since)
            listed = _listing(args, output.EVENT_FIELDS, output.event_table(timestamps.now()))
        chosen = _chosen_events(found, types=args.type, unit=args.unit)
        async with watched:
            last = await _write(chosen, listed, limit=args.limit, live=args.follow)
        if args.follow and last is None and await db.get_run(run_id) is None:
            # A follow ends when its run finishes, or when the run is gone.
            raise CommandError(f"run {run_id} was deleted (or pruned) while followed")
    if last is not None:
        _note(f"more events follow: add --since {last.sequence} to see them")
    return 0


async def _say_if_nobody_runs(db: DB, run_id: str) -> Held | None:
    """Before following an active run that no live daemon holds, say why nothing may come.

    Returns who holds the run, if it is active (None if it is not, or cannot be read).
    """
    try:
        run = await db.get_run(run_id)
    except DamagedRecordError:
        return None  # the follow reads only its status and events: let it go on as before
    if run is None or run.status not in ACTIVE_RUN_STATUSES:
        return None
    held = (await db._owners_of([run_id])).get(run_id)
    if held is not None and not held.alive:
        _note(f"run {run_id} is {run.status.value}, but {_nobody(held)}: {_FOLLOWING_ON}")
    return held


_FOLLOWING_ON: Final = "following until one resumes and ends it"

HOLDER_CHECKED_EVERY: Final = 1.0
"""Seconds between two looks at who holds a followed run."""


def _nobody(held: Held, *, before: Held | None = None) -> str:
    if held.owner is None:
        return "no daemon holds it" + (" any more" if before is not None else "")
    if before is not None and before.holder == held.holder:
        return f"its holder {held.owner} stopped"
    return f"its holder {held.owner} is not running"


@contextlib.asynccontextmanager
async def _holder_watched(db: DB, run_id: str, held: Held) -> AsyncIterator[None]:
    """While a run is followed, say when its holder stops, or another daemon resumes it.

    Without this, a follow of a run whose daemon was killed waits in silence.
    """
    watcher = asyncio.create_task(_watch_holder(db, run_id, held))
    try:
        yield
    finally:
        watcher.cancel()
        try:
            await watcher
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise


async def _watch_holder(db: DB, run_id: str, held: Held) -> None:
    while True:
        await asyncio.sleep(HOLDER_CHECKED_EVERY)
        try:
            now = (await db._owners_of([run_id])).get(run_id)
            if now is None:
                return  # deleted: the follow says so
            if now == held and now.holder == held.holder:
                continue
            run = await db.get_run(run_id)
        except DaemonDBError:
            continue  # a row another tool is mending, a lost session: look again
        if run is None or run.status not in ACTIVE_RUN_STATUSES:
            return  # finished (which lets it go): the follow ends
        change = _holder_change(run, before=held, now=now)
        held = now
        if change is not None:
            _note(change)


def _holder_change(run: Run, *, before: Held, now: Held) -> str | None:
    """What to say of a followed run whose holder changed, or None.

    Holders are compared by their owner id, new at each open: a daemon
    restarted under the same name is another holder, while one that stalled
    past its lease and renewed it is the same.
    """
    same = now.holder == before.holder
    if now.alive:
        if same and before.alive:
            return None
        if same:
            return f"run {run.id}: its holder {now.owner} is running again"
        return f"run {run.id} was resumed by {now.owner}"
    if same and not before.alive:
        return None
    return f"run {run.id} is {run.status.value}, but {_nobody(now, before=before)}: {_FOLLOWING_ON}"


async def _chosen_events(
    found: AsyncIterator[EventRecord], *, types: Iterable[str] | None, unit: str | None
) -> AsyncIterator[EventRecord]:
    wanted = None if types is None else frozenset(types)
    async with _closing(found):
        async for event in found:
            if wanted is not None and event.event_type not in wanted:
                continue
            if unit is not None and event.unit_id != unit:
                continue
            yield event


async def resumable(args: argparse.Namespace) -> int:
    """What a daemon starting now would resume; exit status 1 if a run's rows are damaged."""
    async with _open(args) as db:
        found = await db.resumable_runs()
    rows: list[dict[str, object]] = []
    left_out: list[DaemonDBError] = list(found.damaged)
    for item in found:
        try:
            rows.append(_resumable_row(item))
        except DaemonDBError as exc:  # a blob another tool wrote: no form shows it as text
            left_out.append(exc)
    listed = _listing(args, output.RESUMABLE_FIELDS, output.resumable_table())
    await _write(_aiter(rows), listed, as_row=dict)
    # A daemon would leave these runs where they are, or fail on them: say so,
    # apart from the listing, which one damaged run must not blank.
    for error in left_out:
        _note(f"left out: {error}")
    return 1 if left_out else 0


def _resumable_row(item: ResumableRun) -> dict[str, object]:
    run = output.record_row(item.run)
    units = [output.record_row(unit) for unit in item.units]
    return {
        "id": run["id"],
        "status": run["status"],
        "feature_branch": run["feature_branch"],
        "repo_path": run["repo_path"],
        "started_at": run["started_at"],
        "units": len(units),
        "units_completed": sum(unit["status"] is UnitStatus.COMPLETED for unit in units),
        "units_running": [
            unit["unit_id"] for unit in units if unit["status"] is UnitStatus.RUNNING
        ],
        "next_sequence": item.next_sequence,
        "owner": item.owner,
        "owner_alive": item.owner_alive,
        "attempts": item.attempt,
    }


async def stats(args: argparse.Namespace) -> int:
    """Runs and units by status, events, file sizes and schema version."""
    async with _open(args) as db:
        figures = await db.stats()
    if args.form != "table":
        output.write_report(output.record_row(figures), args.form, sys.stdout)
        return 0
    _pairs(_stats_lines(figures))
    return 0


def _stats_lines(figures: Stats) -> list[tuple[str, str]]:
    return [
        ("path", figures.path),
        ("schema version", str(figures.schema_version)),
        (
            ("database size", f"{figures.file_bytes:,} bytes")
            if url.is_url(figures.path)
            else ("file size", f"{figures.file_bytes:,} bytes (WAL {figures.wal_bytes:,} bytes)")
        ),
        ("runs", ", ".join(f"{status} {n}" for status, n in figures.runs.items())),
        ("units", ", ".join(f"{status} {n}" for status, n in figures.units.items())),
        ("events", f"{figures.events:,}"),
    ]


async def check(args: argparse.Namespace) -> int:
    """Check the file and the store's rules; exit status 1 when something is wrong."""
    async with _open(args) as db:
        with _progress(f"checking {args.db}") as progress:
            problems = await progress.spin(db.check(quick=args.quick))
    if args.form in ("json", "nl"):
        output.write_report({"ok": not problems, "problems": problems}, args.form, sys.stdout)
    elif args.form == "csv":
        listed = output.CsvRows(sys.stdout, ["problem"])
        await _write(_aiter(problems), listed, as_row=lambda problem: {"problem": problem})
    elif problems:
        for problem in problems:
            sys.stdout.write(terminal.safe(problem) + "\n")
    else:
        sys.stdout.write(f"ok: {CHECKS_DONE}\n")
    return 1 if problems else 0


# Changes: these open the file read-write, but never create it.


async def migrate(args: argparse.Namespace) -> int:
    """Apply pending schema migrations."""
    _must_be_a_file(args.db)
    try:
        async with DB.open(args.db, readonly=True):
            pass
    except SchemaVersionError as exc:
        if exc.found > exc.supported:
            raise
        with _progress(f"migrating {args.db}") as progress:
            db = await progress.spin(DB.open(args.db))
            await db.close()
        sys.stdout.write(f"migrated {args.db} from schema version {exc.found} to {exc.supported}\n")
        return 0
    except DatabaseError as exc:
        if "SQLITE_READONLY_ROLLBACK" not in exc.reason:
            raise
        # A killed writer's half-done write, in a file with a rollback journal
        # (a backup copy written to): no read-only open can get past it.
        await asyncio.to_thread(schema.roll_back_journal, args.db)
        sys.stdout.write(f"rolled back the half-done write a killed process left in {args.db}\n")
        return await migrate(args)  # then migrate it, if it needs it, and say so
    sys.stdout.write(f"{args.db} is at the current schema version: nothing to do\n")
    return 0


async def backup(args: argparse.Namespace) -> int:
    """A consistent copy of the database, safe while the daemon writes."""
    if url.is_url(args.db):
        raise CommandError(
            f"{url.shown_url(args.db)} is a PostgreSQL database: back it up with pg_dump"
            " (pg_dump --format=custom --file=DEST DBNAME), not daemon-db backup"
        )
    if not args.force:
        _must_not_exist(args.destination)
    async with _open(args) as db:
        with _progress("copying") as progress:

            def report(copied: int, total: int) -> None:
                progress.update(copied, total, "pages")

            pages = await db.backup(args.destination, overwrite=args.force, progress=report)
    sys.stdout.write(f"copied {args.db} to {args.destination} ({pages:,} pages)\n")
    return 0


async def prune(args: argparse.Namespace) -> int:
    """Delete finished runs completed before a cutoff (``--dry-run``: list them only)."""
    cutoff = timestamps.now() - args.older_than
    async with _open(args, readonly=args.dry_run) as db:
        with _progress("pruning") as progress:
            removed = await _prune(db, cutoff, dry_run=args.dry_run, progress=progress)
        freed = None
        if args.vacuum and not args.dry_run:
            with _progress("vacuuming") as progress:
                freed = await progress.spin(db.vacuum())
    listed = _listing(args, output.RUN_FIELDS, output.run_table(timestamps.now()))
    await _write(_aiter(removed), listed)
    verb = "would remove" if args.dry_run else "removed"
    _note(f"{verb} {len(removed)} finished run(s) completed before {timestamps.to_text(cutoff)}")
    if freed is not None:
        _note(_shrank(args, freed))
    for error in removed.damaged:
        _note(f"left: {error}")
    return 1 if removed.damaged else 0


async def vacuum(args: argparse.Namespace) -> int:
    """Give the space freed by prunes back to the system."""
    async with _open(args, readonly=False) as db:
        with _progress("vacuuming") as progress:
            freed = await progress.spin(db.vacuum())
    _note(_shrank(args, freed))
    return 0


def _shrank(args: argparse.Namespace, freed: int) -> str:
    # PostgreSQL's VACUUM makes space reusable; its size also moves by itself.
    what = "the database's size changed" if url.is_url(args.db) else "the file shrank"
    return f"vacuum: {what} by {freed:,} bytes"


async def _prune(
    db: DB, cutoff: datetime, *, dry_run: bool, progress: terminal.Progress
) -> PrunedRuns:
    if dry_run or not progress.shown:
        return await progress.spin(db.prune_runs(cutoff, dry_run=dry_run))
    # For a bar that moves: how many a dry run finds, then the prune, which
    # says how many it has removed after each batch.
    candidates = len(await progress.spin(db.prune_runs(cutoff, dry_run=True)))
    removed = await db._prune(
        cutoff,
        dry_run=False,
        progress=lambda done: progress.update(done, candidates, "runs"),
    )
    progress.update(len(removed), candidates, "runs")
    return removed


# Operators' writes: explicit commands that say what they changed.


async def release(args: argparse.Namespace) -> int:
    """Hand a run held by a stuck owner back, for the next daemon's claim to take."""
    async with _open(args, readonly=False) as db:
        run_id = await _run_id(db, args.run_id, "RUN_ID")
        taken = "the next claim takes it"
        alive = await _alive_holder(db, run_id)
        held_by = await db.release_run(run_id)
        try:
            run = await db.get_run(run_id)
        except DamagedRecordError:  # released all the same; claims report it, not take it
            taken = "its row is damaged, so no claim takes it until it is mended (see check)"
        else:
            if run is not None and run.status not in ACTIVE_RUN_STATUSES:
                # Finished runs are held by nobody; an earlier release left some held.
                taken = f"it is {run.status.value}, so no claim takes it"
    if held_by is None:
        sys.stdout.write(f"run {terminal.safe(run_id)} was held by nobody: nothing changed\n")
    else:
        shown = terminal.safe(run_id)  # another tool may have written it
        sys.stdout.write(f"released run {shown} (held by {terminal.safe(held_by)}): {taken}\n")
    if alive is not None:
        _note(
            f"{alive} held it and is alive; it is not told, so unless it is stuck it goes"
            " on working the run, as will the daemon that claims it"
        )
    return 0


async def fail(args: argparse.Namespace) -> int:
    """Finish a run nobody will finish as failed, with the reason given."""
    return await _finish(args, RunStatus.FAILED, args.reason)


async def cancel(args: argparse.Namespace) -> int:
    """Finish a run nobody will finish as cancelled."""
    return await _finish(args, RunStatus.CANCELLED, args.reason)


async def _finish(args: argparse.Namespace, status: RunStatus, reason: str | None) -> int:
    """complete_run, which never overwrites a run that finished meanwhile."""
    async with _open(args, readonly=False) as db:
        run_id = await _run_id(db, args.run_id, "RUN_ID")
        before = await db.get_run(run_id)
        alive = await _alive_holder(db, run_id)
        try:
            run = await db.complete_run(run_id, status, error=reason)
        except StatusConflictError as exc:
            raise CommandError(
                f"run {run_id} is already {exc.current}: left as it is (nothing changed)"
            ) from None
    if before is not None and before.status is status:
        sys.stdout.write(f"run {terminal.safe(run_id)} was already {status}: nothing changed\n")
    else:
        was = before.status if before else "?"
        sys.stdout.write(f"{status} run {terminal.safe(run_id)} (it was {was})\n")
        if alive is not None:
            _note(
                f"{alive} held it and is alive; it is not told, and finds out at its next"
                " compare-and-set on the run (a StatusConflictError)"
            )
    assert run.status is status
    return 0


async def _alive_holder(db: DB, run_id: str) -> str | None:
    """The name of the live owner holding the run, if one does: an operator's write
    on its run goes behind its back."""
    held = (await db._owners_of([run_id])).get(run_id)
    return held.owner if held is not None and held.alive else None


# Shared steps


@contextlib.asynccontextmanager
async def _open(args: argparse.Namespace, *, readonly: bool = True) -> AsyncIterator[DB]:
    """Open ``--db``, which must be an existing file; say how to migrate one that needs it."""
    _must_be_a_file(args.db)
    try:
        db = await DB.open(args.db, readonly=readonly)
    except SchemaVersionError as exc:
        if exc.found >= exc.supported:
            raise
        how = f"run: daemon-db migrate --db {shlex.quote(args.db)}"
        if exc.found == 0:
            raise CommandError(f"{args.db} is not a daemon_db database yet ({how})") from None
        raise CommandError(
            f"{args.db} is at schema version {exc.found} and needs migrating to"
            f" {exc.supported} ({how}; the daemon also does when it opens the file)"
        ) from None
    try:
        yield db
    finally:
        # A command's DB holds no runs: a close that could not end its lease (a
        # daemon holding the write lock) has nothing to warn about.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            await db.close()


def _must_be_a_file(path: str) -> None:
    if url.is_url(path):  # a server's database: it is there if it opens
        return
    if os.path.isdir(path):
        raise CommandError(f"{path} is a folder, not a database file")
    if not os.path.exists(path):
        raise CommandError(f"{path}: no such database file")
    if not os.path.isfile(path):
        raise CommandError(f"{path} is not a regular file")


def _must_not_exist(path: str) -> None:
    if os.path.isdir(path):  # --force would not help: say what would
        raise CommandError(f"{path} is a folder: give the path of the file to write")
    if os.path.exists(path):
        raise CommandError(f"{path} exists (pass --force to overwrite it)")


async def _run_id(db: DB, typed: str, flag: str) -> str:
    """The run id ``typed`` names: the id, or a unique prefix or suffix, in any case."""
    ids, total = await db._find_run_ids(typed, limit=CANDIDATES_SHOWN)
    if total == 0 and typed.strip() != typed:  # pasted with a space or a newline
        ids, total = await db._find_run_ids(typed.strip(), limit=CANDIDATES_SHOWN)
    if total == 1:
        return ids[0]
    if total == 0:
        raise CommandError(
            f"{flag} {show(typed)}: no run has this id, or an id that starts or ends"
            f" with it, in {db.path}"
        )
    more = f" and {total - len(ids)} more" if total > len(ids) else ""
    raise CommandError(
        f"{flag} {show(typed)} is ambiguous: {total} runs match ({', '.join(ids)}{more});"
        " type more of the id"
    )


def _listing(
    args: argparse.Namespace,
    fields: Iterable[str],
    table: list[output.Column],
    *,
    stream: bool = False,
) -> output.Listing:
    if stream and args.form == "table":
        return output.EventLines(sys.stdout)
    return output.listing(
        args.form, sys.stdout, fields=list(fields), table=table, colour=_colour(args)
    )


def _colour(args: argparse.Namespace) -> bool:
    return terminal.wants_colour(sys.stdout, refused=args.no_color, environ=os.environ)


@contextlib.contextmanager
def _progress(label: str) -> Iterator[terminal.Progress]:
    progress = terminal.Progress(label, sys.stderr)
    try:
        yield progress
    finally:
        progress.close()


def _pairs(lines: Iterable[tuple[str, str]]) -> None:
    for name, value in lines:
        sys.stdout.write(f"{name:15} {terminal.safe(value)}".rstrip() + "\n")


def _note(text: str) -> None:
    """A line for the person at the terminal, on stderr: never mixed into the output.

    A note stderr cannot take (closed, or a full disk) is dropped: the
    command's output and exit status say what it did.
    """
    if sys.stderr is None:  # started with stderr closed (2>&-)
        return
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"daemon-db: {terminal.safe(text)}\n")


@contextlib.asynccontextmanager
async def _closing(rows: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close an async generator when done with it, even when left early."""
    try:
        yield rows
    finally:
        close = getattr(rows, "aclose", None)
        if close is not None:
            await close()


async def _aiter(items: Iterable[T]) -> AsyncIterator[T]:
    for item in items:
        yield item
