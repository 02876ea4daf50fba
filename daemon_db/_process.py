"""Who this process is, and whether another process on this machine still runs.

An owner of runs is dead when its lease has expired, or at once when it ran on
this machine and its process is gone. "This machine" means more than the host
name: a pid only means something within one boot of one kernel and one pid
namespace (containers on one host share the host name, or not, but not their
pids). A process is the same one when its pid runs with the same start time:
a pid reused after the owner died is another process.

On Linux all of this comes from ``/proc``. Elsewhere the machine is the host
name, and a pid counts as alive while it exists (a reused pid then looks
alive, so such an owner is found dead only when its lease expires: late, never
wrongly).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Process", "is_running", "this_process"]


@dataclass(frozen=True, slots=True)
class Process:
    """A process as an owner records it."""

    host: str
    """The host name, for people."""
    machine: str
    """Where ``pid`` means something: boot and pid namespace (the host name if unknown)."""
    pid: int
    started: str | None
    """When the process started (clock ticks since boot), to tell a reused pid; None if unknown."""

    def default_owner(self) -> str:
        """The owner name a DB takes when given none: host, pid and start time."""
        return f"{self.host}:{self.pid}" + (f":{self.started}" if self.started else "")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _machine() -> str:
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = None
    if boot is None or namespace is None:
        return socket.gethostname()
    return f"{boot}:{namespace}"


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` from the state on; None if it cannot be read."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # The command name (field 2) is in parentheses and may hold spaces; after it
    # come the state (field 3: Z and X are dead) and, 20 fields on, the start time.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields if len(fields) >= 20 else None


def _started(pid: int) -> str | None:
    """The start time of a live process ``pid``; None if there is none (or a zombie)."""
    fields = _stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return fields[19]


_PROC = os.path.isdir("/proc/self")


def this_process() -> Process:
    """This process (read again each time: a forked child is another process)."""
    pid = os.getpid()
    return Process(socket.gethostname(), _machine(), pid, _started(pid) if _PROC else None)


def is_running(pid: int, started: str | None) -> bool:
    """Whether the process ``pid`` that started at ``started`` still runs on this machine."""
    if _PROC and started is not None:
        fields = _stat(pid)
        if fields is not None:
            return fields[0] not in ("Z", "X") and fields[19] == started
        # Gone, or hidden from us: /proc mounted with hidepid hides other users'
        # processes. The kernel still tells which (a reused pid then looks alive:
        # such an owner is found dead when its lease expires, late but not wrongly).
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, but belongs to someone else
        return True
    return True
