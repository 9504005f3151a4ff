"""Usage in the shared PostgreSQL database (``USAGE_STORE=postgres``), written in batches.

The same contract as the SQLite store (its rules in :mod:`engram_voice.usage.buffered`):
``record`` only puts the write on a bounded queue (call setup never waits for the
database), a writer task takes everything queued and applies it in one transaction, a full
queue drops and counts the write. Every
replica writes to the same tables, so ``engram-voice usage`` sees all of them. The
tables are created by a numbered migration (component ``usage``) under the same
advisory lock as the memory queue's. Connection settings are ``MEMORY_POSTGRES_*``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import psycopg
import structlog
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from engram_voice.memory.postgres_auth import (
    PasswordSource,
    StaticPassword,
    connection_from_settings,
)
from engram_voice.memory.postgres_schema import migrate
from engram_voice.memory.settings import PostgresSettings
from engram_voice.usage.buffered import (
    BATCH,
    FLUSH_TIMEOUT,
    WriteCounts,
    daily_query,
    daily_rows,
)
from engram_voice.usage.records import (
    TOKEN_KINDS,
    CallEnded,
    CallStarted,
    DailyUsage,
    TokensUsed,
    UsageWrite,
)

__all__ = ["PostgresUsageStore"]

_logger = structlog.get_logger("engram_voice.usage")
_TOKENS = ", ".join(f"{k} bigint NOT NULL DEFAULT 0" for k in TOKEN_KINDS)
MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE usage_calls (
        call_id text PRIMARY KEY, user_id text NOT NULL, agent text NOT NULL,
        upstream text NOT NULL, day text NOT NULL, started_at double precision NOT NULL,
        ended_at double precision, seconds double precision, reason text, {_TOKENS});
    CREATE TABLE usage_daily (
        user_id text NOT NULL, day text NOT NULL, calls integer NOT NULL DEFAULT 0,
        seconds double precision NOT NULL DEFAULT 0, {_TOKENS}, PRIMARY KEY (user_id, day));
    CREATE INDEX usage_daily_day ON usage_daily (day);
    """,
)
_ADD_TOKENS = ", ".join(f"{k} = {k} + %({k})s" for k in TOKEN_KINDS)
Conn = psycopg.AsyncConnection[TupleRow]


