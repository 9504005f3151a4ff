"""Retention for every queue backend: purge what is no longer needed, in bounded steps.

The worker calls :meth:`Retention.start_if_due` from its housekeeping; once an interval
(hourly) a background task asks the queue to purge with
:meth:`~engram_voice.memory.queue.TurnQueue.purge_delivered` until it reports nothing
left, one bounded step (``batch`` rows, one short transaction) at a time, pausing between
steps at least as long as the last step took. Writes (``enqueue``) of this or any other
process therefore wait behind one step at most, never behind a whole purge, and a
backend only implements ``purge_delivered``. Delivery goes on while the purge runs.
Other stores kept for the same window (the sink's delivery records) pass their purge as
``also``; each runs once per purge, after the queue's steps, with the same cut-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence

import msgspec
import structlog

from engram_voice.memory.queue import TurnQueue

__all__ = ["PurgeReport", "Retention"]

_logger = structlog.get_logger("engram_voice.memory.retention")


class PurgeReport(msgspec.Struct, frozen=True):
    """What one purge did: work done (rows, plus pages on SQLite), steps, whether it finished."""

    removed: int
    steps: int
    finished: bool


class Retention:
    """Runs the queue's purge once per ``interval`` in bounded, paced steps."""

    def __init__(
        self,
        queue: TurnQueue,
        *,
        retain_seconds: float,
        interval: float = 3600.0,
        batch: int = 1000,
        max_steps: int = 100_000,
        min_pause: float = 0.005,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        also: Sequence[Callable[..., Awaitable[int]]] = (),
    ) -> None:
        self._queue = queue
        self._also = tuple(also)
        self.retain_seconds = retain_seconds
        self._interval = interval
        self._batch = batch
        self._max_steps = max_steps
        self._min_pause = min_pause
        self._clock = clock
        self._monotonic = monotonic
        self._sleep = sleep
        self._next_at = 0.0
        self._task: asyncio.Task[PurgeReport | None] | None = None
        self.last: PurgeReport | None = None

    def start_if_due(self, now: float) -> bool:
        """Start a purge in the background when one is due and none runs; True if started."""
        if now < self._next_at or (self._task is not None and not self._task.done()):
            return False
        self._next_at = now + self._interval
        self._task = asyncio.create_task(self._guarded(), name="memory-retention")
        return True

    async def stop(self) -> None:
        """Cancel a running purge (the step in progress commits or rolls back whole)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _guarded(self) -> PurgeReport | None:
        try:
            return await self.purge()
        except Exception as exc:
            # Retention is upkeep: a locked or failing queue is retried at the next interval.
            _logger.exception("memory.retention_failed", error=type(exc).__name__)
            return None

    async def purge(self) -> PurgeReport:
        """Purge everything older than the retention, step by step; return what it did."""
        older_than = self._clock() - self.retain_seconds
        started = self._monotonic()
        removed = steps = 0
        finished = False
        while steps < self._max_steps:
            step_started = self._monotonic()
            done = await self._queue.purge_delivered(older_than=older_than, limit=self._batch)
            removed += done
            steps += 1
            if done < self._batch:
                finished = True
                break
            # Leave the queue to writers for at least as long as the step held it.
            await self._sleep(max(self._min_pause, self._monotonic() - step_started))
        for purge_other in self._also:
            removed += await purge_other(older_than=older_than)
        self.last = PurgeReport(removed=removed, steps=steps, finished=finished)
        if removed or not finished:
            _logger.info(
                "memory.retention_purged",
                removed=removed,
                steps=steps,
                finished=finished,
                seconds=round(self._monotonic() - started, 2),
            )
        return self.last
