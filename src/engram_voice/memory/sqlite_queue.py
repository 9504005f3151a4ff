"""The default turn queue: embedded SQLite in WAL mode with group commit.

Every write runs on one dedicated thread that owns the write connection. Concurrent
``enqueue`` calls wait in a list; a writer task takes everything waiting, writes it in
one transaction and one commit (one fsync with ``synchronous=FULL``), then answers each
caller (:mod:`~engram_voice.memory.sqlite_commit`). So many requests share one commit,
and a ``202`` still means "on disk".

``stats`` reads on a second connection with its own thread (WAL lets it read while a
write is in progress), from running totals kept by triggers, with a short busy timeout:
it never queues behind writes and costs the same at any depth (``session_progress`` reads
there too, one session's turns by an index seek). A write waits at most
``busy_timeout`` seconds for another process's lock, then fails. Every ``sqlite3`` error
leaves this module as the backend-neutral :class:`QueueUnavailableError`.

The statements live beside it: :mod:`~engram_voice.memory.sqlite_writes` (the group
write), :mod:`~engram_voice.memory.sqlite_claims` (the worker side and replay),
:mod:`~engram_voice.memory.sqlite_capture` (captured-session records),
:mod:`~engram_voice.memory.sqlite_reads` (status and operator reads),
:mod:`~engram_voice.memory.sqlite_retention` (the file, purge steps, vacuum).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from engram_voice.memory import sqlite_capture as capture
from engram_voice.memory import sqlite_claims as claims
from engram_voice.memory import sqlite_reads as reads
from engram_voice.memory.queue import (
    CaptureState,
    ClaimedSession,
    DeadLetter,
    EnqueueBatch,
    EnqueueResult,
    QueueClosedError,
    QueueStats,
    QueueUnavailableError,
    SessionMismatchError,
    SessionProgress,
)
from engram_voice.memory.sqlite_commit import GroupCommit
from engram_voice.memory.sqlite_retention import (
    StorageFigures,
    open_file,
    purge_captured,
    purge_step,
    reclaim_step,
    storage_figures,
)
from engram_voice.memory.sqlite_writes import describe_error

__all__ = ["QueueClosedError", "SqliteTurnQueue"]

_T = TypeVar("_T")
_UPGRADE_BUSY_SECONDS = 60.0
"""How long opening waits for another process's one-time file upgrade (a ``VACUUM``)."""


