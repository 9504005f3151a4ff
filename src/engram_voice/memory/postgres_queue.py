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

from engram_voice.memory.postgres_auth import (
    PasswordSource,
    StaticPassword,
    connection_from_settings,
)
from engram_voice.memory.postgres_notify import NOTIFY_SQL, TurnListener, TurnNotifier
from engram_voice.memory.postgres_schema import (
    CAPTURE_STATE_SQL,
    MARK_CAPTURE_SQL,
    PROGRESS_SQL,
    RENEW_CAPTURE_SQL,
    SHARD,
    STATS_SQL,
    migrate,
)
from engram_voice.memory.postgres_writes import write_group
from engram_voice.memory.queue import (
    CAPTURE_STATES,
    CaptureState,
    ClaimedSession,
    DeadLetter,
    EnqueueBatch,
    EnqueueResult,
    QueueClosedError,
    QueuedTurn,
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
_PURGE_TURNS = (
    "DELETE FROM memory_turns WHERE seq IN (SELECT seq FROM memory_turns "
    "WHERE state = 1 AND delivered_at < %s LIMIT %s)"
)
_PURGE_LETTERS = (
    "DELETE FROM memory_dead_letters WHERE id IN (SELECT id FROM memory_dead_letters "
    "WHERE replayed_at IS NOT NULL AND replayed_at < %s LIMIT %s)"
)
_PURGE_SESSIONS = (
    "DELETE FROM memory_sessions WHERE ctid = ANY(ARRAY(SELECT s.ctid "
    "FROM memory_sessions s WHERE s.created_at < %s AND s.pending = 0 "
    "AND s.lease_owner IS NULL AND NOT EXISTS "
    "(SELECT 1 FROM memory_turns t WHERE t.session_id = s.session_id) "
    "LIMIT %s FOR UPDATE OF s SKIP LOCKED)) "
    "AND pending = 0 AND lease_owner IS NULL"
)
"""Old idle sessions through ``memory_sessions_idle`` (migration 2), locked (a session a
writer holds is skipped, never waited for) and deleted by row address: no step reads the
whole table, whatever its size."""
_PURGE_CAPTURED = (
    "DELETE FROM memory_captured WHERE session_id IN (SELECT session_id FROM memory_captured "
    "WHERE updated_at < %s LIMIT %s)"
)
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

    # -- worker side ----------------------------------------------------------------------

    async def claim(
        self, *, owner: str, sessions: int, turns: int, lease_seconds: float, now: float
    ) -> list[ClaimedSession]:
        """Lease ready sessions (SKIP LOCKED: never two owners) with their oldest turns."""
        async with self._conn() as conn:
            cursor = await conn.execute(
                "WITH ready AS (SELECT session_id FROM memory_sessions "
                "WHERE pending > 0 AND next_attempt_at <= %(now)s "
                "AND (lease_until IS NULL OR lease_until < %(now)s) "
                "ORDER BY next_attempt_at, created_at LIMIT %(n)s FOR UPDATE SKIP LOCKED) "
                "UPDATE memory_sessions s SET lease_owner = %(owner)s, lease_until = %(until)s "
                "FROM ready WHERE s.session_id = ready.session_id "
                "RETURNING s.session_id, s.user_id, s.agent, s.attempts, s.next_attempt_at, "
                "s.created_at",
                {"now": now, "n": sessions, "owner": owner, "until": now + lease_seconds},
            )
            leased = sorted(await cursor.fetchall(), key=lambda row: (row[4], row[5]))
            if not leased:
                return []
            ids = [str(row[0]) for row in leased]
            cursor = await conn.execute(
                "SELECT s.id, t.seq, t.message_id, t.role, t.text, t.at, t.accepted_at "
                "FROM unnest(%s::text[]) AS s(id) CROSS JOIN LATERAL ("
                " SELECT seq, message_id, role, text, at, accepted_at FROM memory_turns"
                " WHERE session_id = s.id AND state = 0 ORDER BY seq LIMIT %s) AS t "
                "ORDER BY s.id, t.seq",
                (ids, turns),
            )
            found: dict[str, list[QueuedTurn]] = {session_id: [] for session_id in ids}
            for row in await cursor.fetchall():
                found[str(row[0])].append(QueuedTurn(*row[1:]))
        return [
            ClaimedSession(
                session_id=str(row[0]),
                user_id=str(row[1]),
                agent=str(row[2]),
                attempts=int(str(row[3])),
                turns=found[str(row[0])],
            )
            for row in leased
        ]

    async def renew(self, *, owner: str, session_id: str, lease_seconds: float, now: float) -> bool:
        """Extend this owner's lease on a session; False when another owner took it."""
        sql = (
            "UPDATE memory_sessions SET lease_until = %s WHERE session_id = %s AND lease_owner = %s"
        )
        return await self._changed(sql, (now + lease_seconds, session_id, owner)) > 0

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
            await _lock_session(conn, session_id)
            cursor = await conn.execute(
                "UPDATE memory_turns SET state = 1, text = NULL, delivered_at = %s "
                "WHERE session_id = %s AND state = 0 AND seq = ANY(%s)",
                (now, session_id, list(seqs)),
            )
            changed = cursor.rowcount
            await _change_pending(
                conn, session_id, -changed, "attempts = 0, last_error = NULL", (), delivered=now
            )

    async def schedule_retry(
        self, *, owner: str, session_id: str, error: str, next_attempt_at: float
    ) -> None:
        """Count a failed attempt, remember why, release the lease until ``next_attempt_at``."""
        await self._changed(
            "UPDATE memory_sessions SET attempts = attempts + 1, last_error = %s, "
            "next_attempt_at = %s, lease_owner = NULL, lease_until = NULL "
            "WHERE session_id = %s AND lease_owner = %s",
            (error[:500], next_attempt_at, session_id, owner),
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
            user_id, agent = await _lock_session(conn, session_id)
            cursor = await conn.execute(
                "INSERT INTO memory_dead_letters (session_id, user_id, agent, turns, reason, "
                "attempts, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (session_id, user_id, agent, len(seqs), reason[:1000], attempts, now),
            )
            row = await cursor.fetchone()
            letter_id = int(str(row[0])) if row else 0
            cursor = await conn.execute(
                "UPDATE memory_turns SET state = 2, dead_letter_id = %s "
                "WHERE session_id = %s AND state = 0 AND seq = ANY(%s)",
                (letter_id, session_id, list(seqs)),
            )
            await _change_pending(
                conn,
                session_id,
                -cursor.rowcount,
                "attempts = 0, last_error = %s",
                (reason[:500],),
                dead=1,
            )
            return letter_id

    async def release(self, *, owner: str, session_id: str, next_attempt_at: float = 0.0) -> None:
        """Give a lease back without counting an attempt."""
        await self._changed(
            "UPDATE memory_sessions SET lease_owner = NULL, lease_until = NULL, "
            "next_attempt_at = GREATEST(next_attempt_at, %s) "
            "WHERE session_id = %s AND lease_owner = %s",
            (next_attempt_at, session_id, owner),
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
            where = "" if ids is None else " AND id = ANY(%s)"
            cursor = await conn.execute(
                "SELECT id, session_id FROM memory_dead_letters "  # noqa: S608 - fixed fragment
                f"WHERE replayed_at IS NULL{where} ORDER BY session_id, id FOR UPDATE",
                () if ids is None else (list(ids),),
            )
            total = 0
            for letter_id, session_id in await cursor.fetchall():
                await _lock_session(conn, str(session_id))
                moved = await conn.execute(
                    "UPDATE memory_turns SET state = 0, dead_letter_id = NULL "
                    "WHERE state = 2 AND dead_letter_id = %s",
                    (letter_id,),
                )
                await conn.execute(
                    "UPDATE memory_dead_letters SET replayed_at = %s WHERE id = %s",
                    (now, letter_id),
                )
                await _change_pending(
                    conn,
                    str(session_id),
                    moved.rowcount,
                    "attempts = 0, next_attempt_at = 0, last_error = NULL",
                    (),
                    dead=-1,
                )
                total += moved.rowcount
        if total:
            self.notifier.committed()  # wake the workers of every process
        return total

    async def purge_delivered(self, *, older_than: float, limit: int = 1000) -> int:
        """Remove one bounded step of what retention no longer needs (one transaction).

        At most ``limit`` rows: turns delivered before ``older_than``, then dead letters
        replayed before it, then sessions created before it with nothing pending, no
        lease and no turn left. Pending turns and unreplayed dead letters stay. A session
        removed here while a replica still caches it is created again by that replica's
        next write (see :mod:`engram_voice.memory.postgres_writes`); a write racing the
        delete locks the row first, and the delete re-checks ``pending = 0`` after it.
        """
        async with self._conn() as conn:
            cursor = await conn.execute(_PURGE_TURNS, (older_than, limit))
            removed = cursor.rowcount
            if removed < limit:
                cursor = await conn.execute(_PURGE_LETTERS, (older_than, limit - removed))
                removed += cursor.rowcount
            if removed < limit:
                cursor = await conn.execute(_PURGE_SESSIONS, (older_than, limit - removed))
                removed += cursor.rowcount
            if removed < limit:
                cursor = await conn.execute(_PURGE_CAPTURED, (older_than, limit - removed))
                removed += cursor.rowcount
        return removed

    # -- captured sessions (shared by every replica) --------------------------------------

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
        params = {
            "s": session_id,
            "u": user_id,
            "a": agent,
            "state": CAPTURE_STATES.index(state),
            "until": state_until,
            "now": now,
        }
        async with self._conn() as conn:
            cursor = await conn.execute(MARK_CAPTURE_SQL, params)
            row = await cursor.fetchone()
        assert row is not None  # noqa: S101 - an upsert with RETURNING returns its row
        return CAPTURE_STATES[int(str(row[0]))]

    async def renew_capture(self, session_ids: Sequence[str], *, until: float, now: float) -> int:
        """Extend the leases of live captures in one statement; return how many."""
        async with self._conn() as conn:
            cursor = await conn.execute(
                RENEW_CAPTURE_SQL, {"until": until, "now": now, "ids": list(session_ids)}
            )
            return cursor.rowcount

    async def capture_state(
        self, session_id: str, message_ids: Sequence[str] = ()
    ) -> CaptureState | None:
        """Read a session's capture state and which of ``message_ids`` are stored (one read)."""
        async with self._conn(pipeline=True) as conn:  # BEGIN, the read, COMMIT: one trip
            cursor = await conn.execute(
                CAPTURE_STATE_SQL, {"s": session_id, "ids": list(dict.fromkeys(message_ids))}
            )
            row = await cursor.fetchone()
        if row is None:
            return None
        state, until, stored = row
        return CaptureState(
            state=CAPTURE_STATES[int(str(state))],
            state_until=float(str(until)) if until is not None else None,
            stored=frozenset(str(found) for found in stored or ()),
        )

    async def _changed(self, sql: str, params: tuple[Any, ...]) -> int:
        async with self._conn() as conn:
            cursor = await conn.execute(sql, params)
            return cursor.rowcount


async def _lock_session(conn: Conn, session_id: str) -> tuple[str, str]:
    """Lock the session's row first (the one lock order of every writer); return its owner."""
    cursor = await conn.execute(
        "SELECT user_id, agent FROM memory_sessions WHERE session_id = %s FOR UPDATE",
        (session_id,),
    )
    row = await cursor.fetchone()
    if row is None:
        raise QueueUnavailableError("unknown session")
    return str(row[0]), str(row[1])


async def _change_pending(
    conn: Conn,
    session_id: str,
    delta: int,
    assignments: str,
    params: tuple[Any, ...],
    *,
    dead: int = 0,
    delivered: float | None = None,
) -> None:
    """Add ``delta`` to the session's pending turns (with ``assignments``) and the totals."""
    cursor = await conn.execute(
        f"UPDATE memory_sessions SET pending = pending + %s, {assignments} "  # noqa: S608
        "WHERE session_id = %s RETURNING pending",
        (delta, *params, session_id),
    )
    row = await cursor.fetchone()
    after = int(str(row[0])) if row else 0
    before = after - delta
    sessions = int(after > 0) - int(before > 0)
    if not (delta or sessions or dead or (delivered is not None and delta)):
        return
    await conn.execute(
        "UPDATE memory_queue_counters SET pending = pending + %s, "  # noqa: S608
        "sessions_pending = sessions_pending + %s, dead_letters = dead_letters + %s, "
        "last_delivered_at = CASE WHEN %s::double precision IS NULL THEN last_delivered_at "
        "ELSE GREATEST(COALESCE(last_delivered_at, 0), %s) END "
        f"WHERE shard = {SHARD}",
        (delta, sessions, dead, delivered if delta else None, delivered if delta else None),
    )
