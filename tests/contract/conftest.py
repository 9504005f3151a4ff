"""The backends every contract test runs against: SQLite and a real PostgreSQL.

Queues (``backend``, ``queue``) and sink state stores (``state_backend``, ``state``).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from engram_voice.memory.postgres_queue import PostgresTurnQueue
from engram_voice.memory.postgres_sink_state import PostgresSinkState
from engram_voice.memory.queue import QueueStats, TurnQueue
from engram_voice.memory.sink_state import SinkStateStore
from engram_voice.memory.sqlite_queue import SqliteTurnQueue
from engram_voice.memory.sqlite_sink_state import SqliteSinkState
from tests.support.clock import FakeClock
from tests.support.postgres import PostgresServer

STORE_TIMEOUT = 0.3
"""How long a write waits for a lock held elsewhere in these tests (bounded either way)."""


class Backend:
    """One backend's storage for one test: make queues on it, recount it, lock it."""

    name: str

    def make(self, clock: FakeClock) -> TurnQueue:
        """Return a new (unopened) queue on this test's storage, as another replica would."""
        raise NotImplementedError

    def recount(self) -> QueueStats:
        """Count the figures the slow way, straight from the tables."""
        raise NotImplementedError

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Hold a lock that blocks every queue write until the block ends."""
        raise NotImplementedError


class SqliteBackend(Backend):
    """A queue file in the test's temporary directory."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    def make(self, clock: FakeClock) -> TurnQueue:
        """Return a queue on the test's file."""
        return SqliteTurnQueue(self.path, clock=clock, busy_timeout=STORE_TIMEOUT)

    def recount(self) -> QueueStats:
        """Count the figures with plain COUNT queries on a connection of its own."""
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            return _recount(conn.execute, "", "sqlite")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the file's write lock (another process's BEGIN IMMEDIATE)."""
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()


class PostgresBackend(Backend):
    """A fresh database on the session's PostgreSQL server."""

    name = "postgres"

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.database = server.new_database("queue")

    def make(self, clock: FakeClock) -> TurnQueue:
        """Return a queue on the test's database (password auth, small pool)."""
        return PostgresTurnQueue(
            self.server.conninfo(self.database),
            pool_size=4,
            store_timeout=STORE_TIMEOUT,
            clock=clock,
        )

    def recount(self) -> QueueStats:
        """Count the figures with plain COUNT queries on a connection of its own."""
        with psycopg.connect(self.server.conninfo(self.database)) as conn:

            def run(sql: str) -> Any:
                return conn.execute(sql)  # type: ignore[call-overload]

            return _recount(run, "memory_", "postgres")

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold every session and counter row, as a stuck writer transaction would."""
        with psycopg.connect(self.server.conninfo(self.database)) as conn:
            conn.execute("SELECT 1 FROM memory_sessions FOR UPDATE")
            conn.execute("SELECT 1 FROM memory_queue_counters FOR UPDATE")
            yield
            conn.rollback()


def _recount(execute: Any, prefix: str, backend: str) -> QueueStats:
    depth, oldest = execute(
        f"SELECT COUNT(*), MIN(accepted_at) FROM {prefix}turns WHERE state=0"  # noqa: S608
    ).fetchone()
    (sessions,) = execute(
        f"SELECT COUNT(DISTINCT session_id) FROM {prefix}turns WHERE state=0"  # noqa: S608
    ).fetchone()
    (dead,) = execute(
        f"SELECT COUNT(*) FROM {prefix}dead_letters WHERE replayed_at IS NULL"  # noqa: S608
    ).fetchone()
    (last,) = execute(
        f"SELECT MAX(delivered_at) FROM {prefix}turns WHERE state=1"  # noqa: S608
    ).fetchone()
    return QueueStats(backend, depth, sessions, oldest, dead, last)


@pytest.fixture(
    name="backend",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.process)],
)
def fixture_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Return the storage of one backend for this test (a file, or a fresh database)."""
    if request.param == "sqlite":
        return SqliteBackend(tmp_path / "q.sqlite3")
    return PostgresBackend(request.getfixturevalue("postgres_server"))


@pytest.fixture(name="clock")
def fixture_clock() -> FakeClock:
    """Return a wall clock that moves only when a test says so."""
    return FakeClock()


@pytest.fixture(name="queue")
async def fixture_queue(backend: Backend, clock: FakeClock) -> AsyncIterator[TurnQueue]:
    """Yield an open queue of the backend (closed afterwards)."""
    queue = backend.make(clock)
    await queue.open()
    yield queue
    await queue.close()


class StateBackend:
    """One backend's storage for a sink state test: make stores on it, as replicas would."""

    name: str

    def make(self, sink: str = "zep-v4") -> SinkStateStore:
        """Return a new (unopened) store for ``sink`` on this test's storage."""
        raise NotImplementedError


class SqliteStateBackend(StateBackend):
    """The sink tables in a queue file in the test's temporary directory."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    def make(self, sink: str = "zep-v4") -> SinkStateStore:
        """Return a store on the test's file."""
        return SqliteSinkState(self.path, sink=sink, busy_timeout=STORE_TIMEOUT)


class PostgresStateBackend(StateBackend):
    """The sink tables in a fresh database on the session's PostgreSQL server."""

    name = "postgres"

    def __init__(self, server: PostgresServer) -> None:
        self.server = server
        self.database = server.new_database("sinkstate")

    def make(self, sink: str = "zep-v4") -> SinkStateStore:
        """Return a store on the test's database (password auth, small pool)."""
        return PostgresSinkState(
            self.server.conninfo(self.database),
            sink=sink,
            pool_size=4,
            store_timeout=STORE_TIMEOUT,
        )


@pytest.fixture(
    name="state_backend",
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.process)],
)
def fixture_state_backend(request: pytest.FixtureRequest, tmp_path: Path) -> StateBackend:
    """Return the sink state storage of one backend (a queue file, or a fresh database)."""
    if request.param == "sqlite":
        return SqliteStateBackend(tmp_path / "q.sqlite3")
    return PostgresStateBackend(request.getfixturevalue("postgres_server"))


@pytest.fixture(name="state")
async def fixture_state(state_backend: StateBackend) -> AsyncIterator[SinkStateStore]:
    """Yield an open sink state store of the backend (closed afterwards)."""
    store = state_backend.make()
    await store.open()
    yield store
    await store.close()