class SqliteTurnQueue:
    """A :class:`~engram_voice.memory.queue.TurnQueue` stored in one SQLite file."""

    backend = "sqlite"

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "full",
        busy_timeout: float = 3.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = Path(path)
        self._synchronous = synchronous.upper()
        self._busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memory-sqlite")
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="memory-sqlite-read")
        self._conn: sqlite3.Connection | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._group = GroupCommit(self._run, clock=clock, is_open=lambda: self._conn is not None)

    def __repr__(self) -> str:
        return f"SqliteTurnQueue(path={str(self._path)!r})"

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn = self._conn
        if conn is None:
            raise QueueClosedError("queue closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, conn)
        except sqlite3.Error as exc:
            raise QueueUnavailableError(describe_error(exc)) from exc

    def _connect(self) -> sqlite3.Connection:
        return open_file(
            self._path,
            synchronous=self._synchronous,
            busy_timeout=self._busy_timeout,
            upgrade_busy_seconds=_UPGRADE_BUSY_SECONDS,
        )

    async def open(self) -> None:
        """Open the database file (creating or migrating its schema) and start the writer."""
        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(self._executor, self._connect)
            self._read_conn = await loop.run_in_executor(
                self._reader, reads.connect_reader, self._path
            )
        except sqlite3.Error as exc:
            raise QueueUnavailableError(describe_error(exc)) from exc
        self._group.start()

    async def close(self) -> None:
        """Commit what is waiting, stop the writer and close the database."""
        await self._group.stop()
        loop = asyncio.get_running_loop()
        conn, self._conn = self._conn, None
        if conn is not None:
            await loop.run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)
        reader, self._read_conn = self._read_conn, None
        if reader is not None:
            reader.interrupt()
            await loop.run_in_executor(self._reader, reader.close)
        self._reader.shutdown(wait=True)

    # -- enqueue with group commit (sqlite_commit) ---------------------------------------

    @property
    def commits(self) -> int:
        """Group commits done by this instance (many enqueues share one)."""
        return self._group.commits

    async def enqueue(self, batch: EnqueueBatch) -> EnqueueResult:
        """Store the batch durably together with whatever else is waiting; return counts."""
        return await self._group.enqueue(batch)

    async def enqueue_many(
        self, batches: Sequence[EnqueueBatch]
    ) -> list[EnqueueResult | SessionMismatchError]:
        """Store several sessions' batches in one shared commit; one result per batch."""
        return await self._group.enqueue_many(batches)

    # -- worker side (sqlite_claims) --------------------------------------------------------

    async def claim(
        self, *, owner: str, sessions: int, turns: int, lease_seconds: float, now: float
    ) -> list[ClaimedSession]:
        """Lease ready sessions (pending, due, unleased) with their oldest pending turns."""
        return await self._run(
            lambda conn: claims.claim(
                conn,
                owner=owner,
                sessions=sessions,
                turns=turns,
                lease_seconds=lease_seconds,
                now=now,
            )
        )

    async def renew(self, *, owner: str, session_id: str, lease_seconds: float, now: float) -> bool:
        """Extend this owner's lease on a session; False when the lease was lost."""
        return await self._run(
            lambda conn: claims.renew(
                conn, owner=owner, session_id=session_id, lease_seconds=lease_seconds, now=now
            )
        )

    async def mark_delivered(
        self,
        *,
        owner: str,  # noqa: ARG002 - delivered is delivered, whoever holds the lease now
        session_id: str,
        seqs: Sequence[int],
        now: float,
    ) -> None:
        """Mark turns delivered, drop their text, and reset the session's attempt count."""
        await self._run(
            lambda conn: claims.mark_delivered(conn, session_id=session_id, seqs=seqs, now=now)
        )

    async def schedule_retry(
        self, *, owner: str, session_id: str, error: str, next_attempt_at: float
    ) -> None:
        """Count a failed attempt, remember why, release the lease until ``next_attempt_at``."""
        await self._run(
            lambda conn: claims.schedule_retry(
                conn,
                owner=owner,
                session_id=session_id,
                error=error,
                next_attempt_at=next_attempt_at,
            )
        )

    async def dead_letter(
        self,
        *,
        owner: str,  # noqa: ARG002 - a rejection is final, whoever holds the lease now
        session_id: str,
        seqs: Sequence[int],
        reason: str,
        attempts: int,
        now: float,
    ) -> int:
        """Move the turns to a new dead letter and reset the session's attempts."""
        return await self._run(
            lambda conn: claims.dead_letter(
                conn, session_id=session_id, seqs=seqs, reason=reason, attempts=attempts, now=now
            )
        )

    async def release(self, *, owner: str, session_id: str, next_attempt_at: float = 0.0) -> None:
        """Give a lease back without counting an attempt."""
        await self._run(
            lambda conn: claims.release(
                conn, owner=owner, session_id=session_id, next_attempt_at=next_attempt_at
            )
        )

    # -- operators and status -------------------------------------------------------------

    async def stats(self) -> QueueStats:
        """Return the running totals and the oldest pending turn, read off the write path."""
        return await self._read(reads.stats)

    async def session_progress(self, session_id: str) -> SessionProgress:
        """Count one session's turns by state (an index seek), read off the write path."""
        return await self._read(lambda conn: reads.session_progress(conn, session_id))

    async def _read(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``work`` on the read connection's thread; a cancelled caller interrupts it."""
        conn = self._read_conn
        if conn is None:
            raise QueueClosedError("queue closed")
        future = asyncio.get_running_loop().run_in_executor(self._reader, work, conn)
        try:
            return await future
        except asyncio.CancelledError:
            conn.interrupt()  # the caller's bound ran out: stop the read, free the thread
            raise
        except sqlite3.Error as exc:
            raise QueueUnavailableError(describe_error(exc)) from exc

    async def dead_letters(self, *, limit: int, include_replayed: bool) -> list[DeadLetter]:
        """List dead letters, newest first."""
        return await self._run(
            lambda conn: reads.dead_letters(conn, limit=limit, include_replayed=include_replayed)
        )

    async def replay(self, ids: Sequence[int] | None, *, now: float) -> int:
        """Return dead-lettered turns to the queue in their original order; count them."""
        return await self._run(lambda conn: claims.replay(conn, ids, now=now))

    async def purge_delivered(self, *, older_than: float, limit: int = 1000) -> int:
        """Remove one bounded step of what retention no longer needs; return the work done.

        One transaction deletes at most ``limit`` rows (delivered turns delivered before
        ``older_than``, then replayed dead letters, then finished sessions: see
        :mod:`engram_voice.memory.sqlite_retention`). When rows are all gone, the same
        call hands up to ``limit`` surplus free pages back to the file system. Returns
        rows deleted plus pages released: at least ``limit`` means "call again".
        """

        def work(conn: sqlite3.Connection) -> int:
            removed = purge_step(conn, older_than=older_than, limit=limit)
            if removed < limit:
                removed += purge_captured(conn, older_than=older_than, limit=limit - removed)
            if removed >= limit:
                return removed
            return removed + reclaim_step(conn, limit=limit)

        return await self._run(work)

    # -- captured sessions (shared by every process on the file; sqlite_capture) ----------

    async def mark_capture(
        self,
        *,
        session_id: str,
        user_id: str,
        agent: str,
        state: str,
        now: float,
        state_until: float | None = None,
    ) -> str:
        """Record a session's capture state (only ever forward); return the stored one."""
        return await self._run(
            lambda conn: capture.mark_capture(
                conn,
                session_id=session_id,
                user_id=user_id,
                agent=agent,
                state=state,
                now=now,
                state_until=state_until,
            )
        )

    async def mark_captures(
        self,
        marks: Sequence[tuple[str, str, str]],
        *,
        state: str,
        now: float,
        state_until: float | None = None,
    ) -> None:
        """Record several sessions' capture state (only ever forward) in one transaction."""
        await self._run(
            lambda conn: capture.mark_captures(
                conn, marks, state=state, now=now, state_until=state_until
            )
        )

    async def renew_capture(self, session_ids: Sequence[str], *, until: float, now: float) -> int:
        """Extend the leases of live captures in one transaction; return how many."""
        return await self._run(
            lambda conn: capture.renew_capture(conn, session_ids, until=until, now=now)
        )

    async def capture_state(
        self, session_id: str, message_ids: Sequence[str] = ()
    ) -> CaptureState | None:
        """Read a session's capture state and which of ``message_ids`` are stored (one read)."""
        return await self._read(lambda conn: capture.capture_state(conn, session_id, message_ids))

    async def storage(self) -> StorageFigures:
        """Return the queue file's pages, free pages and page size (SQLite only)."""
        return await self._run(storage_figures)
