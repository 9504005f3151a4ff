"""The shared turn queue: PostgreSQL (psycopg 3 with its pool), for several replicas.

Same guarantees as the SQLite backend, across processes and machines:

- **202 only after commit, commits shared.** ``enqueue`` waits in a list; a few writer
  tasks each take everything waiting and write it in one statement, its own transaction
  (one round trip and one WAL flush for many requests), then answer each caller.
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
module as :class:`~engram_voice.memory.queue.QueueUnavailableError` with a short reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import psycopg
import structlog
from psycopg import errors
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from engram_voice.memory import postgres_capture as capture
from engram_voice.memory import postgres_claims as claims
from engram_voice.memory.postgres_auth import (
    PasswordSource,
    StaticPassword,
    connection_from_settings,
)
from engram_voice.memory.postgres_notify import NOTIFY_SQL, TurnListener, TurnNotifier
from engram_voice.memory.postgres_retention import purge_step
from engram_voice.memory.postgres_schema import PROGRESS_SQL, STATS_SQL, migrate
from engram_voice.memory.postgres_writes import write_group
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
from engram_voice.memory.settings import PostgresSettings

__all__ = ["PostgresTurnQueue", "describe_error", "session_conninfo"]

_logger = structlog.get_logger("engram_voice.memory.queue")
_MAX_GROUP = 512
_WRITERS = 2
"""Writer tasks per process. Fewer writers make larger groups, and a group's cost is mostly
per statement: two instead of three cut the service's and PostgreSQL's CPU per request
by 15-20 % in bench_queue_pg (one writer saved no more), while the second writer keeps
enqueues moving when one commit waits on a lock."""
_MAX_KNOWN = 100_000
Conn = psycopg.AsyncConnection[TupleRow]


def describe_error(exc: BaseException) -> str:
    """Return a short, secret-free reason (never the server's message text)."""
    if isinstance(exc, PoolTimeout):
        return "no database connection in time"
    if isinstance(exc, errors.LockNotAvailable):
        return "database locked"
    if isinstance(exc, errors.QueryCanceled):
        return "database busy"
    if isinstance(exc, errors.DeadlockDetected):
        return "database deadlock (retry)"
    if isinstance(exc, psycopg.OperationalError):
        return "database unreachable"
    return f"database error ({type(exc).__name__})"


def session_conninfo(conninfo: str, *, store_timeout: float, connect_timeout: float) -> str:
    """Return ``conninfo`` with the bounds every connection of ours has (locks, statements)."""
    lock_ms = int(store_timeout * 1000)
    statement_ms = int(max(10.0, store_timeout * 3) * 1000)
    return make_conninfo(
        conninfo,
        connect_timeout=max(1, int(connect_timeout)),
        application_name="engram-voice",
        options=f"-c lock_timeout={lock_ms} -c statement_timeout={statement_ms} "
        "-c idle_in_transaction_session_timeout=60000",
    )


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
        self._password = password or StaticPassword(None)
        self._conninfo = session_conninfo(
            conninfo, store_timeout=store_timeout, connect_timeout=connect_timeout
        )
        self._pool_size = pool_size
        self._store_timeout = store_timeout
        self._connect_timeout = connect_timeout
        self._clock = clock
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._waiting: list[tuple[EnqueueBatch, asyncio.Future[EnqueueResult]]] = []
        self._wake = asyncio.Event()
        self._writers: list[asyncio.Task[None]] = []
        self._closing = False
        self.commits = 0
        """Group commits done by this instance (many enqueues share one)."""
        self._known: set[str] = set()
        """Sessions whose row this process saw committed (their insert is skipped)."""
        self.listener: TurnListener | None = None
        """Wakes this process's worker when another process stores turns (LISTEN)."""
        self.notifier = TurnNotifier(self._notify)
        """Tells every process's workers, after a commit, that turns are ready (NOTIFY)."""

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
        return f"PostgresTurnQueue(pool_size={self._pool_size})"

    async def _kwargs(self) -> dict[str, Any]:
        secret = await self._password.password()
        return {} if secret is None else {"password": secret}

    @contextlib.asynccontextmanager
    async def _lend(self) -> AsyncIterator[Conn]:
        """Lend a pooled connection; every driver error becomes a neutral one.

        A pool that cannot hand out a connection in time may be signing in with a rotated
        password, so the password source is asked to read it anew (it rate-limits that).
        """
        pool = self._pool
        if pool is None:
            raise QueueClosedError()
        try:
            async with pool.connection(timeout=self._store_timeout) as conn:
                yield conn
        except psycopg.Error as exc:
            if isinstance(exc, PoolTimeout):
                await self._password.refused()  # new connections fail: a rotated password?
            raise QueueUnavailableError(describe_error(exc)) from exc

    @contextlib.asynccontextmanager
    async def _conn(self, *, pipeline: bool = False) -> AsyncIterator[Conn]:
        """Lend a pooled connection in a transaction; driver errors become neutral ones.

        ``pipeline`` sends statements without waiting for each answer (libpq pipeline
        mode): BEGIN and the first statements travel together, COMMIT with the last.
        """
        async with self._lend() as conn:
            if pipeline:
                async with conn.pipeline(), conn.transaction():
                    yield conn
            else:
                async with conn.transaction():
                    yield conn

    async def open(self) -> None:
        """Connect the pool, apply missing migrations (advisory lock), start the writers.

        Raises :class:`QueueUnavailableError` with a neutral reason: the password source's
        own (e.g. a Key Vault that cannot be read) or the database's.
        """
        await self._kwargs()  # a password that cannot be had is the reason to show
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self._conninfo,
            kwargs=self._kwargs,
            min_size=min(2, self._pool_size),
            max_size=self._pool_size,
            open=False,
            timeout=self._store_timeout,
            name="memory-queue",
        )
        try:
            await pool.open(wait=True, timeout=self._connect_timeout)
            async with pool.connection(timeout=self._connect_timeout) as conn:
                await migrate(conn)
        except (psycopg.Error, TimeoutError) as exc:
            await pool.close()
            if isinstance(exc, PoolTimeout):
                await self._password.refused()  # a rotated password: read it anew
            raise QueueUnavailableError(describe_error(exc)) from exc
        except asyncio.CancelledError:  # stopped while connecting: leave nothing running
            await pool.close()
            raise
        self._pool = pool
        self._closing = False
        self._writers = [
            asyncio.create_task(self._write_loop(), name=f"memory-queue-writer-{i}")
            for i in range(min(_WRITERS, max(1, self._pool_size - 1)))
        ]

    def listen(self, on_turns: Callable[[], None]) -> None:
        """Call ``on_turns`` whenever any process commits new turns (LISTEN/NOTIFY).

        A dedicated connection listens in the background and reconnects when lost; the
        caller keeps polling as the fallback (see :mod:`~engram_voice.memory.postgres_notify`).
        """
        if self.listener is None:
            self.listener = TurnListener(
                self._conninfo,
                self._password,
                on_turns,
                connect_timeout=self._connect_timeout,
                describe_error=describe_error,
            )
            self.listener.start()

    async def _notify(self) -> None:
        async with self._conn() as conn:
            await conn.execute(NOTIFY_SQL)

    async def close(self) -> None:
        """Commit what is waiting, stop the writers and the listener, close the pool."""
        listener, self.listener = self.listener, None
        if listener is not None:
            await listener.close()
        self._closing = True
        self._wake.set()
        writers, self._writers = self._writers, []
        await asyncio.gather(*writers, return_exceptions=True)
        await self.notifier.close()
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        await self._password.aclose()

    # -- enqueue with group commit -------------------------------------------------------

    async def enqueue(self, batch: EnqueueBatch) -> EnqueueResult:
        """Store the batch durably together with whatever else is waiting; return counts."""
        if self._closing or self._pool is None:
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

    @contextlib.asynccontextmanager
    async def _autocommit_conn(self) -> AsyncIterator[Conn]:
        """Lend a pooled connection in autocommit mode (given back as it was lent).

        A group is written by one statement (see :mod:`postgres_writes`), which on an
        autocommit connection is its own transaction: one round trip, no BEGIN or COMMIT
        of their own. Driver errors become neutral ones, as in :meth:`_lend`.
        """
        async with self._lend() as conn:
            await conn.set_autocommit(True)
            try:
                yield conn
            finally:
                if not conn.closed:
                    await conn.set_autocommit(False)

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            while self._waiting:
                group, self._waiting = self._waiting[:_MAX_GROUP], self._waiting[_MAX_GROUP:]
                await self._commit_group(group)
            if self._closing:
                return
            self._wake.clear()

    async def _commit_group(
        self, group: list[tuple[EnqueueBatch, asyncio.Future[EnqueueResult]]]
    ) -> None:
        batches = [batch for batch, _ in group]
        try:
            async with self._autocommit_conn() as conn:
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
            self.notifier.committed()  # after the commit, outside it (see postgres_notify)
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
    def _fail(group: list[tuple[EnqueueBatch, asyncio.Future[EnqueueResult]]], reason: str) -> None:
        _logger.warning("memory.queue_commit_failed", error=reason, size=len(group))
        for _, future in group:
            if not future.done():
                future.set_exception(QueueUnavailableError(reason))

    # -- worker side (the SQL: postgres_claims) --------------------------------------------

    async def claim(
        self, *, owner: str, sessions: int, turns: int, lease_seconds: float, now: float
    ) -> list[ClaimedSession]:
        """Lease ready sessions (SKIP LOCKED: never two owners) with their oldest turns."""
        async with self._conn() as conn:
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
        async with self._conn() as conn:
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
        async with self._conn() as conn:
            await claims.mark_delivered(conn, session_id=session_id, seqs=seqs, now=now)

    async def schedule_retry(
        self, *, owner: str, session_id: str, error: str, next_attempt_at: float
    ) -> None:
        """Count a failed attempt, remember why, release the lease until ``next_attempt_at``."""
        async with self._conn() as conn:
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
        async with self._conn() as conn:
            return await claims.dead_letter(
                conn, session_id=session_id, seqs=seqs, reason=reason, attempts=attempts, now=now
            )

    async def release(self, *, owner: str, session_id: str, next_attempt_at: float = 0.0) -> None:
        """Give a lease back without counting an attempt."""
        async with self._conn() as conn:
            await claims.release(
                conn, owner=owner, session_id=session_id, next_attempt_at=next_attempt_at
            )

    # -- operators and status -------------------------------------------------------------

    async def stats(self) -> QueueStats:
        """Sum the counter shards and seek the oldest pending turn (MVCC: never blocked)."""
        async with self._conn() as conn:
            cursor = await conn.execute(STATS_SQL)
            row = await cursor.fetchone()
        assert row is not None  # noqa: S101 - an aggregate always returns one row
        depth, sessions, dead, last, oldest = row
        return QueueStats(
            backend=self.backend,
            depth=int(str(depth)),
            sessions_pending=int(str(sessions)),
            oldest_pending_at=oldest,
            dead_letters=int(str(dead)),
            last_delivered_at=last,
        )

    async def session_progress(self, session_id: str) -> SessionProgress:
        """Count one session's turns by state (an index seek; MVCC: never blocked)."""
        async with self._conn() as conn:
            cursor = await conn.execute(PROGRESS_SQL, {"s": session_id})
            row = await cursor.fetchone()
        assert row is not None  # noqa: S101 - an aggregate always returns one row
        queued, delivered, dead, attempts, next_at = row
        retrying = bool(queued and attempts and next_at)
        return SessionProgress(
            queued=int(str(queued)),
            delivered=int(str(delivered)),
            dead_lettered=int(str(dead)),
            attempts=int(str(attempts)) if retrying else 0,
            next_attempt_at=float(str(next_at)) if retrying else None,
        )

    async def dead_letters(self, *, limit: int, include_replayed: bool) -> list[DeadLetter]:
        """List dead letters, newest first."""
        where = "" if include_replayed else "WHERE replayed_at IS NULL"
        async with self._conn() as conn:
            cursor = await conn.execute(
                "SELECT id, session_id, user_id, agent, turns, reason, attempts, created_at, "  # noqa: S608 - fixed fragments
                f"replayed_at FROM memory_dead_letters {where} ORDER BY id DESC LIMIT %s",
                (limit,),
            )
            rows = await cursor.fetchall()
        return [DeadLetter(*row) for row in rows]

    async def replay(self, ids: Sequence[int] | None, *, now: float) -> int:
        """Return dead-lettered turns to the queue (their ``seq`` keeps their place)."""
        async with self._conn() as conn:
            total = await claims.replay(conn, ids, now=now)
        if total:
            self.notifier.committed()  # wake the workers of every process
        return total

    async def purge_delivered(self, *, older_than: float, limit: int = 1000) -> int:
        """Remove one bounded step of what retention no longer needs (one transaction).

        At most ``limit`` rows: see :func:`~engram_voice.memory.postgres_retention.purge_step`.
        """
        async with self._conn() as conn:
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
        async with self._conn() as conn:
            return await capture.mark_capture(
                conn,
                session_id=session_id,
                user_id=user_id,
                agent=agent,
                state=state,
                now=now,
                state_until=state_until,
            )

    async def renew_capture(self, session_ids: Sequence[str], *, until: float, now: float) -> int:
        """Extend the leases of live captures in one statement; return how many."""
        async with self._conn() as conn:
            return await capture.renew_capture(conn, session_ids, until=until, now=now)

    async def capture_state(
        self, session_id: str, message_ids: Sequence[str] = ()
    ) -> CaptureState | None:
        """Read a session's capture state and which of ``message_ids`` are stored (one read)."""
        async with self._conn(pipeline=True) as conn:  # BEGIN, the read, COMMIT: one trip
            return await capture.capture_state(conn, session_id, message_ids)
