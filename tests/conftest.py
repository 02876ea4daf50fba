"""Fixtures: an open database on a file and in memory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daemon_db import DB
from tests.helpers import FIGURES


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


@pytest.fixture(params=["file", "memory"])
async def db(request: pytest.FixtureRequest, db_path: Path) -> AsyncIterator[DB]:
    """An open database: on a file (writer + reader connections) or ``":memory:"``."""
    location = db_path if request.param == "file" else ":memory:"
    async with DB.open(location) as opened:
        yield opened


@pytest.fixture
async def file_db(db_path: Path) -> AsyncIterator[DB]:
    async with DB.open(db_path) as opened:
        yield opened


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("figures measured by this run")
        for line in dict.fromkeys(FIGURES):  # once each, in order, however many params
            terminalreporter.write_line(line)
