"""The PostgreSQL queue's connections: one bounded pool, neutral errors, a rotating password.

Every connection carries the bounds of :func:`session_conninfo` (``lock_timeout``,
``statement_timeout``, an idle-in-transaction limit), and every loan waits at most the
store timeout. Driver errors leave here as the backend-neutral
:class:`~engram_voice.memory.queue.QueueUnavailableError` with a short, secret-free reason
(:func:`describe_error`). A pool that cannot hand out a connection in time may be signing
in with a rotated password, so the password source is then asked to read it anew.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
from psycopg import errors
from psycopg.conninfo import make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from engram_voice.memory.postgres_auth import PasswordSource
from engram_voice.memory.queue import QueueClosedError, QueueUnavailableError

__all__ = ["Conn", "QueuePool", "describe_error", "session_conninfo"]

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


class QueuePool:
    """Pooled connections to the queue's database, lent with a bound; closed until :meth:`open`.

    Used by the queue and by the v4 sink's state (``name`` tells them apart in the logs).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        password: PasswordSource,
        size: int,
        store_timeout: float,
        connect_timeout: float,
        name: str = "memory-queue",
        min_size: int = 2,
    ) -> None:
        self.password = password
        self.name = name
        """The pool's name in psycopg_pool's logs."""
        self.min_size = min_size
        self.conninfo = session_conninfo(
            conninfo, store_timeout=store_timeout, connect_timeout=connect_timeout
        )
        """The connection string with our bounds (no password: that comes per connection)."""
        self.size = size
        self.connect_timeout = connect_timeout
        self._store_timeout = store_timeout
        self._pool: AsyncConnectionPool[Conn] | None = None

    @property
    def is_open(self) -> bool:
        """True between a successful :meth:`open` and :meth:`close`."""
        return self._pool is not None

    async def _kwargs(self) -> dict[str, Any]:
        secret = await self.password.password()
        return {} if secret is None else {"password": secret}

    async def open(self, prepare: Callable[[Conn], Awaitable[object]]) -> None:
        """Connect the pool and run ``prepare`` (the migrations) on one of its connections.

        Raises :class:`QueueUnavailableError` with a neutral reason: the password source's
        own (e.g. a Key Vault that cannot be read) or the database's.
        """
        await self._kwargs()  # a password that cannot be had is the reason to show
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.conninfo,
            kwargs=self._kwargs,
            min_size=min(self.min_size, self.size),
            max_size=self.size,
            open=False,
            timeout=self._store_timeout,
            name=self.name,
        )
        try:
            await pool.open(wait=True, timeout=self.connect_timeout)
            async with pool.connection(timeout=self.connect_timeout) as conn:
                await prepare(conn)
        except (psycopg.Error, TimeoutError) as exc:
            await pool.close()
            if isinstance(exc, PoolTimeout):
                await self.password.refused()  # a rotated password: read it anew
            raise QueueUnavailableError(describe_error(exc)) from exc
        except asyncio.CancelledError:  # stopped while connecting: leave nothing running
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        """Close the pool, then the password source."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        await self.password.aclose()

    @contextlib.asynccontextmanager
    async def lend(self) -> AsyncIterator[Conn]:
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
                await self.password.refused()  # new connections fail: a rotated password?
            raise QueueUnavailableError(describe_error(exc)) from exc

    @contextlib.asynccontextmanager
    async def transaction(self, *, pipeline: bool = False) -> AsyncIterator[Conn]:
        """Lend a pooled connection in a transaction; driver errors become neutral ones.

        ``pipeline`` sends statements without waiting for each answer (libpq pipeline
        mode): BEGIN and the first statements travel together, COMMIT with the last.
        """
        async with self.lend() as conn:
            if pipeline:
                async with conn.pipeline(), conn.transaction():
                    yield conn
            else:
                async with conn.transaction():
                    yield conn

    @contextlib.asynccontextmanager
    async def autocommit(self) -> AsyncIterator[Conn]:
        """Lend a pooled connection in autocommit mode (given back as it was lent).

        A group is written by one statement (see :mod:`postgres_writes`), which on an
        autocommit connection is its own transaction: one round trip, no BEGIN or COMMIT
        of their own. Driver errors become neutral ones, as in :meth:`lend`.
        """
        async with self.lend() as conn:
            await conn.set_autocommit(True)
            try:
                yield conn
            finally:
                if not conn.closed:
                    await conn.set_autocommit(False)
