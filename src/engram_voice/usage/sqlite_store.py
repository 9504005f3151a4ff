"""Usage in a SQLite file of its own (WAL), written by one thread in batches.

``record`` only puts the write on a bounded queue, so call setup never waits for the
disk; the writer thread takes everything queued, applies it in one transaction and
commits, then waits for the next write (at most ``flush_seconds``). A crash of the
process loses only writes not yet committed: those of the last batch (well under a
second). When the queue is full the write is dropped, counted and logged, never waited
for (the rules both durable stores share are in :mod:`engram_voice.usage.buffered`).
Reads (``/status``, the CLI) open their own connection off the event loop.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import structlog

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

__all__ = ["SqliteUsageStore"]

_logger = structlog.get_logger("engram_voice.usage")
_TOKENS = ", ".join(f"{k} INTEGER NOT NULL DEFAULT 0" for k in TOKEN_KINDS)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS usage_calls (
    call_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, agent TEXT NOT NULL,
    upstream TEXT NOT NULL, day TEXT NOT NULL, started_at REAL NOT NULL,
    ended_at REAL, seconds REAL, reason TEXT, {_TOKENS});
CREATE TABLE IF NOT EXISTS usage_daily (
    user_id TEXT NOT NULL, day TEXT NOT NULL, calls INTEGER NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0, {_TOKENS}, PRIMARY KEY (user_id, day));
CREATE INDEX IF NOT EXISTS usage_daily_day ON usage_daily (day);
"""
_ADD_TOKENS = ", ".join(f"{k} = {k} + :{k}" for k in TOKEN_KINDS)


class _Flush:
    """A marker on the queue: set once every write before it is committed."""

    def __init__(self) -> None:
        self.done = threading.Event()


class SqliteUsageStore:
    """The durable usage store: one SQLite file, one writer thread, batched commits."""

    def __init__(
        self, path: str | Path, *, max_pending: int = 10_000, flush_seconds: float = 1.0
    ) -> None:
        self.path = Path(path)
        self._queue: queue.Queue[UsageWrite | _Flush | None] = queue.Queue(max_pending)
        self._flush_seconds = flush_seconds
        self._thread: threading.Thread | None = None
        self.counts = WriteCounts()

    async def start(self, on_open: Callable[[], Awaitable[None]] | None = None) -> None:
        """Create the file and schema (off the loop), run ``on_open``, start the writer."""
        await asyncio.to_thread(self._create)
        if on_open is not None:
            await on_open()
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        """Commit what is queued (bounded) and stop the writer thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        await asyncio.to_thread(self._queue.put, None, timeout=FLUSH_TIMEOUT)
        await asyncio.to_thread(thread.join, FLUSH_TIMEOUT)

    def record(self, write: UsageWrite) -> bool:
        """Queue ``write`` for the writer thread; drop (and count) it when the queue is full."""
        try:
            self._queue.put_nowait(write)
        except queue.Full:
            return self.counts.queue_full(write)
        return True

    async def flush(self) -> None:
        """Wait (bounded) until every write queued before this call is committed."""
        if self._thread is None:
            return
        marker = _Flush()
        await asyncio.to_thread(self._queue.put, marker, timeout=FLUSH_TIMEOUT)
        await asyncio.to_thread(marker.done.wait, FLUSH_TIMEOUT)

    async def daily(
        self, *, user_id: str | None = None, since: str | None = None, until: str | None = None
    ) -> list[DailyUsage]:
        """Return usage per user and day from the file (read off the event loop)."""
        return await asyncio.to_thread(self.read_daily, user_id, since, until)

    def read_daily(
        self, user_id: str | None = None, since: str | None = None, until: str | None = None
    ) -> list[DailyUsage]:
        """Read usage per user and day synchronously (the CLI's path)."""
        sql, args = daily_query("?", user_id, since, until)
        with self._connect() as db:
            rows = db.execute(sql, args).fetchall()
        return daily_rows(rows)

    async def describe(self) -> dict[str, Any]:
        """Describe the store's health: writer alive, pending and dropped writes, last error."""
        alive = self._thread is not None and self._thread.is_alive()
        return self.counts.describe("sqlite", alive=alive, pending=self._queue.qsize())

    # -- the writer thread ------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        db.execute("PRAGMA busy_timeout = 5000")
        return db

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = self._connect()
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(_SCHEMA)
        finally:
            db.close()

    def _run(self) -> None:
        db = self._connect()
        db.execute("PRAGMA synchronous = NORMAL")  # WAL: a process crash loses no commit
        try:
            while True:
                try:
                    first = self._queue.get(timeout=self._flush_seconds)
                except queue.Empty:
                    continue
                batch = [first]
                while len(batch) < BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                if not self._commit(db, batch):
                    return
        finally:
            db.close()

    def _commit(self, db: sqlite3.Connection, batch: list[UsageWrite | _Flush | None]) -> bool:
        """Apply ``batch`` in one transaction; False when the batch asked the thread to stop."""
        writes = [w for w in batch if not isinstance(w, _Flush) and w is not None]
        try:
            db.execute("BEGIN IMMEDIATE")
            for write in writes:
                _apply(db, write)
            db.execute("COMMIT")
            self.counts.committed(len(writes))
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self.counts.failed(exc, len(writes))
            _logger.exception("usage.write_failed", error=type(exc).__name__, writes=len(writes))
        for item in batch:
            if isinstance(item, _Flush):
                item.done.set()
        return None not in batch


def _daily_row(db: sqlite3.Connection, user_id: str, day: str) -> None:
    db.execute("INSERT OR IGNORE INTO usage_daily (user_id, day) VALUES (?, ?)", (user_id, day))


def _apply(db: sqlite3.Connection, write: UsageWrite) -> None:
    """Apply one write to the call record and its user's day (idempotent per call start/end)."""
    _daily_row(db, write.user_id, write.day)
    if isinstance(write, CallStarted):
        inserted = db.execute(
            "INSERT OR IGNORE INTO usage_calls (call_id, user_id, agent, upstream, day, "
            "started_at) VALUES (?, ?, ?, ?, ?, ?)",
            (
                write.call_id,
                write.user_id,
                write.agent,
                write.upstream,
                write.day,
                write.started_at,
            ),
        ).rowcount
        if inserted:
            db.execute(
                "UPDATE usage_daily SET calls = calls + 1 WHERE user_id = ? AND day = ?",
                (write.user_id, write.day),
            )
    elif isinstance(write, TokensUsed):
        values = {k: int(write.tokens.get(k, 0)) for k in TOKEN_KINDS}
        db.execute(
            f"UPDATE usage_calls SET {_ADD_TOKENS} WHERE call_id = :call_id",  # noqa: S608
            {**values, "call_id": write.call_id},
        )
        db.execute(
            f"UPDATE usage_daily SET {_ADD_TOKENS} WHERE user_id = :user_id AND day = :day",  # noqa: S608
            {**values, "user_id": write.user_id, "day": write.day},
        )
    elif isinstance(write, CallEnded):
        ended = db.execute(
            "UPDATE usage_calls SET seconds = ?, reason = ?, ended_at = ? "
            "WHERE call_id = ? AND seconds IS NULL",
            (write.seconds, write.reason, write.ended_at, write.call_id),
        ).rowcount
        if ended:
            db.execute(
                "UPDATE usage_daily SET seconds = seconds + ? WHERE user_id = ? AND day = ?",
                (write.seconds, write.user_id, write.day),
            )
