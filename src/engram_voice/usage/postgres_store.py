"""Usage in the shared PostgreSQL database (``USAGE_STORE=postgres``), written in batches.

The same contract as the SQLite store (its rules in :mod:`engram_voice.usage.buffered`):
``record`` only puts the write on a bounded buffer (:mod:`engram_voice.usage.pending`;
call setup never waits for the database), a writer task takes everything queued and
applies it in one transaction, a full buffer drops and counts the write. Every replica
writes to the same tables, so ``engram-voice usage`` sees all of them. The tables are
created by a numbered migration (component ``usage``) under the same advisory lock as
the memory queue's. Connection settings are ``MEMORY_POSTGRES_*``.

In the service the store opens in the background (``open_in_background``), like the
memory queue: :class:`~engram_voice.memory.connect.StorageConnector` retries with
backoff (``usage.store_connect_failed``) until the database answers, then runs the
``on_open`` hook (the meter reads today's stored totals) and only then starts the writer,
so what was buffered meanwhile is committed after that read, never counted twice.
Until then writes wait in the buffer and ``/status`` shows the connection state. The
``engram-voice usage`` command opens it at once (an unreachable database is its error).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import structlog
from psycopg.conninfo import make_conninfo
from psycopg_pool import AsyncConnectionPool

from engram_voice.memory.connect import ConnectEvents, StorageConnector
from engram_voice.memory.postgres_auth import (
    PasswordSource,
    StaticPassword,
    connection_from_settings,
)
from engram_voice.memory.postgres_pool import describe_error
from engram_voice.memory.postgres_schema import migrate
from engram_voice.memory.queue import QueueUnavailableError
from engram_voice.memory.settings import PostgresSettings
from engram_voice.usage.buffered import BATCH, FLUSH_TIMEOUT, WriteCounts, daily_query, daily_rows
from engram_voice.usage.pending import PendingWrites
from engram_voice.usage.postgres_writes import MIGRATIONS, Conn, apply_write
from engram_voice.usage.records import DailyUsage, UsageWrite

__all__ = ["MIGRATIONS", "USAGE_STORE_EVENTS", "PostgresUsageStore"]

_logger = structlog.get_logger("engram_voice.usage")
USAGE_STORE_EVENTS = ConnectEvents(
    "usage.store_connect_failed", "usage.store_connect_aborted", "usage.store_connected"
)
"""What the usage store's connector logs (the memory queue's rules, its own names)."""
OnOpen = Callable[[], Awaitable[None]]
RETRY_INITIAL = 0.5
"""Seconds before a batch the database could not take is tried again (doubling, capped)."""
LOG_EVERY_RETRY = 20
"""One ``usage.write_failed`` line for a batch's first failure, then one per this many."""


