"""Timing helpers: latency samples, throughput, and event-loop stalls with GC pauses apart."""

from __future__ import annotations

import asyncio
import gc
import inspect
import os
import platform
import sqlite3
import statistics
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any


def quantiles(samples: list[float]) -> dict[str, float]:
    """p50 and p99 of samples in seconds, returned in microseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return {"p50_us": statistics.median(ordered) * 1e6, "p99_us": p99 * 1e6}


async def timings(call: Callable[[int], Any], indexes: range) -> list[float]:
    """Seconds each ``call(i)`` took (awaited if it returns an awaitable)."""
    times: list[float] = []
    clock = time.perf_counter
    for i in indexes:
        start = clock()
        result = call(i)
        if inspect.isawaitable(result):
            await result
        times.append(clock() - start)
    return times


async def latency(call: Callable[[int], Any], *, samples: int, warmup: int) -> dict[str, float]:
    """p50 and p99 of ``call(i)`` over ``samples`` calls after ``warmup``."""
    await timings(call, range(warmup))
    return quantiles(await timings(call, range(warmup, warmup + samples)))


class GcPauses:
    """The garbage collector's pauses while entered: they hold the GIL, so they
    stop every thread of the process, whichever one triggers them."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float]] = []

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.pauses.append((time.perf_counter(), float("inf")))
        elif self.pauses:
            self.pauses[-1] = (self.pauses[-1][0], time.perf_counter())

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._on_gc)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._on_gc)

    @property
    def longest_ms(self) -> float:
        return max((b - a for a, b in self.pauses), default=0.0) * 1e3


class LoopWatch:
    """Measures how long the event loop goes without running a 1 ms heartbeat.

    The garbage collector's pauses are recorded too (``GcPauses``);
    ``worst_ours_ms`` leaves them out to show what the code under test does
    by itself.
    """

    def __init__(self) -> None:
        self.beats: list[tuple[float, float]] = []
        self._gc = GcPauses()
        self.pauses = self._gc.pauses
        self._running = False

    async def _beat(self) -> None:
        last = time.perf_counter()
        while self._running:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.beats.append((last, now))
            last = now

    async def __aenter__(self) -> LoopWatch:
        self._gc.__enter__()
        self._running = True
        self._task = asyncio.create_task(self._beat())
        await asyncio.sleep(0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._running = False
        await self._task
        self._gc.__exit__()

    def figures(self) -> dict[str, float]:
        def in_gc(start: float, end: float) -> float:
            return sum(max(0.0, min(end, b) - max(start, a)) for a, b in self.pauses)

        gaps = [end - start - 0.001 for start, end in self.beats]
        ours = [end - start - 0.001 - in_gc(start, end) for start, end in self.beats]
        return {
            "worst_ms": max(gaps, default=0.0) * 1e3,
            "p99_ms": quantiles(gaps)["p99_us"] / 1e3 if gaps else 0.0,
            "worst_ours_ms": max(ours, default=0.0) * 1e3,
            "gc_longest_ms": self._gc.longest_ms,
        }


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "processor": _processor(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def _processor() -> str:
    """The CPU's model name (Linux), else what platform says."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
