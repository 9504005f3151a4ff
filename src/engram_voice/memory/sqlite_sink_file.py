"""The SQLite sink state's connections: one writer thread with group commit, one reader.

One connection on one thread does every write; a second, read-only connection on its own
thread does every read (WAL: a read never waits for a commit). Writes are group
committed: the writes of every session that arrive while a commit runs share the next
transaction (each in its own savepoint), so many sessions in flight cost one commit (one
fsync with ``synchronous=FULL``) together, not two each per batch.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from engram_voice.memory.sqlite_sink_schema import migrate

__all__ = ["SinkStateFile"]

_T = TypeVar("_T")


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


class SinkStateFile:
    """The write connection (group commit) and the read connection of one SQLite file."""

    def __init__(self, path: Path, *, synchronous: str, busy_timeout: float) -> None:
        self._path = path
        self._synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._reader: ThreadPoolExecutor | None = None
        self._read_conn: sqlite3.Connection | None = None
        self._waiting: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.commits = 0
        """Group commits done (many writes share one)."""

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

    async def open(self) -> None:
        """Open both connections, bringing the sink tables to the current version first."""
        loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-state")
        self._conn = await loop.run_in_executor(self._executor, self._connect)
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sink-state-read")
        self._read_conn = await loop.run_in_executor(self._reader, self._connect_reader)

    async def close(self) -> None:
        """Finish the writes in progress, close both connections and their threads."""
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

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        conn, executor = self._conn, self._executor
        if conn is None or executor is None:
            raise RuntimeError("the sink state store is not open")
        return await asyncio.get_running_loop().run_in_executor(executor, fn, conn)

    async def read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run a read on the reading connection (WAL: it never waits for a commit)."""
        conn, executor = self._read_conn, self._reader
        if conn is None or executor is None:
            raise RuntimeError("the sink state store is not open")
        return await asyncio.get_running_loop().run_in_executor(executor, fn, conn)

    async def write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
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
