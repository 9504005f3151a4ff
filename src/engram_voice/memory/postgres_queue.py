"""The shared turn queue: PostgreSQL (psycopg 3 with its pool), for several replicas.

Same guarantees as the SQLite backend, across processes and machines:

- **202 only after commit, commits shared.** ``enqueue`` waits in a list; a few writer
  tasks each take everything waiting and write it in one statement, its own transaction
  (one round trip and one WAL flush for many requests), then answer each caller
  (:mod:`~engram_voice.memory.postgres_commit`).
- **Dedupe** by the unique ``(session_id, message_id)`` key (``ON CONFLICT DO NOTHING``).
- **Per-session order.** Every transaction that adds or changes a session's turns first
  locks the session's row (sorted, so writers never deadlock), then takes ``seq`` values:
  turns of one session commit in ``seq`` order. ``claim`` leases ready sessions with
  ``FOR UPDATE SKIP LOCKED`` (no two workers on any replica get the same session, nobody
  waits), and an expired lease is simply claimable again.
- **Running totals** for ``/status`` are updated in the same transactions, on one of
  :data:`~engram_voice.memory.postgres_schema.COUNTER_SHARDS` rows per connection.

Every wait is bounded: a connection from the pool within the store timeout,
``lock_timeout`` and ``statement_timeout`` on every connection. Driver errors leave this
module as :class:`~engram_voice.memory.queue.QueueUnavailableError` with a short reason
(:mod:`~engram_voice.memory.postgres_pool`). The statements live beside it:
:mod:`~engram_voice.memory.postgres_writes` (the group write),
:mod:`~engram_voice.memory.postgres_claims` (the worker side and replay),
:mod:`~engram_voice.memory.postgres_capture` (captured-session records),
:mod:`~engram_voice.memory.postgres_reads` (status and operator reads),
:mod:`~engram_voice.memory.postgres_retention` (purge steps).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from engram_voice.memory import postgres_capture as capture
from engram_voice.memory import postgres_claims as claims
from engram_voice.memory import postgres_reads as reads
from engram_voice.memory.postgres_auth import (
    PasswordSource,
    StaticPassword,
    connection_from_settings,
)
from engram_voice.memory.postgres_commit import GroupCommit
from engram_voice.memory.postgres_notify import NOTIFY_SQL, TurnListener, TurnNotifier
from engram_voice.memory.postgres_pool import QueuePool, describe_error
from engram_voice.memory.postgres_retention import purge_step
from engram_voice.memory.postgres_schema import migrate
from engram_voice.memory.queue import (
    CaptureState,
    ClaimedSession,
    DeadLetter,
    EnqueueBatch,
    EnqueueResult,
    QueueStats,
    SessionMismatchError,
    SessionProgress,
)
from engram_voice.memory.settings import PostgresSettings

__all__ = ["PostgresTurnQueue"]

_WRITERS = 2
"""Writer tasks per process. Fewer writers make larger groups, and a group's cost is mostly
per statement: two instead of three cut the service's and PostgreSQL's CPU per request
by 15-20 % in bench_queue_pg (one writer saved no more), while the second writer keeps
enqueues moving when one commit waits on a lock."""


class PostgresTurnQueue:
    """A :class:`~engram_voice.memory.queue.TurnQueue` in a PostgreSQL database."""

    backend = "postgres"

    def __init__(
        self,
        conninfo: str,
        *,
        password: PasswordSource | None = None,
        pool_size: int = 10,
        store_timeout: float = 3.0,
        connect_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = QueuePool(
            conninfo,
            password=password or StaticPassword(None),
            size=pool_size,
            store_timeout=store_timeout,
            connect_timeout=connect_timeout,
        )
        self.listener: TurnListener | None = None
        """Wakes this process's worker when another process stores turns (LISTEN)."""
        self.notifier = TurnNotifier(self._notify)
        """Tells every process's workers, after a commit, that turns are ready (NOTIFY)."""
        self._group = GroupCommit(self._db, clock=clock, on_committed=self.notifier.committed)

    @classmethod
    def from_settings(
        cls,
        settings: PostgresSettings,
        *,
        store_timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> PostgresTurnQueue:
        """Build the queue from ``MEMORY_POSTGRES_*`` (Entra: a managed identity token)."""
        conninfo, password = connection_from_settings(settings)
        return cls(
            conninfo,
            password=password,
            pool_size=settings.pool_size,
            store_timeout=store_timeout,
            connect_timeout=settings.connect_timeout_seconds,
            clock=clock,
        )

    def __repr__(self) -> str:
        return f"PostgresTurnQueue(pool_size={self._db.size})"

    async def open(self) -> None:
        """Connect the pool, apply missing migrations (advisory lock), start the writers.

        Raises :class:`QueueUnavailableError` with a neutral reason: the password source's
        own (e.g. a Key Vault that cannot be read) or the database's.
        """
        await self._db.open(migrate)
        self._group.start(min(_WRITERS, max(1, self._db.size - 1)))

    def listen(self, on_turns: Callable[[], None]) -> None:
        """Call ``on_turns`` whenever any process commits new turns (LISTEN/NOTIFY).

        A dedicated connection listens in the background and reconnects when lost; the
        caller keeps polling as the fallback (see :mod:`~engram_voice.memory.postgres_notify`).
        """
        if self.listener is None:
            self.listener = TurnListener(
                self._db.conninfo,
                self._db.password,
                on_turns,
                connect_timeout=self._db.connect_timeout,
                describe_error=describe_error,
            )
            self.listener.start()

    async def _notify(self) -> None:
        async with self._db.transaction() as conn:
            await conn.execute(NOTIFY_SQL)

    async def close(self) -> None:
        """Commit what is waiting, stop the writers and the listener, close the pool."""
        listener, self.listener = self.listener, None
        if listener is not None:
            await listener.close()
        await self._group.stop()
        await self.notifier.close()
        await self._db.close()

    # -- enqueue with group commit (postgres_commit) ---------------------------------------

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
        """Store several sessions' batches (they share the group commit); one result each."""
        results = await asyncio.gather(
            *(self._group.enqueue(batch) for batch in batches), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, SessionMismatchError):
                raise result
        return [r for r in results if isinstance(r, EnqueueResult | SessionMismatchError)]

    # -- worker side (the SQL: postgres_claims; autocommit: no BEGIN, no COMMIT) -----------

    async def claim(
        self, *, owner: str, sessions: int, turns: int, lease_seconds: float, now: float
    ) -> list[ClaimedSession]:
        """Lease ready sessions (SKIP LOCKED: never two owners) with their oldest turns."""
        async with self._db.autocommit() as conn:
            return await claims.claim(
                conn,
                owner=owner,
                sessions=sessions,
                turns=turns,
                lease_seconds=lease_seconds,
                now=now,
            )

    async def renew(self, *, owner: str, session_id: str, lease_seconds: float, now: float) -> bool:
        """Extend this owner's lease on a session; False when another owner took it."""
        async with self._db.autocommit() as conn:
            return await claims.renew(
                conn, owner=owner, session_id=session_id, lease_seconds=lease_seconds, now=now
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
        async with self._db.autocommit() as conn:
            await claims.mark_delivered(conn, session_id=session_id, seqs=seqs, now=now)

    async def schedule_retry(
        self, *, owner: str, session_id: str, error: str, next_attempt_at: float
    ) -> None:
        """Count a failed attempt, remember why, release the lease until ``next_attempt_at``."""
        async with self._db.autocommit() as conn:
            await claims.schedule_retry(
                conn,
                owner=owner,
                session_id=session_id,
                error=error,
                next_attempt_at=next_attempt_at,
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
        async with self._db.autocommit() as conn:
            return await claims.dead_letter(
                conn, session_id=session_id, seqs=seqs, reason=reason, attempts=attempts, now=now
            )

    async def release(self, *, owner: str, session_id: str, next_attempt_at: float = 0.0) -> None:
        """Give a lease back without counting an attempt."""
        async with self._db.autocommit() as conn:
            await claims.release(
                conn, owner=owner, session_id=session_id, next_attempt_at=next_attempt_at
            )

    # -- operators and status -------------------------------------------------------------

    async def stats(self) -> QueueStats:
        """Sum the counter shards and seek the oldest pending turn (MVCC: never blocked)."""
        async with self._db.autocommit() as conn:  # one statement: one round trip
            return await reads.stats(conn)

    async def session_progress(self, session_id: str) -> SessionProgress:
        """Count one session's turns by state (an index seek; MVCC: never blocked)."""
        async with self._db.autocommit() as conn:  # one statement: one round trip
            return await reads.session_progress(conn, session_id)

    async def dead_letters(self, *, limit: int, include_replayed: bool) -> list[DeadLetter]:
        """List dead letters, newest first."""
        async with self._db.autocommit() as conn:  # one statement: one round trip
            return await reads.dead_letters(conn, limit=limit, include_replayed=include_replayed)

    async def replay(self, ids: Sequence[int] | None, *, now: float) -> int:
        """Return dead-lettered turns to the queue (their ``seq`` keeps their place)."""
        async with self._db.transaction() as conn:
            total = await claims.replay(conn, ids, now=now)
        if total:
            self.notifier.committed()  # wake the workers of every process
        return total

    async def purge_delivered(self, *, older_than: float, limit: int = 1000) -> int:
        """Remove one bounded step of what retention no longer needs (one transaction).

        At most ``limit`` rows: see :func:`~engram_voice.memory.postgres_retention.purge_step`.
        """
        async with self._db.transaction() as conn:
            return await purge_step(conn, older_than=older_than, limit=limit)

    # -- captured sessions (shared by every replica; the SQL: postgres_capture) ------------

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
        async with self._db.transaction() as conn:
            return await capture.mark_capture(
                conn,
                session_id=session_id,
                user_id=user_id,
                agent=agent,
                state=state,
                now=now,
                state_until=state_until,
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
        async with self._db.transaction() as conn:
            await capture.mark_captures(conn, marks, state=state, now=now, state_until=state_until)

    async def renew_capture(self, session_ids: Sequence[str], *, until: float, now: float) -> int:
        """Extend the leases of live captures in one statement; return how many."""
        async with self._db.transaction() as conn:
            return await capture.renew_capture(conn, session_ids, until=until, now=now)

    async def capture_state(
        self, session_id: str, message_ids: Sequence[str] = ()
    ) -> CaptureState | None:
        """Read a session's capture state and which of ``message_ids`` are stored (one read)."""
        async with self._db.transaction(pipeline=True) as conn:  # BEGIN, the read, COMMIT: one trip
            return await capture.capture_state(conn, session_id, message_ids)
