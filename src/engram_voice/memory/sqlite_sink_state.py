"""The sink state store in the queue's SQLite file (its own tables, its own schema version).

``schema_versions`` holds one row per component that versions its tables in this file;
at :meth:`SqliteSinkState.open` every migration newer than the stored ``sink_state``
version runs, with the version bump, in one ``BEGIN IMMEDIATE`` transaction (so two
processes opening an old file at once migrate it once). The queue's own tables are not
touched. One connection on one thread does every read and write. Writes are group
committed: the writes of every session that arrive while a commit runs share the next
transaction (each in its own savepoint), so many sessions in flight cost one commit
(one fsync with ``synchronous=FULL``) together, not two each per batch.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from engram_voice.memory.sink import SinkMessage
from engram_voice.memory.sink_state import MessageKey, PendingBatch

__all__ = ["MIGRATIONS", "SCHEMA_COMPONENT", "SqliteSinkState"]

_T = TypeVar("_T")
SCHEMA_COMPONENT = "sink_state"
MIGRATIONS: tuple[str, ...] = (
    # 1: id map, batch in flight, delivered records
    """
    CREATE TABLE IF NOT EXISTS sink_ids (
        sink       TEXT NOT NULL,
        kind       TEXT NOT NULL,
        our_id     TEXT NOT NULL,
        sink_id    TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (sink, kind, our_id)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS sink_batches (
        sink       TEXT NOT NULL,
        session_id TEXT NOT NULL,
        batch_key  TEXT NOT NULL,
        target     TEXT NOT NULL,
        messages   BLOB NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (sink, session_id)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS sink_delivered (
        sink         TEXT NOT NULL,
        session_id   TEXT NOT NULL,
        message_id   TEXT NOT NULL,
        part         INTEGER NOT NULL,
        delivered_at REAL NOT NULL,
        PRIMARY KEY (sink, session_id, message_id, part)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS sink_delivered_age ON sink_delivered(delivered_at);
    """,
)
"""Migration ``n`` (1-based) brings the tables to version ``n``; only ever append."""

_VERSIONS = """
CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY,
    version   INTEGER NOT NULL
)
"""
_MESSAGES = msgspec.msgpack.Encoder()
_DECODE_MESSAGES = msgspec.msgpack.Decoder(list[SinkMessage])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the missing migrations in one transaction; return the resulting version."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_VERSIONS)
        row = conn.execute(
            "SELECT version FROM schema_versions WHERE component = ?", (SCHEMA_COMPONENT,)
        ).fetchone()
        version = row[0] if row else 0
        for number, script in enumerate(MIGRATIONS, start=1):
            if number > version:
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
        if version < len(MIGRATIONS):
            conn.execute(
                "INSERT INTO schema_versions(component, version) VALUES (?, ?) "
                "ON CONFLICT(component) DO UPDATE SET version = excluded.version",
                (SCHEMA_COMPONENT, len(MIGRATIONS)),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return max(version, len(MIGRATIONS))


def _commit_group(
    conn: sqlite3.Connection, writes: list[Callable[[sqlite3.Connection], Any]]
) -> list[Any]:
    """Run the writes in one transaction, each in a savepoint; return results or errors."""
    results: list[Any] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for write in writes:
            conn.execute("SAVEPOINT one")
            try:
                results.append(write(conn))
            except sqlite3.Error as exc:
                conn.execute("ROLLBACK TO one")
                results.append(exc)
            conn.execute("RELEASE one")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results


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
        self._synchronous = synchronous.upper()
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._waiting: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0
        """Group commits done (many writes share one)."""

    def __repr__(self) -> str:
        return f"SqliteSinkState(path={str(self._path)!r}, sink={self._sink!r})"

    def _connect(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
        migrate(conn)
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, isolation_level=None, check_same_thread=False, timeout=self._busy_timeout
        )
        conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
        conn.execute("PRAGMA query_only=1")
        return conn

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn, executor = self._conn, self._executor
        if conn is None or executor is None:
            raise RuntimeError("the sink state store is not open")
        return await asyncio.get_running_loop().run_in_executor(executor, fn, conn)

    async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run a read on the reading connection (WAL: it never waits for a commit)."""
        conn, executor = self._read_conn, self._reader
        if conn is None or executor is None:
            raise RuntimeError("the sink state store is not open")
        return await asyncio.get_running_loop().run_in_executor(executor, fn, conn)

    async def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn`` in the next group commit; return its result once committed."""
        if self._conn is None:
            raise RuntimeError("the sink state store is not open")
        future: asyncio.Future[_T] = asyncio.get_running_loop().create_future()
        self._waiting.append((fn, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_groups(), name="sink-state-writer")
        return await future

    async def _write_groups(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                writes = [fn for fn, _ in group]
                results = await self._run(functools.partial(_commit_group, writes=writes))
            except Exception as exc:  # noqa: BLE001 - handed to every caller of the group
                results = [exc] * len(group)
            else:
                self.commits += 1
            for (_, future), result in zip(group, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    async def open(self) -> None:
        """Open the file and bring the sink tables to the current version."""
        loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-state")
        self._conn = await loop.run_in_executor(self._executor, self._connect)
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-state-read")
        self._read_conn = await loop.run_in_executor(self._reader, self._connect_reader)

    async def close(self) -> None:
        """Finish the writes in progress, close the connection and its thread."""
        if self._writer is not None:
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        conn, self._conn = self._conn, None
        executor, self._executor = self._executor, None
        loop = asyncio.get_running_loop()
        if executor is not None:
            if conn is not None:
                await loop.run_in_executor(executor, conn.close)
            executor.shutdown(wait=True)
        reader, self._reader = self._reader, None
        read_conn, self._read_conn = self._read_conn, None
        if reader is not None:
            if read_conn is not None:
                await loop.run_in_executor(reader, read_conn.close)
            reader.shutdown(wait=True)

    async def get_id(self, kind: str, our_id: str) -> str | None:
        """Return the sink's id stored for ``(kind, our_id)``, or None."""

        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute(
                "SELECT sink_id FROM sink_ids WHERE sink = ? AND kind = ? AND our_id = ?",
                (self._sink, kind, our_id),
            ).fetchone()
            return str(row[0]) if row else None

        return await self._read(read)

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

        return await self._write(write)

    async def forget_id(self, kind: str, our_id: str) -> None:
        """Drop a stored id."""
        await self._write(
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
            return PendingBatch(key=row[0], target=row[1], messages=_DECODE_MESSAGES.decode(row[2]))

        return await self._read(read)

    async def begin(self, session_id: str, batch: PendingBatch, *, now: float) -> None:
        """Record the batch as in flight before it is sent (replacing an older one)."""
        blob = _MESSAGES.encode(batch.messages)
        await self._write(
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
        await self._write(
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

        await self._write(write)

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

        return await self._read(read)

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

        removed = 0
        for _ in range(max_steps):
            batches, records = await self._write(step)
            removed += records
            if batches < limit and records < limit:
                break
            await asyncio.sleep(0)
        return removed
