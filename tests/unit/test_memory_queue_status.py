"""SQLite queue figures: older files gain running totals, a locked file keeps status prompt.

That the running totals match a recount is part of the queue contract
(tests/contract/test_queue_contract.py), for every backend.
"""

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from engram_voice.credentials.secret import Secret
from engram_voice.envreader import EnvReader
from engram_voice.errors import StorageUnavailableError
from engram_voice.memory import MemorySettings, build_memory_runtime
from engram_voice.memory.queue import EnqueueBatch, QueueStats
from engram_voice.memory.schemas import EnrichMessage
from engram_voice.memory.sqlite_queue import SqliteTurnQueue
from engram_voice.memory.sqlite_schema import SCHEMA

KEYS = [("k1", Secret("k" * 64))]
BOUND = 5.0
"""A guard far above the promised bounds (status 0.5 s, store 0.3 s here) and far below
the 10 s the old busy timeout made callers wait."""


def _batch(session: str, ids: list[str]) -> EnqueueBatch:
    turns = [(i, "user", f"text of {i}", None) for i in ids]
    return EnqueueBatch(session_id=session, user_id="alice", agent="elena", turns=turns)


def _recount(path: Path) -> QueueStats:
    """Count the figures the slow way, on a connection of its own."""
    with sqlite3.connect(path) as conn:
        depth, oldest = conn.execute(
            "SELECT COUNT(*), MIN(accepted_at) FROM turns WHERE state=0"
        ).fetchone()
        (sessions,) = conn.execute(
            "SELECT COUNT(DISTINCT session_id) FROM turns WHERE state=0"
        ).fetchone()
        (dead,) = conn.execute(
            "SELECT COUNT(*) FROM dead_letters WHERE replayed_at IS NULL"
        ).fetchone()
        (last,) = conn.execute("SELECT MAX(delivered_at) FROM turns WHERE state=1").fetchone()
    return QueueStats("sqlite", depth, sessions, oldest, dead, last)


