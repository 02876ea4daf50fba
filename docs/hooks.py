"""MkDocs hooks: the command-line page shows ``daemon-db --help`` as the installed CLI prints it.

In ``cli.md`` a line ``<!-- help: COMMAND -->`` becomes the help of
``daemon-db COMMAND`` (``<!-- help -->``: the top-level help), so the page
cannot drift from the parser. A command the CLI has but the page does not
show is a warning, which ``mkdocs build --strict`` turns into a failure.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
from typing import Any

from daemon_db._cli import main  # the daemon-db entry point (pyproject's [project.scripts])

log = logging.getLogger("mkdocs.hooks.cli_help")

PAGE = "cli.md"
MARKER = re.compile(r"^<!-- help(?:: ([a-z][a-z-]*))? -->$", re.MULTILINE)
WIDTH = "80"  # columns argparse wraps the help to


def help_text(*command: str) -> str:
    """What ``daemon-db [COMMAND] --help`` prints."""
    out = io.StringIO()
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main([*command, "--help"])
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return out.getvalue().rstrip()


def commands(top_level_help: str) -> list[str]:
    """The command names listed in the top-level help's ``commands:`` section."""
    names: list[str] = []
    section = top_level_help.split("\ncommands:\n", 1)[-1]
    for line in section.splitlines():
        if line and not line.startswith(" "):
            break  # the next section
        found = re.match(r"^ {2,}([a-z][a-z-]*)(?: {2,}|$)", line)
        if found:
            names.append(found.group(1))
    return names


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    shown = {name for name in MARKER.findall(markdown) if name}
    listed = commands(help_text())
    if not listed:
        log.warning("found no commands in the commands: section of daemon-db --help")
    missing = [name for name in listed if name not in shown]
    if missing:
        log.warning(
            "%s shows no help for daemon-db %s: add a section with <!-- help: NAME -->",
            PAGE,
            ", ".join(missing),
        )

    def block(found: re.Match[str]) -> str:
        command = [found.group(1)] if found.group(1) else []
        return f"```text\n$ daemon-db {' '.join([*command, '--help'])}\n{help_text(*command)}\n```"

    return MARKER.sub(block, markdown)