class PostgresUsageStore:
    """The durable usage store shared by every replica: PostgreSQL, batched transactions."""

    def __init__(
        self,
        conninfo: str,
        *,
        password: PasswordSource | None = None,
        max_pending: int = 10_000,
        connect_timeout: float = 5.0,
        open_in_background: bool = False,
        connect_wait_max: float = 30.0,
    ) -> None:
        self._conninfo = make_conninfo(
            conninfo,
            connect_timeout=max(1, int(connect_timeout)),
            application_name="engram-voice-usage",
            options="-c lock_timeout=5000 -c statement_timeout=10000",
        )
        self._password = password or StaticPassword(None)
        self._connect_timeout = connect_timeout
        self.counts = WriteCounts()
        self._pending = PendingWrites(max_pending, self.counts)
        self._pool: AsyncConnectionPool[Conn] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._background = open_in_background
        self._wait_max = connect_wait_max
        self.connector: StorageConnector | None = None
        """Opens the pool and runs ``on_open``; None until :meth:`start`."""
        self._connecting: asyncio.Task[None] | None = None
        self._held = 0
        """Writes the writer holds (a batch it tries again while the database is away)."""
        self._stopping = False

    @classmethod
    def from_settings(
        cls,
        settings: PostgresSettings,
        *,
        open_in_background: bool = False,
        connect_wait_max: float = 30.0,
    ) -> PostgresUsageStore:
        """Build the store on the ``MEMORY_POSTGRES_*`` server (password or Entra)."""
        conninfo, password = connection_from_settings(settings)
        return cls(
            conninfo,
            password=password,
            connect_timeout=settings.connect_timeout_seconds,
            open_in_background=open_in_background,
            connect_wait_max=connect_wait_max,
        )

    async def _kwargs(self) -> dict[str, Any]:
        secret = await self._password.password()
        return {} if secret is None else {"password": secret}

    @property
    def connected(self) -> bool:
        """Return True once the database is open (and ``on_open`` ran)."""
        return self.connector is not None and self.connector.ready

    async def start(self, on_open: OnOpen | None = None) -> None:
        """Connect, migrate, run ``on_open``, start the writer (in the background if so built).

        Opened at once, an unreachable database raises
        :class:`~engram_voice.memory.queue.QueueUnavailableError` (a neutral reason).
        """
        steps: list[tuple[str, OnOpen]] = [("usage_store", self._open)]
        if on_open is not None:
            steps.append(("usage_totals", _neutral_errors(on_open)))
        self.connector = StorageConnector(
            steps, wait_max=self._wait_max, events=USAGE_STORE_EVENTS, logger=_logger
        )
        if self._background:
            self._connecting = asyncio.create_task(self._connect(), name="usage-store-connect")
            return
        await self.connector.open_now()
        self._start_writer()

    async def _connect(self) -> None:
        assert self.connector is not None  # noqa: S101 - set by start
        await self.connector.run()
        self._start_writer()

    async def _open(self) -> None:
        """Open the pool and apply the usage migrations (one bounded attempt)."""
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self._conninfo, kwargs=self._kwargs, min_size=1, max_size=2, open=False,
            timeout=FLUSH_TIMEOUT, name="usage",
        )  # fmt: skip
        try:
            await pool.open(wait=True, timeout=self._connect_timeout)
            async with pool.connection(timeout=self._connect_timeout) as conn:
                await migrate(conn, component="usage", migrations=MIGRATIONS)
        except (psycopg.Error, TimeoutError) as exc:
            await pool.close()
            raise QueueUnavailableError(describe_error(exc)) from exc
        self._pool = pool

    def _start_writer(self) -> None:
        self._writer = asyncio.create_task(self._run(), name="usage-writer")

    async def close(self) -> None:
        """Commit what is queued (bounded), stop the writer and close the pool.

        Writes still buffered because the database does not answer (never did, or went
        away) are lost; they are counted as dropped and logged (``usage.writes_unsaved``).
        """
        self._stopping = True  # a batch that fails now is not tried again
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
            self._connecting = None
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_TIMEOUT):
                    await self._pending.put_marker(None)
                    await writer
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        unsaved = self._held + self._pending.discard()
        self._held = 0
        if unsaved:
            self.counts.dropped += unsaved
            _logger.warning(
                "usage.writes_unsaved",
                writes=unsaved,
                reason="not connected" if writer is None else "database unavailable",
            )
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        await self._password.aclose()

    def record(self, write: UsageWrite) -> bool:
        """Buffer ``write`` for the writer; drop (and count) it when the buffer is full."""
        return self._pending.put(write)

    async def flush(self) -> None:
        """Wait (bounded) until every write queued before this call is committed.

        Returns at once while the database is not open yet (the writes stay buffered).
        """
        if self._writer is None:
            return
        marker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FLUSH_TIMEOUT):
                await self._pending.put_marker(marker)
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
        """Describe the store: connection, writer alive, pending and dropped writes, last error."""
        alive = self._writer is not None and not self._writer.done()
        pending = len(self._pending) + self._held
        described = self.counts.describe("postgres", alive=alive, pending=pending)
        described["merged_token_writes"] = self._pending.merged
        described["connection"] = (
            self.connector.describe() if self.connector is not None else {"state": "not_started"}
        )
        return described

    async def _run(self) -> None:
        while True:
            batch = await self._pending.take(BATCH)
            writes = [w for w in batch if w is not None and not isinstance(w, asyncio.Future)]
            failures = 0
            self._held = len(writes)
            while writes and not await self._commit(writes, failures):
                failures += 1  # not applied (the database is away): the same batch again
                await asyncio.sleep(min(self._wait_max, RETRY_INITIAL * 2 ** (failures - 1)))
            self._held = 0
            for item in batch:
                if isinstance(item, asyncio.Future) and not item.done():
                    item.set_result(None)
            if None in batch:
                return

    async def _commit(self, writes: list[UsageWrite], failures: int) -> bool:
        """Apply ``writes`` in one transaction; False when they may be tried again.

        That is when they were surely not applied: the database could not be reached, or
        the connection broke before COMMIT. A failed COMMIT (outcome unknown) or any other
        error drops the batch (counted): a retry could count its tokens twice.
        """
        pool = self._pool
        if pool is None:
            return True
        started, applied = time.monotonic(), False
        try:
            async with pool.connection() as conn, conn.transaction():
                for write in writes:
                    await apply_write(conn, write)
                applied = True  # from here only COMMIT can fail: its outcome is unknown
        except psycopg.Error as exc:
            retry = isinstance(exc, psycopg.OperationalError) and not applied
            retry = retry and not self._stopping
            if not retry or failures % LOG_EVERY_RETRY == 0:
                _logger.warning(
                    "usage.write_failed",
                    error=type(exc).__name__,
                    writes=len(writes),
                    ms=round((time.monotonic() - started) * 1000),
                    retrying=retry,
                    failures=failures + 1,
                )
            if retry:
                self.counts.waiting(exc)
                return False
            self.counts.failed(exc, len(writes))  # never retried: it could count twice
            return True
        if failures:
            _logger.info("usage.write_recovered", writes=len(writes), failures=failures)
        self.counts.committed(len(writes))
        return True


def _neutral_errors(step: OnOpen) -> OnOpen:
    """Return ``step`` with database errors raised as a retryable, neutral reason."""

    async def guarded() -> None:
        try:
            await step()
        except (psycopg.Error, TimeoutError) as exc:
            raise QueueUnavailableError(describe_error(exc)) from exc

    return guarded
