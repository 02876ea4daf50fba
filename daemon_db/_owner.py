"""An owner of runs and what is known of a run's holder: the same for every engine."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from . import _timestamps as timestamps
from ._process import Process, is_running

__all__ = ["Held", "Owner", "asked_once", "process_alive"]

_CREATED_HERE: set[str] = set()
"""The owners this interpreter created. An owner row of this very process (same
pid and start time) that is not among them was created by the program this
process ran before an ``exec``: that owner is gone."""


@dataclass(frozen=True, slots=True)
class Owner:
    """A DB as an owner: its row's id (one per open DB), name, process and lease."""

    id: str
    name: str
    process: Process
    lease: float

    def __post_init__(self) -> None:
        _CREATED_HERE.add(self.id)

    def lease_until(self) -> str:
        return timestamps.to_text(timestamps.now() + timedelta(seconds=self.lease))


_LARGEST_PID = 2**31 - 1  # a pid_t


def process_alive(
    owner_id: str, machine: str, pid: int, started: str | None, *, here: Process
) -> bool:
    """Whether an owner's process may still run, as far as this machine can tell.

    Elsewhere it may (only its lease tells); here, the pid must run with the same
    start time, and if it is this very process, the owner must be one this
    interpreter created.
    """
    if machine != here.machine:
        return True
    if type(pid) is not int or not 0 < pid <= _LARGEST_PID:  # another tool's: the lease tells
        return True
    if pid == here.pid and started == here.started:
        return owner_id in _CREATED_HERE
    return is_running(pid, started)


@dataclass(frozen=True, slots=True)
class Held:
    """Who holds a run (its name, or None), whether that owner is alive, and its attempts.

    ``holder`` is the owner's id as stored, where it is read (``ownership``): a
    name may be taken again by the next process, an id never is. Left out of
    ``==``, which asks who holds the run as people see it.
    """

    owner: str | None
    alive: bool
    attempts: int
    holder: object = field(default=None, compare=False)


Alive = Callable[[Any, Sequence[Any]], bool]
"""Whether an owner, by its id and its row's liveness columns, is alive."""


def asked_once(alive: Alive) -> Alive:
    """``alive``, asked once per owner and then remembered: for one read of many runs.

    A daemon restarting reads the thousand runs the one it replaces held, each
    with that owner's row; each look at a process on this machine reads
    ``/proc``, which a thousand times took 40 ms of a 90 ms start-up.
    """
    found: dict[Any, bool] = {}

    def cached(owner_id: Any, liveness: Sequence[Any]) -> bool:
        if owner_id not in found:
            found[owner_id] = alive(owner_id, liveness)
        return found[owner_id]

    return cached
