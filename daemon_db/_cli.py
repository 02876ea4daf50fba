"""The ``daemon-db`` command line: its parser, and how a command's outcome becomes an exit status.

What each command does is in ``_commands.py``; how it prints, in ``_output.py``.
Every mistake is one line on stderr, ``daemon-db: error: ...``, naming the
value or flag at fault: exit status 2 for one the parser finds (as argparse
does), 1 for one only the database can tell (an unknown run, a file that is
not a database). Never a traceback; Ctrl-C exits 130, a closed pipe quietly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Final, NoReturn

from . import _commands as commands
from . import _terminal as terminal
from ._errors import DaemonDBError, show
from ._records import RunStatus

__all__ = ["build_parser", "main"]

Command = Callable[[argparse.Namespace], Awaitable[int]]

LARGEST_INTEGER: Final = 2**63 - 1  # SQLite's
DURATION: Final = re.compile(r"([0-9]+)([wdhms])")
DURATION_UNITS: Final = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
LONGEST_DURATION: Final = timedelta(days=36500)
SHELLS: Final = ("bash", "zsh", "tcsh", "fish")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C: the shell shows it; nothing to add
        return 130


def _main(argv: Sequence[str] | None) -> int:
    # asyncpg's pool logs a traceback each time it fails to reconnect; with no
    # logging set up, Python prints them on stderr. The command's own one-line
    # error says what failed.
    logging.getLogger("asyncpg").addHandler(logging.NullHandler())
    logging.getLogger("asyncpg").propagate = False
    parser = build_parser()
    if not (sys.argv[1:] if argv is None else argv):  # no command: say which there are
        parser.print_help(sys.stderr)
        return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already reported
        return exc.code if isinstance(exc.code, int) else 0
    if args.needs_db and not args.db:
        return _error("no database: pass --db PATH or set DAEMON_DB", status=2)
    if sys.stdout is None:  # started with it closed (>&-): every command writes there
        return _error("standard output is closed", status=1)
    try:
        status: int = asyncio.run(args.run(args))
        sys.stdout.flush()
    except (commands.CommandError, DaemonDBError) as exc:
        return _error(str(exc), status=1)
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, as Unix tools do, and
        # keep Python from complaining when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status


def _error(message: str, *, status: int) -> int:
    if sys.stdout is not None:
        sys.stdout.flush()
    if sys.stderr is not None:
        sys.stderr.write(f"daemon-db: error: {terminal.safe(message)}\n")
    return status


class _Parser(argparse.ArgumentParser):
    """argparse, reporting a usage error as one line, without the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"daemon-db: error: {terminal.safe(message)}\n")


# Values on the command line: checked here, so that a bad one is a usage error
# naming its flag, never a traceback from deeper down.


