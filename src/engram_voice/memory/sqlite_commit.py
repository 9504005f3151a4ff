"""The SQLite queue's group commit: many enqueues share one transaction and one commit.

Concurrent ``enqueue`` calls wait in a list; one writer task takes everything waiting and
writes it with :func:`~engram_voice.memory.sqlite_writes.write_group` on the writer thread,
in one transaction and one commit (one fsync with ``synchronous=FULL``), then answers each
caller. So many requests share one commit, and a ``202`` still means "on disk".
:meth:`GroupCommit.enqueue_many` puts several sessions' batches in the list as one entry
(one future, one wake-up): the capture process's ``store`` requests of one frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable, Sequence

import structlog

from engram_voice.memory.queue import (
    EnqueueBatch,
    EnqueueResult,
    QueueClosedError,
    QueueUnavailableError,
    SessionMismatchError,
)
from engram_voice.memory.sqlite_writes import write_group

__all__ = ["GroupCommit"]

_logger = structlog.get_logger("engram_voice.memory.queue")
_MAX_GROUP = 512
Results = list[EnqueueResult | SessionMismatchError]
Waiting = tuple[Sequence[EnqueueBatch], "asyncio.Future[Results]"]


class GroupCommit:
    """Enqueues waiting for a shared commit, and the writer task that makes it."""

    def __init__(
        self,
        run: Callable[[Callable[[sqlite3.Connection], Results]], Awaitable[Results]],
        *,
        clock: Callable[[], float],
        is_open: Callable[[], bool],
    ) -> None:
        self._run = run
        self._clock = clock
        self._is_open = is_open
        self._waiting: list[Waiting] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._owners: dict[str, tuple[str, str]] = {}
        """Sessions whose (user, agent) the writer thread already checked (never changes)."""
        self.commits = 0
        """Group commits done (many enqueues share one)."""

    def start(self) -> None:
        """Start the writer task (the database is open)."""
        self._closing = False
        self._writer = asyncio.create_task(self._write_loop(), name="memory-queue-writer")

    async def stop(self) -> None:
        """Commit what is waiting, then stop the writer."""
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            await self._writer
            self._writer = None

    async def enqueue(self, batch: EnqueueBatch) -> EnqueueResult:
        """Store the batch durably together with whatever else is waiting; return counts."""
        (result,) = await self.enqueue_many((batch,))
        if isinstance(result, SessionMismatchError):
            raise result
        return result

    async def enqueue_many(self, batches: Sequence[EnqueueBatch]) -> Results:
        """Store several batches in the next shared commit; one result per batch.

        A mismatched session's batch gets its :class:`SessionMismatchError` as its result
        (the others are stored); a failed commit raises for all of them.
        """
        if self._closing or not self._is_open():
            raise QueueClosedError("queue closed")
        if not batches:
            return []
        future: asyncio.Future[Results] = asyncio.get_running_loop().create_future()
        entry = (batches, future)
        self._waiting.append(entry)
        self._wake.set()
        try:
            return await future
        except asyncio.CancelledError:
            # The caller gave up (its time bound): batches not yet taken are not written.
            with contextlib.suppress(ValueError):
                self._waiting.remove(entry)
            raise

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                taken = _take(self._waiting)
                group, self._waiting = self._waiting[:taken], self._waiting[taken:]
                await self._commit_group(group)
            if self._closing:
                return

    async def _commit_group(self, group: list[Waiting]) -> None:
        batches = [batch for entry, _ in group for batch in entry]
        try:
            now = self._clock()
            results = await self._run(lambda conn: write_group(conn, batches, now, self._owners))
        except QueueUnavailableError as exc:
            _logger.exception("memory.queue_commit_failed", error=exc.reason, size=len(batches))
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        self.commits += 1
        start = 0
        for entry, future in group:
            end = start + len(entry)
            if not future.done():
                future.set_result(results[start:end])
            start = end


def _take(waiting: list[Waiting]) -> int:
    """Return how many waiting entries the next commit takes: about _MAX_GROUP batches."""
    taken = size = 0
    for batches, _ in waiting:
        if taken and size + len(batches) > _MAX_GROUP:
            break
        taken += 1
        size += len(batches)
    return taken
