"""The usage stores: per-call records and per-user-per-day aggregates, durable across restarts."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from engram_voice.usage import MemoryUsageStore, SqliteUsageStore, UsageStore
from engram_voice.usage.postgres_store import PostgresUsageStore
from engram_voice.usage.records import TOKEN_KINDS, CallEnded, CallStarted, TokensUsed

DAY = "2027-01-01"
TOKENS = {
    "input_text": 10,
    "input_audio": 20,
    "input_cached": 5,
    "output_text": 3,
    "output_audio": 7,
}


@pytest.fixture(
    name="store",
    params=["sqlite", "memory", pytest.param("postgres", marks=pytest.mark.process)],
)
async def fixture_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[UsageStore]:
    """Yield each store implementation, started (the contract suite runs against each)."""
    store: UsageStore
    if request.param == "sqlite":
        store = SqliteUsageStore(tmp_path / "usage.sqlite3")
    elif request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        store = PostgresUsageStore(server.conninfo(server.new_database("usage")))
    else:
        store = MemoryUsageStore()
    await store.start()
    yield store
    await store.close()


def _call(
    store: UsageStore, call_id: str, user: str, *, day: str = DAY, seconds: float = 60.0
) -> None:
    store.record(CallStarted(call_id, user, "elena", "azure-openai", day, 1.0))
    store.record(TokensUsed(call_id, user, day, TOKENS))
    store.record(TokensUsed(call_id, user, day, TOKENS))
    store.record(CallEnded(call_id, user, day, seconds, "client_hangup", 2.0))


async def test_calls_aggregate_per_user_and_day(store: UsageStore) -> None:
    """Calls, seconds and tokens by kind add up per user and day; filters select rows."""
    _call(store, "c1", "alice")
    _call(store, "c2", "alice", seconds=30.0)
    _call(store, "c3", "bob", day="2027-01-02")
    await store.flush()
    rows = await store.daily()
    assert [(r.day, r.user_id, r.calls, r.seconds) for r in rows] == [
        (DAY, "alice", 2, 90.0),
        ("2027-01-02", "bob", 1, 60.0),
    ]
    assert rows[0].tokens == {kind: 4 * TOKENS[kind] for kind in TOKEN_KINDS}
    assert [r.user_id for r in await store.daily(user_id="bob")] == ["bob"]
    assert [r.day for r in await store.daily(since="2027-01-02")] == ["2027-01-02"]
    assert [r.day for r in await store.daily(until=DAY)] == [DAY]


async def test_a_repeated_start_or_end_counts_once(store: UsageStore) -> None:
    """A call started or ended twice (a replayed write) is counted once."""
    _call(store, "c1", "alice")
    store.record(CallStarted("c1", "alice", "elena", "azure-openai", DAY, 1.0))
    store.record(CallEnded("c1", "alice", DAY, 500.0, "shutdown", 3.0))
    await store.flush()
    (row,) = await store.daily()
    assert (row.calls, row.seconds) == (1, 60.0)


async def test_sqlite_usage_survives_a_restart_of_the_store(tmp_path: Path) -> None:
    """What was flushed before close is read back by a new store on the same file."""
    path = tmp_path / "usage.sqlite3"
    first = SqliteUsageStore(path)
    await first.start()
    _call(first, "c1", "alice")
    await first.close()  # close commits what is queued
    second = SqliteUsageStore(path)
    await second.start()
    try:
        (row,) = await second.daily()
        assert (row.user_id, row.calls, row.seconds, row.tokens["output_audio"]) == (
            "alice",
            1,
            60.0,
            14,
        )
        with sqlite3.connect(path) as db:
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            record = db.execute("SELECT reason, seconds, input_audio FROM usage_calls").fetchone()
        assert record == ("client_hangup", 60.0, 40)
    finally:
        await second.close()


async def test_a_full_write_queue_drops_and_counts_instead_of_blocking(tmp_path: Path) -> None:
    """With the queue full, record returns False at once and /status counts the drop."""
    store = SqliteUsageStore(tmp_path / "usage.sqlite3", max_pending=1)  # writer not started
    assert store.record(CallStarted("c1", "alice", "elena", "azure-openai", DAY, 1.0))
    assert not store.record(CallStarted("c2", "alice", "elena", "azure-openai", DAY, 1.0))
    described = await store.describe()
    assert described["dropped_writes"] == 1
    assert described["healthy"] is False


def _durable(kind: str, path: Path, *, max_pending: int, conninfo: str = "") -> UsageStore:
    if kind == "sqlite":
        return SqliteUsageStore(path / "usage.sqlite3", max_pending=max_pending)
    return PostgresUsageStore(conninfo or "host=127.0.0.1 dbname=usage", max_pending=max_pending)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
@pytest.mark.parametrize("extra", [1, 999, 1000, 1001, 2500])
async def test_every_durable_store_drops_a_write_the_full_queue_cannot_take(
    kind: str, extra: int, tmp_path: Path
) -> None:
    """Each write past a full queue is refused at once and counted; one log line per thousand."""
    store = _durable(kind, tmp_path, max_pending=2)  # not started: nothing drains the queue
    start = CallStarted("c1", "alice", "elena", "azure-openai", DAY, 1.0)
    with capture_logs() as logs:
        assert [store.record(start) for _ in range(2 + extra)] == [True] * 2 + [False] * extra
    described = await store.describe()
    assert (described["pending_writes"], described["dropped_writes"], described["written"]) == (
        2,
        extra,
        0,
    )
    assert (described["healthy"], described["last_error"]) == (False, None)
    dropped = [e for e in logs if e["event"] == "usage.write_dropped"]
    assert [e["dropped"] for e in dropped] == list(range(1, extra + 1, 1000))
    assert all(e["kind"] == "CallStarted" and e["log_level"] == "warning" for e in dropped)
    await store.flush()  # nothing to wait for before the writer runs: returns at once


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.process)])
async def test_every_durable_store_counts_what_its_writer_committed(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """After a flush every write is counted as written, none pending or dropped, and healthy.

    PostgreSQL adds a call's token counts to its entry still waiting (one write, same
    totals) and reports its connection.
    """
    conninfo = ""
    if kind == "postgres":
        server = request.getfixturevalue("postgres_server")
        conninfo = server.conninfo(server.new_database("usage"))
    store = _durable(kind, tmp_path, max_pending=100, conninfo=conninfo)
    await store.start()
    try:
        _call(store, "c1", "alice")
        _call(store, "c2", "bob")
        await store.flush()
        described = await store.describe()
    finally:
        await store.close()
    merged = described.pop("merged_token_writes", 0)
    if kind == "postgres":
        assert described.pop("connection") == {"state": "connected", "attempts": 1}
    assert described == {
        "backend": kind,
        "healthy": True,
        "pending_writes": 0,
        "written": 8 - merged,
        "dropped_writes": 0,
        "last_error": None,
    }
