"""Fixtures: an open database on a file, in memory, and on a throwaway PostgreSQL server."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from daemon_db import DB
from tests import postgres_server
from tests.helpers import FIGURES

NO_SERVER = (
    "PostgreSQL TESTS SKIPPED: no PostgreSQL server binaries here (initdb, pg_ctl)."
    " `make test` installs Debian's postgresql; under CI=true these tests fail instead."
)


@pytest.fixture(scope="session")
def postgres() -> Iterator[postgres_server.Server]:
    """A PostgreSQL server of this test session's own, started when a test first needs it."""
    bindir = postgres_server.find_bindir()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail(NO_SERVER.replace("SKIPPED", "CANNOT RUN"), pytrace=False)
        pytest.skip(NO_SERVER)
    # A test run stopped with SIGTERM (a CI timeout) stops its server too: as an
    # interrupt, it runs this fixture's teardown, where the default would not.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with postgres_server.running_server(bindir) as server:
            yield server
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture
def postgres_url(postgres: postgres_server.Server) -> str:
    """The URL of a fresh, empty database on the session's server."""
    return postgres.new_database()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state.db"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test of ``db`` (or ``db_location``) runs on each engine, unless marked sqlite_only."""
    if "db_location" in metafunc.fixturenames:
        engines = ["file", "memory"]
        if metafunc.definition.get_closest_marker("sqlite_only") is None:
            engines.append("postgres")
        metafunc.parametrize("db_location", engines, indirect=True)


@pytest.fixture
def db_location(request: pytest.FixtureRequest, db_path: Path) -> str | Path:
    """Where a test's database is: a file, ``":memory:"``, or a fresh PostgreSQL database."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return db_path if request.param == "file" else ":memory:"


@pytest.fixture(params=["file", "postgres"])
def where(request: pytest.FixtureRequest, db_path: Path) -> str | Path:
    """A store several DBs share: a file, or a fresh PostgreSQL database."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return db_path


@pytest.fixture
async def db(db_location: str | Path) -> AsyncIterator[DB]:
    """An open database: on a file (writer + reader connections), ``":memory:"`` or PostgreSQL."""
    async with DB.open(db_location) as opened:
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
