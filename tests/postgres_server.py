"""A throwaway PostgreSQL server for the tests: initdb into a temporary folder, stopped at the end.

The server binaries are found with ``pg_config --bindir`` or under
``/usr/lib/postgresql/<version>/bin`` (``make test`` installs Debian's
``postgresql`` when they are missing). PostgreSQL refuses to run as root, so
as root the folder is handed to the ``postgres`` user and the binaries run as
it. The server listens on a unix socket in its folder and on a private port of
127.0.0.1, trusts local connections, and skips fsync: it holds test data only.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Server", "find_bindir", "running_server"]

_databases = itertools.count(1)


def find_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl, or None if this machine has no server."""
    candidates: list[str] = []
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        found = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        )
        candidates.append(found.stdout.strip())
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda path: int(path.split("/")[-2]),
        reverse=True,
    )
    for folder in candidates:
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


@dataclass(frozen=True)
class Server:
    bindir: Path
    folder: Path
    port: int
    user: str | None  # the OS user the binaries run as (None: this one)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self, encoding: str = "UTF8") -> str:
        """A fresh, empty database (in ``encoding``); returns its URL."""
        name = f"test_{os.getpid()}_{next(_databases)}"
        where = ("-h", str(self.folder), "-p", str(self.port), "-U", "postgres")
        self._run("createdb", *where, f"--encoding={encoding}", "--template=template0", name)
        return self.url(name)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd="/")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextlib.contextmanager
def running_server(bindir: Path) -> Iterator[Server]:
    """Start a server in a new temporary folder; stop it and remove the folder on exit."""
    folder = Path(tempfile.mkdtemp(prefix="daemon-db-pg-"))
    user = None
    if os.geteuid() == 0:
        user = "postgres"
        account = pwd.getpwnam(user)
        os.chown(folder, account.pw_uid, account.pw_gid)
    server = Server(bindir, folder, _free_port(), user)
    try:
        server._run(
            "initdb",
            "-D",
            str(folder / "data"),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        options = (
            f"-p {server.port} -k {folder} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=200"
        )
        server._run(
            "pg_ctl",
            "start",
            "-w",
            "-D",
            str(folder / "data"),
            "-o",
            options,
            "-l",
            str(folder / "server.log"),
        )
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError, OSError):
            server._run("pg_ctl", "stop", "-D", str(folder / "data"), "-m", "immediate", "-w")
        shutil.rmtree(folder, ignore_errors=True)