def _whole_number(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            if not text.isascii():  # int() reads any script's digits: 5 only as typed here
                raise ValueError(text)
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{show(text)} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{show(text)} is less than {minimum}")
        if value > LARGEST_INTEGER:
            raise argparse.ArgumentTypeError(
                f"{show(text)} is too large (at most {LARGEST_INTEGER})"
            )
        return value

    return parse


def _duration(text: str) -> timedelta:
    parts = DURATION.findall(text)
    if not parts or "".join(n + unit for n, unit in parts) != text:
        raise argparse.ArgumentTypeError(
            f"{show(text)} is not a duration: whole numbers each with a unit, w, d, h, m or s"
            " (weeks to seconds), such as 30d, 12h, 90m or 1w2d"
        )
    units = [unit for _, unit in parts]
    twice = next((unit for unit in units if units.count(unit) > 1), None)
    if twice is not None:  # 1d1d is more likely a slip (1d1h?) than 2d: prune deletes
        raise argparse.ArgumentTypeError(f"{show(text)} gives {twice} twice")
    try:
        seconds = sum(int(n) * DURATION_UNITS[unit] for n, unit in parts)
    except ValueError:  # more digits than int() takes: far too long anyway
        seconds = LONGEST_DURATION.days * 86400 + 1
    if seconds > LONGEST_DURATION.total_seconds():
        raise argparse.ArgumentTypeError(
            f"{show(text)} is too long (at most {LONGEST_DURATION.days}d, 100 years)"
        )
    return timedelta(seconds=seconds)


def _status(text: str) -> str:
    """A run status in any case (``RUNNING`` too, as run ids are taken in any case)."""
    if text.lower() not in {status.value for status in RunStatus}:
        choices = ", ".join(status.value for status in RunStatus)
        raise argparse.ArgumentTypeError(f"{show(text)} is not a run status ({choices})")
    return text.lower()


def _run_id(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a run id cannot be empty")
    return text


def _given(what: str) -> Callable[[str], str]:
    """An argument type refusing empty or blank text: a mistake on the command line (exit 2)."""

    def text(value: str) -> str:
        if not value.strip():
            raise argparse.ArgumentTypeError(f"{what} cannot be empty")
        return value

    return text


# The parser


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command and option (shell completion is made from it too)."""
    from . import __version__

    parser = _Parser(
        prog="daemon-db",
        description="Look inside a daemon_db state store, check it, back it up, prune it.",
        epilog="Run 'daemon-db COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"daemon-db {__version__}")
    _add_global_options(parser, top=True)
    parser.set_defaults(needs_db=True)
    commands_ = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    def command(
        name: str, run: Command, text: str, *, forms: bool = True
    ) -> argparse.ArgumentParser:
        sub = commands_.add_parser(name, help=text, description=text)
        _add_global_options(sub, top=False)
        if forms:
            _add_forms(sub, report=name in _REPORTS)
        sub.set_defaults(run=run)
        return sub

    sub = command("runs", commands.runs, "list runs, oldest first")
    sub.add_argument(
        "--status",
        action="append",
        type=_status,
        choices=[status.value for status in RunStatus],
        help="only runs in this status (repeat for several)",
    )
    sub.add_argument("--branch", type=_given("a branch"), help="only runs of this feature branch")
    sub.add_argument(
        "--repo", type=_given("a repository path"), help="only runs of this repository path"
    )
    _add_limit(sub, "runs")
    sub.add_argument("--after", metavar="ID", type=_run_id, help="the runs after this one (paging)")
    sub.add_argument("--newest-first", action="store_true", help="newest run first")

    sub = command("show", commands.show_run, "a run, its units, its event count and latest events")
    _add_run_id(sub)
    sub.add_argument(
        "--events",
        type=_whole_number(0),
        default=10,
        metavar="N",
        help="how many of the latest events to show (default 10)",
    )

    sub = command("events", commands.events, "a run's events; --follow tails them live")
    _add_run_id(sub)
    sub.add_argument(
        "--since", type=_whole_number(0), default=0, metavar="N", help="events after sequence N"
    )
    sub.add_argument(
        "--type",
        type=_given("an event type"),
        action="append",
        metavar="TYPE",
        help="only events of this type (repeat for several)",
    )
    sub.add_argument(
        "--unit", type=_given("a unit id"), metavar="UNIT_ID", help="only events of this unit"
    )
    live = sub.add_mutually_exclusive_group()
    live.add_argument(
        "--follow", action="store_true", help="keep printing new events until the run finishes"
    )
    _add_limit(live, "events")

    command("resumable", commands.resumable, "what a daemon starting now would resume")
    command("stats", commands.stats, "runs and units by status, events, file sizes, schema")
    sub = command(
        "check", commands.check, "check integrity, keys, schema and rules; exit 1 on a problem"
    )
    sub.add_argument(
        "--quick",
        action="store_true",
        help="SQLite's quick_check (indexes not matched to tables) and the store's own checks,"
        " but no search for text that is not UTF-8",
    )
    command(
        "migrate",
        commands.migrate,
        "writes: apply pending schema migrations (inspectors never do)",
        forms=False,
    )

    sub = command(
        "backup", commands.backup, "a consistent copy, safe while the daemon writes", forms=False
    )
    sub.add_argument("destination", type=_given("DEST"), metavar="DEST", help="the file to write")
    sub.add_argument("--force", action="store_true", help="overwrite DEST if it exists")

    sub = command("prune", commands.prune, "writes: delete finished runs completed before a cutoff")
    sub.add_argument(
        "--older-than",
        type=_duration,
        required=True,
        metavar="DURATION",
        help="completed longer ago than this: 30d, 12h, 90m, 1w2d (at most 36500d)",
    )
    sub.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    sub.add_argument(
        "--vacuum",
        action="store_true",
        help="then give the freed space back to the system (rewrites the file; writes wait)",
    )

    command(
        "vacuum",
        commands.vacuum,
        "writes: give the space freed by prunes back to the system (rewrites the file;"
        " writes wait)",
        forms=False,
    )

    # The writing commands: each names what it writes, and never creates a file.
    sub = command(
        "release",
        commands.release,
        "writes: hand a run held by a stuck owner back, for the next daemon to claim",
        forms=False,
    )
    _add_run_id(sub)
    sub = command(
        "fail",
        commands.fail,
        "writes: finish a run nobody will finish as failed (not one that finished meanwhile)",
        forms=False,
    )
    _add_run_id(sub)
    sub.add_argument(
        "--reason",
        type=_given("a reason"),
        required=True,
        metavar="TEXT",
        help="why: stored as its error",
    )
    sub = command(
        "cancel",
        commands.cancel,
        "writes: finish a run nobody will finish as cancelled (not one that finished meanwhile)",
        forms=False,
    )
    _add_run_id(sub)
    sub.add_argument(
        "--reason", type=_given("a reason"), metavar="TEXT", help="why: stored as its error"
    )

    sub = command(
        "completion",
        _completion,
        "print a shell completion script: daemon-db completion bash > ...",
        forms=False,
    )
    sub.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    sub.set_defaults(needs_db=False)
    return parser


def _add_global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--db and --no-color, before the command (``top``) or after it."""
    # After the command they default to SUPPRESS, so as not to undo a value given before it.
    parser.add_argument(
        "--db",
        metavar="PATH",
        default=os.environ.get("DAEMON_DB") if top else argparse.SUPPRESS,
        help="the database file, or a postgresql:// URL (default: $DAEMON_DB)",
    )
    parser.add_argument(
        "--no-color",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="no colour (there is none either when NO_COLOR is set or output is not a terminal)",
    )


_REPORTS: Final = frozenset({"show", "stats", "check"})
"""Commands that print one report rather than a listing of rows."""


def _add_forms(parser: argparse.ArgumentParser, *, report: bool) -> None:
    forms = parser.add_mutually_exclusive_group()
    forms.set_defaults(form="table")
    forms.add_argument(
        "--json",
        dest="form",
        action="store_const",
        const="json",
        help="JSON (an object)" if report else "JSON (an array)",
    )
    forms.add_argument(
        "--nl",
        dest="form",
        action="store_const",
        const="nl",
        help="JSON, the object on one line" if report else "JSON, an object per line",
    )
    forms.add_argument("--csv", dest="form", action="store_const", const="csv", help="CSV")


def _add_run_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_id",
        metavar="RUN_ID",
        type=_run_id,
        help="a run id, or its start or end in any case (the last 6 characters usually do)",
    )


def _add_limit(parser: argparse._ActionsContainer, what: str) -> None:
    parser.add_argument("--limit", type=_whole_number(1), metavar="N", help=f"at most N {what}")


async def _completion(args: argparse.Namespace) -> int:
    """Print a completion script for ``args.shell``, made from the parser itself."""
    import shtab  # only here: it takes longer to import than the rest of the command

    parser = build_parser()
    for action in _all_actions(parser):
        if action.dest in ("db", "destination"):
            action.complete = shtab.FILE  # type: ignore[attr-defined]
    sys.stdout.write(shtab.complete(parser, shell=args.shell))
    return 0


def _all_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    found = list(parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _all_actions(sub)
    return found