def _make_old_file(path: Path) -> None:
    """Write a queue file as the version before running totals left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    names = conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall()
    for (name,) in names:
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DROP TABLE queue_counters")
    conn.execute(
        "INSERT INTO sessions(session_id, user_id, agent, created_at, pending) "
        "VALUES ('old1', 'alice', 'elena', 1, 2), ('old2', 'bob', 'elena', 2, 1), "
        "('done', 'carol', 'elena', 3, 0)"
    )
    conn.executemany(
        "INSERT INTO turns(session_id, message_id, role, text, accepted_at, state, delivered_at) "
        "VALUES (?, ?, 'user', ?, ?, ?, ?)",
        [
            ("old1", "a", "first", 10.0, 0, None),
            ("old1", "b", "second", 11.0, 0, None),
            ("old2", "c", "third", 12.0, 0, None),
            ("done", "d", None, 5.0, 1, 20.0),
        ],
    )
    conn.execute(
        "INSERT INTO dead_letters(session_id, user_id, agent, turns, reason, attempts, "
        "created_at) VALUES ('done', 'carol', 'elena', 0, 'old', 1, 6)"
    )
    conn.close()


async def test_a_queue_file_from_the_earlier_version_opens_with_its_pending_turns(tmp_path, clock):
    """An existing file gains the running totals (computed once) and keeps its turns."""
    path = tmp_path / "old.sqlite3"
    _make_old_file(path)
    queue = SqliteTurnQueue(path, clock=clock)
    await queue.open()
    try:
        stats = await queue.stats()
        assert (stats.depth, stats.sessions_pending, stats.dead_letters) == (3, 2, 1)
        assert (stats.oldest_pending_at, stats.last_delivered_at) == (10.0, 20.0)
        claims = await queue.claim(owner="w", sessions=5, turns=10, lease_seconds=15, now=clock())
        assert {c.session_id: [t.text for t in c.turns] for c in claims} == {
            "old1": ["first", "second"],
            "old2": ["third"],
        }
        await queue.enqueue(_batch("old1", ["e"]))
        assert (await queue.stats()).depth == _recount(path).depth == 4
    finally:
        await queue.close()
    again = SqliteTurnQueue(path, clock=clock)  # reopening migrates nothing twice
    await again.open()
    try:
        assert (await again.stats()).depth == 4
    finally:
        await again.close()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the write lock from a second, real connection, as ``BEGIN EXCLUSIVE`` would."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        conn.execute("UPDATE sessions SET attempts=attempts")
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


class _StuckStats(SqliteTurnQueue):
    """The real queue, except that reading its figures never finishes (a hung disk)."""

    stuck = False

    async def stats(self) -> QueueStats:
        if self.stuck:
            await asyncio.Event().wait()
        return await super().stats()


def _settings(tmp: Path) -> MemorySettings:
    reader = EnvReader(
        {
            "MEMORY_SQLITE_PATH": str(tmp / "queue.sqlite3"),
            "MEMORY_WORKER": "off",
            "MEMORY_STORE_TIMEOUT_SECONDS": "0.3",
        }
    )
    settings = MemorySettings.from_env(reader)
    reader.raise_if_invalid()
    return settings


@pytest.fixture(name="runtime")
async def fixture_runtime(tmp_path, clock) -> AsyncIterator[Any]:
    """Yield a started runtime (no sink, worker off) with two sessions queued."""
    queue = _StuckStats(tmp_path / "queue.sqlite3", busy_timeout=0.3, clock=clock)
    runtime = build_memory_runtime(_settings(tmp_path), token_keys=KEYS, queue=queue, clock=clock)
    await runtime.start()
    for session in ("vs_1", "vs_2"):
        claims = runtime.verify(runtime.grant(session, "alice", "elena")["token"])
        await runtime.accept(claims, [EnrichMessage(id="m1", role="user", text="hi")])
    yield runtime
    await runtime.stop()


@pytest.mark.parametrize("reads", ["go_on", "hang"])
async def test_status_answers_promptly_while_another_process_holds_the_lock(
    runtime, tmp_path, clock, reads
):
    """/status never waits behind a blocked write: live figures, or the last known ones."""
    await runtime.status()  # figures known from before the lock
    with _locked(tmp_path / "queue.sqlite3"):
        claims = runtime.verify(runtime.grant("vs_3", "alice", "elena")["token"])
        blocked = asyncio.create_task(
            runtime.accept(claims, [EnrichMessage(id="m1", role="user", text="hi")])
        )
        await asyncio.sleep(0)  # the write is queued behind the lock
        clock.advance(7)
        runtime.queue.stuck = reads == "hang"
        async with asyncio.timeout(BOUND):
            queue = (await runtime.status())["queue"]
        with pytest.raises(StorageUnavailableError):
            async with asyncio.timeout(BOUND):
                await blocked
    runtime.queue.stuck = False
    assert queue["depth"] == 2
    assert queue["sessions_pending"] == 2
    if reads == "go_on":  # WAL readers are not blocked by a writer: the figures are live
        assert queue["available"] is True
        assert "error" not in queue
    else:
        assert queue["available"] is False
        assert queue["error"] == "no answer in time"
        assert queue["figures_age_seconds"] == 7.0


async def test_enrich_answers_503_within_the_store_timeout_under_a_lock(runtime, tmp_path):
    """Posts while the file is locked get 503 storage_unavailable within their bound."""
    claims = runtime.verify(runtime.grant("vs_9", "alice", "elena")["token"])
    turns = [EnrichMessage(id=f"m{i}", role="user", text="hi") for i in range(3)]
    with _locked(tmp_path / "queue.sqlite3"):
        for _ in range(3):  # later posts do not pile up behind the first one's wait
            with pytest.raises(StorageUnavailableError) as raised:
                async with asyncio.timeout(BOUND):
                    await runtime.accept(claims, turns)
            assert raised.value.retry_after == 2
    result = await runtime.accept(claims, turns)  # the lock is gone: stored (maybe already)
    assert result.accepted + result.duplicates == 3


@pytest.fixture(name="app_env")
def fixture_app_env(app_env: dict[str, str]) -> dict[str, str]:
    """Return the local-mode environment with a short store timeout."""
    return {**app_env, "MEMORY_STORE_TIMEOUT_SECONDS": "0.3"}


def test_readiness_status_and_enrich_over_http_while_the_file_is_locked(client, app_env):
    """Under a held lock /readyz is 200, /status answers with figures, enrich is a 503."""
    grant = client.app.state.memory.grant("vs_http", "local-user", "elena")
    body = {"session_id": "vs_http", "messages": [{"id": "m1", "role": "user", "text": "hi"}]}
    headers = {"Authorization": f"Bearer {grant['token']}"}
    with _locked(Path(app_env["MEMORY_SQLITE_PATH"])):
        ready = client.get("/readyz")
        status = client.get("/status")
        enrich = client.post("/memory/enrich", json=body, headers=headers)
    assert ready.status_code == 200
    assert status.status_code == 200
    assert status.json()["memory"]["queue"]["available"] is True
    assert (enrich.status_code, enrich.json()["code"]) == (503, "storage_unavailable")
    assert enrich.headers["retry-after"] == "2"
    assert client.post("/memory/enrich", json=body, headers=headers).status_code == 202
