"""An owner of runs and what is known of a run's holder: the same for every engine."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from . import _timestamps as timestamps
from ._process import Process

__all__ = ["Held", "Owner"]


@dataclass(frozen=True, slots=True)
class Owner:
    """A DB as an owner: its row's id (one per open DB), name, process and lease."""

    id: str
    name: str
    process: Process
    lease: float

    def lease_until(self) -> str:
        return timestamps.to_text(timestamps.now() + timedelta(seconds=self.lease))


@dataclass(frozen=True, slots=True)
class Held:
    """Who holds a run (its name, or None), whether that owner is alive, and its attempts."""

    owner: str | None
    alive: bool
    attempts: int
