"""What both benchmarks share: open-loop scheduling, percentiles and per-process CPU.

Open loop means each request starts at its *scheduled* time (``start + i / rate``) and
its latency is counted from that time, so a stall in the client or the server shows up in
the tail instead of slowing the load down. Requests are spawned when they are due, never
all up front: thousands of sleeping tasks created at once make a creation burst that
delays the first requests and shows up as a false tail.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

__all__ = ["ProcessCpu", "TreeCpu", "client_gc_paused", "open_loop", "percentile"]

_START_DELAY = 0.05


def percentile(values: list[float], q: float) -> float:
    """Return the ``q``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@contextlib.contextmanager
def client_gc_paused() -> Iterator[None]:
    """Keep the load generator's own garbage collector out of the measured window.

    Measured in the mint benchmark's client: a full collection took 19-110 ms, and it
    lands on whichever path happens to be running. The window is bounded (one round), so
    the garbage it leaves is collected right after.
    """
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


async def open_loop(
    send: Callable[[int], Awaitable[bool]], *, total: int, rate: float
) -> tuple[list[float], int]:
    """Call ``send(i)`` for ``i < total`` at ``rate``/s, each at its scheduled time.

    ``send`` returns whether the answer was the expected one (and may raise nothing).
    Returns the latencies (ms, from each request's scheduled start) of the expected
    answers, and the number of the others. The client's collector is paused meanwhile.
    """
    latencies: list[float] = []
    errors = 0

    async def one(index: int, scheduled: float) -> None:
        nonlocal errors
        if await send(index):
            latencies.append((time.perf_counter() - scheduled) * 1000)
        else:
            errors += 1

    tasks: set[asyncio.Task[None]] = set()
    with client_gc_paused():
        start = time.perf_counter() + _START_DELAY
        for index in range(total):
            scheduled = start + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one(index, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
    return latencies, errors


class ProcessCpu:
    """CPU seconds (user + system) a process and its children used, read from /proc.

    Latency on a shared machine swings with the neighbours; CPU per request much less,
    so the benches report both. Returns ``None`` where /proc is not available.
    """

    _TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def __init__(self, pid: int) -> None:
        self._stat = Path(f"/proc/{pid}/stat")

    def seconds(self) -> float | None:
        """Return the CPU seconds used so far, or ``None`` if they cannot be read."""
        try:
            text = self._stat.read_text()
        except OSError:
            return None
        fields = text.rsplit(")", 1)[1].split()
        # fields[11:15] are utime, stime, cutime, cstime (fields 14-17 of proc(5)).
        return sum(int(v) for v in fields[11:15]) / self._TICKS


class TreeCpu:
    """CPU seconds of a process and all its live descendants (e.g. PostgreSQL's backends).

    A backend that exits is still counted: its time moves to its parent's reaped-children
    fields, which :class:`ProcessCpu` includes. Returns ``None`` where /proc is missing.
    """

    def __init__(self, pid: int) -> None:
        self._pid = pid

    def seconds(self) -> float | None:
        """Return the CPU seconds the tree has used so far, or ``None``."""
        total = ProcessCpu(self._pid).seconds()
        if total is None:
            return None
        for child in _descendants(self._pid):
            total += ProcessCpu(child).seconds() or 0.0
        return total


def _descendants(pid: int) -> list[int]:
    """Return the pids of ``pid``'s live child processes, recursively (from /proc)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children.extend(int(c) for c in task.read_text().split())
    return [c for child in children for c in (child, *_descendants(child))]
