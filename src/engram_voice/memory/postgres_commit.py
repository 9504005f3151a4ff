"""The PostgreSQL queue's group commit: many enqueues share one write and one commit.

``enqueue`` waits in a list; a few writer tasks each take everything waiting and write it
with :func:`~engram_voice.memory.postgres_writes.write_group`, one statement on an
autocommit connection (its own transaction: one round trip and one WAL flush for many
requests), then answer each caller. A ``202`` therefore still means "committed".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import psycopg
import structlog

from engram_voice.memory.postgres_pool import QueuePool
from engram_voice.memory.postgres_writes import write_group
from engram_voice.memory.queue import (
    EnqueueBatch,
    EnqueueResult,
    QueueClosedError,
    QueueUnavailableError,
    SessionMismatchError,
)

__all__ = ["GroupCommit"]

_logger = structlog.get_logger("engram_voice.memory.queue")
_MAX_GROUP = 512
_MAX_KNOWN = 100_000
Waiting = tuple[EnqueueBatch, "asyncio.Future[EnqueueResult]"]


class GroupCommit:
    """Enqueues waiting for a shared commit, and the writer tasks that make it."""

    def __init__(
        self, db: QueuePool, *, clock: Callable[[], float], on_committed: Callable[[], None]
    ) -> None:
        self._db = db
        self._clock = clock
        self._on_committed = on_committed
        self._waiting: list[Waiting] = []
        self._wake = asyncio.Event()
        self._writers: list[asyncio.Task[None]] = []
        self._closing = False
        self.commits = 0
        """Group commits done (many enqueues share one)."""
        self._known: set[str] = set()
        """Sessions whose row this process saw committed (their insert is skipped)."""

    def start(self, writers: int) -> None:
        """Start ``writers`` writer tasks (the pool is open)."""
        self._closing = False
        self._writers = [
            asyncio.create_task(self._write_loop(), name=f"memory-queue-writer-{i}")
            for i in range(writers)
        ]

    async def stop(self) -> None:
        """Commit what is waiting, then stop the writers."""
        self._closing = True
        self._wake.set()
        writers, self._writers = self._writers, []
        await asyncio.gather(*writers, return_exceptions=True)

    async def enqueue(self, batch: EnqueueBatch) -> EnqueueResult:
        """Store the batch durably together with whatever else is waiting; return counts."""
        if self._closing or not self._db.is_open:
            raise QueueClosedError()
        future: asyncio.Future[EnqueueResult] = asyncio.get_running_loop().create_future()
        entry = (batch, future)
        self._waiting.append(entry)
        self._wake.set()
        try:
            return await future
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                self._waiting.remove(entry)  # not taken yet: it is not written
            raise

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            while self._waiting:
                group, self._waiting = self._waiting[:_MAX_GROUP], self._waiting[_MAX_GROUP:]
                await self._commit_group(group)
            if self._closing:
                return
            self._wake.clear()

    async def _commit_group(self, group: list[Waiting]) -> None:
        batches = [batch for batch, _ in group]
        try:
            async with self._db.autocommit() as conn:
                results = await write_group(conn, batches, self._clock(), self._known)
        except QueueUnavailableError as exc:
            if len(group) > 1 and isinstance(exc.__cause__, psycopg.DataError):
                # One request's data (e.g. a NUL in text) must not fail the others: each
                # batch is written on its own, so only the unstorable one fails.
                for entry in group:
                    await self._commit_group([entry])
                return
            self._fail(group, exc.reason)
            return
        except Exception as exc:  # noqa: BLE001 - every caller gets the failure; the writer lives on
            reason = (
                exc.reason
                if isinstance(exc, QueueUnavailableError)
                else f"database error ({type(exc).__name__})"
            )
            self._fail(group, reason)
            return
        self.commits += 1
        if any(isinstance(r, EnqueueResult) and r.accepted for r in results):
            self._on_committed()  # after the commit, outside it (see postgres_notify)
        if len(self._known) > _MAX_KNOWN:
            self._known.clear()
        self._known.update(batch.session_id for batch in batches)  # committed now
        for (_, future), result in zip(group, results, strict=True):
            if future.done():
                continue
            if isinstance(result, SessionMismatchError):
                future.set_exception(result)
            else:
                future.set_result(result)

    @staticmethod
    def _fail(group: list[Waiting], reason: str) -> None:
        _logger.warning("memory.queue_commit_failed", error=reason, size=len(group))
        for _, future in group:
            if not future.done():
                future.set_exception(QueueUnavailableError(reason))
