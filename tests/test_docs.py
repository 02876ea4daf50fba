"""The documentation: its examples run, and its reference covers the whole public API.

``make test`` also builds the site with warnings as errors; ``make docs-check``
opens it in a browser (tests/test_docs_site.py).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import daemon_db

DOCS = Path(__file__).parent.parent / "docs"
# Pages whose Python blocks are whole programs, run in order in one folder.
RUNNABLE_PAGES = ["index.md", "getting-started.md"]


def python_blocks(page: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", (DOCS / page).read_text(), re.DOTALL | re.MULTILINE)


def test_the_examples_of_the_first_pages_run(tmp_path: Path) -> None:
    programs = [block for page in RUNNABLE_PAGES for block in python_blocks(page)]
    assert len(programs) >= 4
    for _ in range(2):  # twice: the second time finds the first one's history
        for program in programs:
            result = subprocess.run(
                [sys.executable, "-W", "error", "-c", program],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 0, f"{program}\n{result.stderr}"


def reference_entries() -> set[str]:
    """The names the reference page renders: ``::: NAME`` and the members listed under one."""
    text = (DOCS / "reference.md").read_text()
    entries = set()
    for name, options in re.findall(r"^::: (\S+)\n((?:    .*\n)*)", text, re.MULTILINE):
        entries.add(name)
        listed = re.search(r"members: \[(.*)\]", options)
        if listed:
            entries.update(f"{name}.{member.strip()}" for member in listed.group(1).split(","))
    return entries


def public_db_members() -> list[str]:
    return [name for name, _ in inspect.getmembers(daemon_db.DB) if not name.startswith("_")]


def test_the_reference_has_an_entry_for_every_public_name() -> None:
    entries = reference_entries()
    public = [f"daemon_db.{name}" for name in daemon_db.__all__]
    public += [f"daemon_db.DB.{name}" for name in public_db_members()]
    assert [name for name in public if name not in entries] == []


def documented_callables() -> list[tuple[str, Callable[..., Any]]]:
    """Every public function and method, with the name the reference gives it."""
    found: list[tuple[str, Callable[..., Any]]] = []
    for name in daemon_db.__all__:
        value = getattr(daemon_db, name)
        if inspect.isfunction(value):
            found.append((f"daemon_db.{name}", value))
    for name in public_db_members():
        value = inspect.getattr_static(daemon_db.DB, name)
        if isinstance(value, classmethod):
            value = value.__func__
        if inspect.isfunction(value):
            found.append((f"daemon_db.DB.{name}", value))
    return found


@pytest.mark.parametrize(("name", "function"), documented_callables())
def test_every_public_call_says_what_it_returns_and_raises(
    name: str, function: Callable[..., Any]
) -> None:
    doc = inspect.getdoc(function) or ""
    returns_something = inspect.signature(function).return_annotation not in ("None", None)
    if returns_something:
        assert "\nReturns:\n" in doc, f"{name}: no Returns: section"
    if name != "daemon_db.new_run_id":  # it raises nothing
        assert "\nRaises:\n" in doc, f"{name}: no Raises: section"


def attributes(cls: type) -> list[str]:
    """The public attributes of a record's or an error's instances."""
    if dataclasses.is_dataclass(cls):
        return [field.name for field in dataclasses.fields(cls)]
    if issubclass(cls, daemon_db.DaemonDBError):
        parameters = inspect.signature(cls).parameters.values()
        arguments = [p.name for p in parameters if p.default is inspect.Parameter.empty]
        return [name for name in vars(cls(*arguments)) if not name.startswith("_")]
    return []


@pytest.mark.parametrize(
    "name", [name for name in daemon_db.__all__ if inspect.isclass(getattr(daemon_db, name))]
)
def test_every_public_class_describes_its_attributes(name: str) -> None:
    cls = getattr(daemon_db, name)
    doc = inspect.getdoc(cls) or ""
    assert doc, f"{name} has no docstring"
    for attribute in attributes(cls):
        assert re.search(rf"^Attributes:\n(?:    .*\n)*?    {attribute}: ", doc, re.MULTILINE), (
            f"{name}.{attribute} is not in its Attributes: section"
        )
