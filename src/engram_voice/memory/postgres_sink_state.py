"""The sink state store in the PostgreSQL queue's database, shared by every replica.

With ``MEMORY_QUEUE=postgres`` the v4 sink's id map, batch in flight and delivered records
live next to the queue's tables (same server, database, sign-in and pool settings), so a
session delivered by one replica today and by another after a crash finds the same Zep
thread UUID, the same batch in flight and the same delivered records.

The tables are the component ``sink_state`` of
:func:`~engram_voice.memory.postgres_schema.migrate` (same advisory lock and versions
table as the queue: replicas starting at once migrate once), declared in
:mod:`~engram_voice.memory.postgres_sink_schema`. Primary keys make every
mapping unique: :meth:`PostgresSinkState.put_id` inserts with ``ON CONFLICT`` and reads
back, so two replicas that created a Zep user or thread for the same id at once both end
with the one stored first. Every wait is bounded (pool timeout, ``lock_timeout``,
``statement_timeout``); driver errors leave as
:class:`~engram_voice.memory.queue.QueueUnavailableError` with a short, secret-free reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from engram_voice.memory.postgres_auth import (
    PasswordSource,
    StaticPassword,
    connection_from_settings,
)
from engram_voice.memory.postgres_pool import QueuePool
from engram_voice.memory.postgres_schema import migrate
from engram_voice.memory.postgres_sink_schema import COMPONENT, MIGRATIONS
from engram_voice.memory.queue import QueueUnavailableError
from engram_voice.memory.settings import PostgresSettings
from engram_voice.memory.sink_state import (
    MessageKey,
    PendingBatch,
    decode_messages,
    encode_messages,
    purge_in_steps,
)

__all__ = ["COMPONENT", "MIGRATIONS", "PostgresSinkState"]

_PUT_ID = (
    "INSERT INTO memory_sink_ids (sink, kind, our_id, sink_id, created_at) "
    "VALUES (%(sink)s, %(kind)s, %(our)s, %(id)s, %(now)s) "
    "ON CONFLICT (sink, kind, our_id) DO UPDATE SET sink_id = EXCLUDED.sink_id, "
    "created_at = EXCLUDED.created_at WHERE memory_sink_ids.sink_id = %(replacing)s "
    "RETURNING sink_id"
)
_GET_ID = "SELECT sink_id FROM memory_sink_ids WHERE sink = %s AND kind = %s AND our_id = %s"
_PURGE_BATCHES = (
    "DELETE FROM memory_sink_batches WHERE (sink, session_id) IN (SELECT sink, session_id "
    "FROM memory_sink_batches WHERE sink = %s AND created_at < %s LIMIT %s)"
)
_PURGE_DELIVERED = (
    "DELETE FROM memory_sink_delivered WHERE ctid IN (SELECT ctid FROM memory_sink_delivered "
    "WHERE sink = %s AND delivered_at < %s LIMIT %s)"
)
_PUT_TRIES = 3
Conn = psycopg.AsyncConnection[TupleRow]


class PostgresSinkState:
    """A :class:`~engram_voice.memory.sink_state.SinkStateStore` in a PostgreSQL database."""

    def __init__(
        self,
        conninfo: str,
        *,
        sink: str,
        password: PasswordSource | None = None,
        pool_size: int = 10,
        store_timeout: float = 3.0,
        connect_timeout: float = 5.0,
    ) -> None:
        self._sink = sink
        self._pool_size = pool_size
        self._pool = QueuePool(
            conninfo,
            password=password or StaticPassword(None),
            size=pool_size,
            store_timeout=store_timeout,
            connect_timeout=connect_timeout,
            name="memory-sink-state",
            min_size=1,
        )

    @classmethod
    def from_settings(
        cls, settings: PostgresSettings, *, sink: str, store_timeout: float
    ) -> PostgresSinkState:
        """Build the store on the queue's database (``MEMORY_POSTGRES_*``, Entra or password)."""
        conninfo, password = connection_from_settings(settings)
        return cls(
            conninfo,
            sink=sink,
            password=password,
            pool_size=settings.pool_size,
            store_timeout=store_timeout,
            connect_timeout=settings.connect_timeout_seconds,
        )

    def __repr__(self) -> str:
        return f"PostgresSinkState(sink={self._sink!r}, pool_size={self._pool_size})"

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[Conn]:
        """Lend a pooled connection in a transaction; driver errors become neutral ones."""
        async with self._pool.transaction() as conn:
            yield conn

    async def _execute(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> int:
        async with self._conn() as conn:
            cursor = await conn.execute(sql, params)
            return cursor.rowcount

    async def open(self) -> None:
        """Connect the pool and apply the missing migrations (under the advisory lock).

        Raises :class:`QueueUnavailableError` with a neutral reason; a stop that cancels
        the open leaves no pool behind.
        """
        await self._pool.open(
            lambda conn: migrate(conn, component=COMPONENT, migrations=MIGRATIONS)
        )

    async def close(self) -> None:
        """Close the pool and the password source."""
        await self._pool.close()

    async def get_id(self, kind: str, our_id: str) -> str | None:
        """Return the sink's id stored for ``(kind, our_id)``, or None."""
        async with self._conn() as conn:
            cursor = await conn.execute(_GET_ID, (self._sink, kind, our_id))
            row = await cursor.fetchone()
        return str(row[0]) if row else None

    async def put_id(
        self, kind: str, our_id: str, sink_id: str, *, now: float, replacing: str | None = None
    ) -> str:
        """Store ``sink_id`` unless another id is stored (other than ``replacing``); return it.

        Two replicas storing different ids for one key at once: the first insert wins and
        both get its id back.
        """
        params = {
            "sink": self._sink,
            "kind": kind,
            "our": our_id,
            "id": sink_id,
            "now": now,
            "replacing": replacing,
        }
        for _ in range(_PUT_TRIES):
            async with self._conn() as conn:
                cursor = await conn.execute(_PUT_ID, params)
                row = await cursor.fetchone()
                if row is None:  # another id is stored: read it (a new snapshot)
                    cursor = await conn.execute(_GET_ID, (self._sink, kind, our_id))
                    row = await cursor.fetchone()
            if row is not None:
                return str(row[0])
            # Forgotten between the two statements: insert again (bounded).
        raise QueueUnavailableError("sink id kept changing")

    async def forget_id(self, kind: str, our_id: str) -> None:
        """Drop a stored id."""
        await self._execute(
            "DELETE FROM memory_sink_ids WHERE sink = %s AND kind = %s AND our_id = %s",
            (self._sink, kind, our_id),
        )

    async def pending(self, session_id: str) -> PendingBatch | None:
        """Return the session's batch in flight, if any."""
        async with self._conn() as conn:
            cursor = await conn.execute(
                "SELECT batch_key, target, messages FROM memory_sink_batches "
                "WHERE sink = %s AND session_id = %s",
                (self._sink, session_id),
            )
            row = await cursor.fetchone()
        if row is None:
            return None
        key, target, blob = row
        return PendingBatch(
            key=str(key),
            target=str(target),
            messages=decode_messages(bytes(blob)),
        )

    async def begin(self, session_id: str, batch: PendingBatch, *, now: float) -> None:
        """Record the batch as in flight before it is sent (replacing an older one)."""
        await self._execute(
            "INSERT INTO memory_sink_batches (sink, session_id, batch_key, target, messages, "
            "created_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (sink, session_id) "
            "DO UPDATE SET batch_key = EXCLUDED.batch_key, target = EXCLUDED.target, "
            "messages = EXCLUDED.messages, created_at = EXCLUDED.created_at",
            (
                self._sink,
                session_id,
                batch.key,
                batch.target,
                encode_messages(batch.messages),
                now,
            ),
        )

    async def abandon(self, session_id: str, key: str) -> None:
        """Drop the batch in flight with this key."""
        await self._execute(
            "DELETE FROM memory_sink_batches WHERE sink = %s AND session_id = %s "
            "AND batch_key = %s",
            (self._sink, session_id, key),
        )

    async def complete(
        self, session_id: str, key: str, delivered: Sequence[MessageKey], *, now: float
    ) -> None:
        """Drop the batch in flight and record its messages as delivered, atomically."""
        async with self._conn() as conn:
            await conn.execute(
                "DELETE FROM memory_sink_batches WHERE sink = %s AND session_id = %s "
                "AND batch_key = %s",
                (self._sink, session_id, key),
            )
            await conn.execute(
                "INSERT INTO memory_sink_delivered (sink, session_id, message_id, part, "
                "delivered_at) SELECT %s, %s, m, p, %s "
                "FROM unnest(%s::text[], %s::integer[]) AS d(m, p) "
                "ORDER BY m, p ON CONFLICT DO NOTHING",
                (
                    self._sink,
                    session_id,
                    now,
                    [mid for mid, _ in delivered],
                    [part for _, part in delivered],
                ),
            )

    async def delivered(self, session_id: str, keys: Sequence[MessageKey]) -> set[MessageKey]:
        """Return which of ``keys`` are recorded as delivered (one index range read)."""
        if not keys:
            return set()
        async with self._conn() as conn:
            cursor = await conn.execute(
                "SELECT message_id, part FROM memory_sink_delivered WHERE sink = %s "
                "AND session_id = %s AND message_id = ANY(%s)",
                (self._sink, session_id, sorted({mid for mid, _ in keys})),
            )
            found = await cursor.fetchall()
        return {(str(mid), int(str(part))) for mid, part in found} & set(keys)

    async def purge(self, *, older_than: float, limit: int = 1000, max_steps: int = 1000) -> int:
        """Forget delivered records (and batches left in flight) older than ``older_than``.

        In steps of at most ``limit`` rows, each its own short transaction (writers of
        other replicas wait behind one step at most), at most ``max_steps`` steps per call
        (the rest goes at the next purge). Returns how many delivered records went.
        """

        async def step() -> tuple[int, int]:
            async with self._conn() as conn:
                cursor = await conn.execute(_PURGE_BATCHES, (self._sink, older_than, limit))
                batches = cursor.rowcount
                cursor = await conn.execute(_PURGE_DELIVERED, (self._sink, older_than, limit))
                return batches, cursor.rowcount

        return await purge_in_steps(step, limit=limit, max_steps=max_steps)
