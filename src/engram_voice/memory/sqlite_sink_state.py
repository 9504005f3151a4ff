"""The sink state store in the queue's SQLite file (its own tables, its own schema version).

The tables and their migrations are :mod:`~engram_voice.memory.sqlite_sink_schema`
(``sink_state`` in ``schema_versions``; the queue's own tables are not touched); the
connections are :mod:`~engram_voice.memory.sqlite_sink_file`: one connection on one
thread does every write, group committed (the writes of every session that arrive while a
commit runs share the next transaction, each in its own savepoint, so many sessions in
flight cost one commit together), and a read-only connection on its own thread reads.
This module holds the statements.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from engram_voice.memory.sink_state import (
    MessageKey,
    PendingBatch,
    decode_messages,
    encode_messages,
    purge_in_steps,
)
from engram_voice.memory.sqlite_sink_file import SinkStateFile
from engram_voice.memory.sqlite_sink_schema import MIGRATIONS, SCHEMA_COMPONENT, migrate

__all__ = ["MIGRATIONS", "SCHEMA_COMPONENT", "SqliteSinkState", "migrate"]


class SqliteSinkState:
    """A :class:`~engram_voice.memory.sink_state.SinkStateStore` in one SQLite file."""

    def __init__(
        self,
        path: str | Path,
        *,
        sink: str,
        synchronous: str = "full",
        busy_timeout: float = 3.0,
    ) -> None:
        self._path = Path(path)
        self._sink = sink
        self._file = SinkStateFile(
            self._path, synchronous=synchronous.upper(), busy_timeout=busy_timeout
        )

    def __repr__(self) -> str:
        return f"SqliteSinkState(path={str(self._path)!r}, sink={self._sink!r})"

    @property
    def commits(self) -> int:
        """Group commits done (many writes share one)."""
        return self._file.commits

    async def open(self) -> None:
        """Open the file and bring the sink tables to the current version."""
        await self._file.open()

    async def close(self) -> None:
        """Finish the writes in progress, close the connection and its thread."""
        await self._file.close()

    async def get_id(self, kind: str, our_id: str) -> str | None:
        """Return the sink's id stored for ``(kind, our_id)``, or None."""

        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT sink_id FROM sink_ids WHERE sink = ? AND kind = ? AND our_id = ?",
                (self._sink, kind, our_id),
            ).fetchone()
            return str(row[0]) if row else None

        return await self._file.read(read)

    async def put_id(
        self, kind: str, our_id: str, sink_id: str, *, now: float, replacing: str | None = None
    ) -> str:
        """Store ``sink_id`` unless another id is stored (other than ``replacing``); return it."""

        def write(conn: sqlite3.Connection) -> str:
            conn.execute(
                "INSERT INTO sink_ids(sink, kind, our_id, sink_id, created_at) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT(sink, kind, our_id) "
                "DO UPDATE SET sink_id = excluded.sink_id, created_at = excluded.created_at "
                "WHERE sink_ids.sink_id = ?",
                (self._sink, kind, our_id, sink_id, now, replacing),
            )
            row = conn.execute(
                "SELECT sink_id FROM sink_ids WHERE sink = ? AND kind = ? AND our_id = ?",
                (self._sink, kind, our_id),
            ).fetchone()
            return str(row[0])

        return await self._file.write(write)

    async def forget_id(self, kind: str, our_id: str) -> None:
        """Drop a stored id."""
        await self._file.write(
            lambda conn: conn.execute(
                "DELETE FROM sink_ids WHERE sink = ? AND kind = ? AND our_id = ?",
                (self._sink, kind, our_id),
            )
        )

    async def pending(self, session_id: str) -> PendingBatch | None:
        """Return the session's batch in flight, if any."""

        def read(conn: sqlite3.Connection) -> PendingBatch | None:
            row = conn.execute(
                "SELECT batch_key, target, messages FROM sink_batches "
                "WHERE sink = ? AND session_id = ?",
                (self._sink, session_id),
            ).fetchone()
            if row is None:
                return None
            return PendingBatch(key=row[0], target=row[1], messages=decode_messages(row[2]))

        return await self._file.read(read)

    async def begin(self, session_id: str, batch: PendingBatch, *, now: float) -> None:
        """Record the batch as in flight before it is sent (replacing an older one)."""
        blob = encode_messages(batch.messages)
        await self._file.write(
            lambda conn: conn.execute(
                "INSERT INTO sink_batches(sink, session_id, batch_key, target, messages, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(sink, session_id) DO UPDATE "
                "SET batch_key = excluded.batch_key, target = excluded.target, "
                "messages = excluded.messages, created_at = excluded.created_at",
                (self._sink, session_id, batch.key, batch.target, blob, now),
            )
        )

    async def abandon(self, session_id: str, key: str) -> None:
        """Drop the batch in flight with this key."""
        await self._file.write(
            lambda conn: conn.execute(
                "DELETE FROM sink_batches WHERE sink = ? AND session_id = ? AND batch_key = ?",
                (self._sink, session_id, key),
            )
        )

    async def complete(
        self, session_id: str, key: str, delivered: Sequence[MessageKey], *, now: float
    ) -> None:
        """Drop the batch in flight and record its messages as delivered, atomically."""
        rows = [(self._sink, session_id, mid, part, now) for mid, part in delivered]

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM sink_batches WHERE sink = ? AND session_id = ? AND batch_key = ?",
                (self._sink, session_id, key),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO sink_delivered(sink, session_id, message_id, part, "
                "delivered_at) VALUES (?, ?, ?, ?, ?)",
                rows,
            )

        await self._file.write(write)

    async def delivered(self, session_id: str, keys: Sequence[MessageKey]) -> set[MessageKey]:
        """Return which of ``keys`` are recorded as delivered."""
        if not keys:
            return set()
        wanted = {mid for mid, _ in keys}

        def read(conn: sqlite3.Connection) -> set[MessageKey]:
            found = conn.execute(
                "SELECT message_id, part FROM sink_delivered WHERE sink = ? AND session_id = ? "
                "AND message_id IN (SELECT value FROM json_each(?))",
                (self._sink, session_id, json.dumps(sorted(wanted))),
            ).fetchall()
            return {(str(mid), int(part)) for mid, part in found} & set(keys)

        return await self._file.read(read)

    async def purge(self, *, older_than: float, limit: int = 1000, max_steps: int = 1000) -> int:
        """Forget delivered records (and batches left in flight) older than ``older_than``.

        In steps of at most ``limit`` rows, each its own short write (the queue's writers
        wait behind one step at most), at most ``max_steps`` per call (the rest goes at the
        next purge). Returns how many delivered records were forgotten.
        """

        def step(conn: sqlite3.Connection) -> tuple[int, int]:
            batches = conn.execute(
                "DELETE FROM sink_batches WHERE (sink, session_id) IN (SELECT sink, session_id "
                "FROM sink_batches WHERE sink = ? AND created_at < ? LIMIT ?)",
                (self._sink, older_than, limit),
            ).rowcount
            records = conn.execute(
                "DELETE FROM sink_delivered WHERE (sink, session_id, message_id, part) IN "
                "(SELECT sink, session_id, message_id, part FROM sink_delivered "
                "WHERE sink = ? AND delivered_at < ? LIMIT ?)",
                (self._sink, older_than, limit),
            ).rowcount
            return batches, records

        return await purge_in_steps(
            lambda: self._file.write(step), limit=limit, max_steps=max_steps
        )