class PostgresUsageStore:
    """The durable usage store shared by every replica: PostgreSQL, batched transactions."""

    def __init__(
        self,
        conninfo: str,
        *,
        password: PasswordSource | None = None,
        max_pending: int = 10_000,
        connect_timeout: float = 5.0,
    ) -> None:
        self._conninfo = make_conninfo(
            conninfo,
            connect_timeout=max(1, int(connect_timeout)),
            application_name="engram-voice-usage",
            options="-c lock_timeout=5000 -c statement_timeout=10000",
        )
        self._password = password or StaticPassword(None)
        self._connect_timeout = connect_timeout
        self._queue: asyncio.Queue[UsageWrite | asyncio.Future[None] | None] = asyncio.Queue(
            max_pending
        )
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.counts = WriteCounts()

    @classmethod
    def from_settings(cls, settings: PostgresSettings) -> PostgresUsageStore:
        """Build the store on the ``MEMORY_POSTGRES_*`` server (password or Entra)."""
        conninfo, password = connection_from_settings(settings)
        return cls(conninfo, password=password, connect_timeout=settings.connect_timeout_seconds)

    async def _kwargs(self) -> dict[str, Any]:
        secret = await self._password.password()
        return {} if secret is None else {"password": secret}

    async def start(self) -> None:
        """Connect, apply the usage migrations and start the writer task."""
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self._conninfo, kwargs=self._kwargs, min_size=1, max_size=2, open=False,
            timeout=FLUSH_TIMEOUT, name="usage",
        )  # fmt: skip
        await pool.open(wait=True, timeout=self._connect_timeout)
        async with pool.connection() as conn:
            await migrate(conn, component="usage", migrations=MIGRATIONS)
        self._pool = pool
        self._writer = asyncio.create_task(self._run(), name="usage-writer")

    async def close(self) -> None:
        """Commit what is queued (bounded), stop the writer and close the pool."""
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_TIMEOUT):
                    await self._queue.put(None)
                    await writer
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        await self._password.aclose()

    def record(self, write: UsageWrite) -> bool:
        """Queue ``write`` for the writer; drop (and count) it when the queue is full."""
        try:
            self._queue.put_nowait(write)
        except asyncio.QueueFull:
            return self.counts.queue_full(write)
        return True

    async def flush(self) -> None:
        """Wait (bounded) until every write queued before this call is committed."""
        if self._writer is None:
            return
        marker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FLUSH_TIMEOUT):
                await self._queue.put(marker)
                await marker

    async def daily(
        self, *, user_id: str | None = None, since: str | None = None, until: str | None = None
    ) -> list[DailyUsage]:
        """Return usage per user and day, days ``since``..``until`` inclusive, sorted."""
        pool = self._pool
        if pool is None:
            return []
        sql, args = daily_query("%s", user_id, since, until)
        async with pool.connection() as conn:
            cursor = await conn.execute(sql, args)
            rows = await cursor.fetchall()
        return daily_rows(rows)

    async def describe(self) -> dict[str, Any]:
        """Describe the store's health: writer alive, pending and dropped writes, last error."""
        alive = self._writer is not None and not self._writer.done()
        return self.counts.describe("postgres", alive=alive, pending=self._queue.qsize())

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._commit(batch)
            if None in batch:
                return

    async def _commit(self, batch: list[UsageWrite | asyncio.Future[None] | None]) -> None:
        writes = [w for w in batch if w is not None and not isinstance(w, asyncio.Future)]
        pool = self._pool
        started = time.monotonic()
        if writes and pool is not None:
            try:
                async with pool.connection() as conn, conn.transaction():
                    for write in writes:
                        await _apply(conn, write)
                self.counts.committed(len(writes))
            except psycopg.Error as exc:
                self.counts.failed(exc, len(writes))
                _logger.warning(
                    "usage.write_failed",
                    error=type(exc).__name__,
                    writes=len(writes),
                    ms=round((time.monotonic() - started) * 1000),
                )
        for item in batch:
            if isinstance(item, asyncio.Future) and not item.done():
                item.set_result(None)


async def _apply(conn: Conn, write: UsageWrite) -> None:
    """Apply one write to the call record and its user's day (idempotent per call start/end)."""
    await conn.execute(
        "INSERT INTO usage_daily (user_id, day) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (write.user_id, write.day),
    )
    if isinstance(write, CallStarted):
        cursor = await conn.execute(
            "INSERT INTO usage_calls (call_id, user_id, agent, upstream, day, started_at) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                write.call_id,
                write.user_id,
                write.agent,
                write.upstream,
                write.day,
                write.started_at,
            ),
        )
        if cursor.rowcount:
            await conn.execute(
                "UPDATE usage_daily SET calls = calls + 1 WHERE user_id = %s AND day = %s",
                (write.user_id, write.day),
            )
    elif isinstance(write, TokensUsed):
        values = {k: int(write.tokens.get(k, 0)) for k in TOKEN_KINDS}
        await conn.execute(
            f"UPDATE usage_calls SET {_ADD_TOKENS} WHERE call_id = %(call_id)s",  # noqa: S608
            {**values, "call_id": write.call_id},
        )
        await conn.execute(
            f"UPDATE usage_daily SET {_ADD_TOKENS} "  # noqa: S608
            "WHERE user_id = %(user_id)s AND day = %(day)s",
            {**values, "user_id": write.user_id, "day": write.day},
        )
    elif isinstance(write, CallEnded):
        cursor = await conn.execute(
            "UPDATE usage_calls SET seconds = %s, reason = %s, ended_at = %s "
            "WHERE call_id = %s AND seconds IS NULL",
            (write.seconds, write.reason, write.ended_at, write.call_id),
        )
        if cursor.rowcount:
            await conn.execute(
                "UPDATE usage_daily SET seconds = seconds + %s WHERE user_id = %s AND day = %s",
                (write.seconds, write.user_id, write.day),
            )
