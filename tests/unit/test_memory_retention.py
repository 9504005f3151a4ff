"""Retention on the SQLite queue: what is purged, in bounded steps, and a file that stays flat."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from engram_voice.envreader import EnvReader
from engram_voice.errors import ConfigurationError
from engram_voice.memory import MemorySettings, build_memory_runtime
from engram_voice.memory.queue import EnqueueBatch
from engram_voice.memory.retention import Retention
from engram_voice.memory.sqlite_queue import SqliteTurnQueue
from engram_voice.memory.sqlite_schema import SCHEMA
from tests.support.clock import FakeClock
from tests.support.memory import FakeSink
from tests.support.polling import async_poll_until

HOUR = 3600.0
TEXT = "We talked about the trip to Lisbon and which museums to see first. " * 3


def _batch(session: str, ids: list[str], user: str = "alice") -> EnqueueBatch:
    return EnqueueBatch(
        session_id=session,
        user_id=user,
        agent="elena",
        turns=[(i, "user", TEXT, None) for i in ids],
    )


async def _deliver_all(queue: SqliteTurnQueue, clock: FakeClock) -> int:
    """Claim every ready session and mark all its turns delivered at ``clock.now``."""
    delivered = 0
    while claims := await queue.claim(
        owner="w", sessions=50, turns=1000, lease_seconds=30, now=clock.now
    ):
        for claim in claims:
            seqs = [t.seq for t in claim.turns]
            await queue.mark_delivered(
                owner="w", session_id=claim.session_id, seqs=seqs, now=clock.now
            )
            await queue.release(owner="w", session_id=claim.session_id)
            delivered += len(seqs)
    return delivered


async def _bury_all(queue: SqliteTurnQueue, clock: FakeClock) -> list[int]:
    """Claim every ready session and move all its turns to a dead letter."""
    letters = []
    while claims := await queue.claim(
        owner="w", sessions=50, turns=1000, lease_seconds=30, now=clock.now
    ):
        for claim in claims:
            letters.append(
                await queue.dead_letter(
                    owner="w",
                    session_id=claim.session_id,
                    seqs=[t.seq for t in claim.turns],
                    reason="zep answered 400",
                    attempts=1,
                    now=clock.now,
                )
            )
            await queue.release(owner="w", session_id=claim.session_id)
    return letters


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read rows straight from the queue file (a second connection, as an operator would)."""
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


async def _purge_all(queue: SqliteTurnQueue, older_than: float, limit: int = 1000) -> int:
    total = 0
    while (done := await queue.purge_delivered(older_than=older_than, limit=limit)) >= limit:
        total += done
    return total + done


@pytest.mark.parametrize("seed", range(8))
async def test_purge_removes_only_delivered_turns_older_than_the_window(tmp_path, clock, seed):
    """Whatever the states and ages, purge removes exactly the delivered turns past the window."""
    rng = random.Random(seed)
    path = tmp_path / "q.sqlite3"
    queue = SqliteTurnQueue(path, clock=clock)
    await queue.open()
    try:
        delivered_at: dict[tuple[str, str], float] = {}
        kept: set[tuple[str, str]] = set()
        for step in range(40):
            session = f"vs_{rng.randrange(6)}"
            ids = [f"m{step}_{n}" for n in range(rng.randint(1, 4))]
            await queue.enqueue(_batch(session, ids))
            action = rng.choice(["deliver", "bury", "leave"])
            if action == "deliver":
                await _deliver_all(queue, clock)
            elif action == "bury":
                await _bury_all(queue, clock)
            clock.advance(rng.uniform(0, 2 * HOUR))
        for key_session, key_id, state, at in _rows(
            path, "SELECT session_id, message_id, state, delivered_at FROM turns"
        ):
            key = (str(key_session), str(key_id))
            if state == 1:
                delivered_at[key] = float(at)  # type: ignore[arg-type]
            else:
                kept.add(key)
        older_than = clock.now - rng.uniform(0, 40 * HOUR)
        await _purge_all(queue, older_than, limit=rng.choice([1, 3, 1000]))
        left = {
            (str(s), str(m)) for s, m in _rows(path, "SELECT session_id, message_id FROM turns")
        }
        expected = kept | {k for k, at in delivered_at.items() if at >= older_than}
        assert left == expected
        assert (await queue.stats()).depth == sum(
            1 for (state,) in _rows(path, "SELECT state FROM turns") if state == 0
        )
    finally:
        await queue.close()


async def test_purge_deletes_at_most_limit_rows_per_step(queue, clock):
    """2,500 expired turns go in steps of 1,000, 1,000 and the rest; a step reports its count."""
    for n in range(25):
        await queue.enqueue(_batch(f"vs_{n}", [f"m{i}" for i in range(100)]))
    await _deliver_all(queue, clock)
    clock.advance(2 * HOUR)
    steps = []
    while True:
        done = await queue.purge_delivered(older_than=clock.now - HOUR, limit=1000)
        steps.append(done)
        if done < 1000:
            break
    assert steps[:2] == [1000, 1000]
    assert 500 <= steps[2] < 1000  # the last 500 turns, then sessions and spare pages
    assert (await queue.purge_delivered(older_than=clock.now - HOUR, limit=1000)) == 0


async def test_unreplayed_dead_letters_and_pending_turns_are_kept_forever(tmp_path, clock):
    """Turns never delivered (pending or dead-lettered) and their sessions survive any purge."""
    path = tmp_path / "q.sqlite3"
    queue = SqliteTurnQueue(path, clock=clock)
    await queue.open()
    try:
        await queue.enqueue(_batch("vs_dead", ["a", "b"]))
        [letter] = await _bury_all(queue, clock)
        await queue.enqueue(_batch("vs_pending", ["c"]))
        clock.advance(400 * 86_400)
        await _purge_all(queue, clock.now)
        assert _rows(path, "SELECT session_id, message_id, state FROM turns ORDER BY seq") == [
            ("vs_dead", "a", 2),
            ("vs_dead", "b", 2),
            ("vs_pending", "c", 0),
        ]
        assert [d.id for d in await queue.dead_letters(limit=5, include_replayed=False)] == [letter]
        assert sorted(_rows(path, "SELECT session_id FROM sessions")) == [
            ("vs_dead",),
            ("vs_pending",),
        ]
    finally:
        await queue.close()


async def test_replayed_dead_letters_and_finished_sessions_go_after_the_window(tmp_path, clock):
    """A replayed, then delivered dead letter and its finished session are removed once old."""
    path = tmp_path / "q.sqlite3"
    queue = SqliteTurnQueue(path, clock=clock)
    await queue.open()
    try:
        await queue.enqueue(_batch("vs_1", ["a", "b"]))
        [letter] = await _bury_all(queue, clock)
        clock.advance(HOUR)
        assert await queue.replay([letter], now=clock.now) == 2
        await _deliver_all(queue, clock)
        clock.advance(HOUR)
        await _purge_all(queue, clock.now - 2 * HOUR)  # inside the window: all kept
        assert len(_rows(path, "SELECT * FROM dead_letters")) == 1
        assert len(_rows(path, "SELECT * FROM sessions")) == 1
        await _purge_all(queue, clock.now)
        assert _rows(path, "SELECT * FROM turns") == []
        assert _rows(path, "SELECT * FROM dead_letters") == []
        assert _rows(path, "SELECT * FROM sessions") == []
        assert (await queue.stats()).dead_letters == 0
    finally:
        await queue.close()


async def test_a_purged_session_takes_turns_again_in_a_process_that_knew_it(tmp_path, clock):
    """A session removed by another process's purge is stored again when its turns come back."""
    path = tmp_path / "q.sqlite3"
    service, worker = SqliteTurnQueue(path, clock=clock), SqliteTurnQueue(path, clock=clock)
    await service.open()
    await worker.open()
    try:
        await service.enqueue(_batch("vs_1", ["a"]))  # the service caches the session's owner
        await _deliver_all(worker, clock)
        clock.advance(HOUR)
        await _purge_all(worker, clock.now)
        assert _rows(path, "SELECT * FROM sessions") == []
        result = await service.enqueue(_batch("vs_1", ["b"]))
        assert result.accepted == 1
        claims = await worker.claim(
            owner="w", sessions=5, turns=10, lease_seconds=30, now=clock.now
        )
        assert [(c.session_id, [t.message_id for t in c.turns]) for c in claims] == [
            ("vs_1", ["b"])
        ]
        assert (await worker.stats()).depth == 1
    finally:
        await service.close()
        await worker.close()


async def test_retention_purges_in_paced_steps_while_writes_go_through(queue, clock):
    """Between two purge steps the queue takes new turns: writes never wait for a whole purge."""
    for n in range(30):
        await queue.enqueue(_batch(f"vs_{n}", [f"m{i}" for i in range(100)]))
    await _deliver_all(queue, clock)
    clock.advance(2 * HOUR)
    pauses: list[float] = []
    written_during: list[int] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        result = await queue.enqueue(_batch("vs_live", [f"live{len(pauses)}"]))
        written_during.append(result.accepted)

    retention = Retention(queue, retain_seconds=HOUR, batch=500, clock=clock, sleep=pause)
    report = await retention.purge()
    assert report.finished
    assert report.removed >= 3000
    assert report.steps == len(pauses) + 1 >= 6
    assert all(p >= 0.005 for p in pauses)
    assert written_during == [1] * len(pauses)
    assert (await queue.stats()).depth == len(pauses)


async def test_retention_runs_once_per_interval_in_the_background(queue, clock):
    """The worker's housekeeping starts one purge per interval and never two at once."""
    retention = Retention(queue, retain_seconds=HOUR, interval=HOUR, clock=clock)
    assert retention.start_if_due(clock.now)
    assert not retention.start_if_due(clock.now)
    await retention.stop()
    clock.advance(HOUR)
    assert retention.start_if_due(clock.now)
    await retention.stop()


async def _steady_cycle(queue: SqliteTurnQueue, clock: FakeClock, cycle: int) -> None:
    """One hour of steady traffic: 20 new sessions of 10 turns, delivered, a few replayed."""
    for n in range(20):
        await queue.enqueue(_batch(f"vs_{cycle}_{n}", [f"m{i}" for i in range(10)]))
    if cycle % 3 == 0:  # now and then a batch is rejected, then replayed and delivered
        letters = await _bury_all(queue, clock)
        await queue.replay(letters, now=clock.now)
    await _deliver_all(queue, clock)
    clock.advance(HOUR)


async def test_the_file_stops_growing_under_steady_traffic(tmp_path, clock):
    """With a 6-hour window and hourly purges, the file's pages stop growing after warm-up."""
    path = tmp_path / "q.sqlite3"
    queue = SqliteTurnQueue(path, clock=clock)
    await queue.open()
    try:
        retention = Retention(queue, retain_seconds=6 * HOUR, batch=200, clock=clock)
        pages = []
        for cycle in range(40):
            await _steady_cycle(queue, clock, cycle)
            await retention.purge()
            pages.append((await queue.storage()).pages)
        warm = max(pages[8:12])
        assert max(pages[12:]) <= warm, pages
        assert len(_rows(path, "SELECT * FROM sessions")) <= 7 * 20
        assert len(_rows(path, "SELECT * FROM dead_letters")) <= 3 * 20
        wal = path.with_name(path.name + "-wal")
        assert wal.stat().st_size <= 16 * 1024 * 1024
    finally:
        await queue.close()


async def test_a_delivered_backlog_shrinks_the_file_again(queue, clock):
    """After a backlog is delivered and purged, free pages beyond a reserve leave the file."""
    await queue.enqueue(_batch("vs_base", ["a"]))
    base = (await queue.storage()).pages
    for n in range(100):
        await queue.enqueue(_batch(f"vs_{n}", [f"m{i}" for i in range(100)]))
    grown = (await queue.storage()).pages
    await _deliver_all(queue, clock)
    clock.advance(2 * HOUR)
    await Retention(queue, retain_seconds=HOUR, batch=500, clock=clock).purge()
    after = await queue.storage()
    assert grown > 10 * base
    assert after.pages <= base + 64 + (after.pages - after.free) // 4 + 8
    assert after.pages < grown / 4


def _old_file(path: Path) -> None:
    """Write a queue file as the previous version did: no auto_vacuum, user_version 0."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    conn.execute(
        "INSERT INTO sessions(session_id, user_id, agent, created_at, pending) "
        "VALUES ('vs_old', 'alice', 'elena', 1, 1)"
    )
    conn.execute(
        "INSERT INTO turns(session_id, message_id, role, text, accepted_at) "
        "VALUES ('vs_old', 'm1', 'user', 'hello', 1)"
    )
    conn.close()


async def test_an_older_file_is_upgraded_once_and_keeps_its_turns(tmp_path, clock):
    """A file from the previous version gets incremental vacuum on first open, and only then."""
    path = tmp_path / "q.sqlite3"
    _old_file(path)
    assert _rows(path, "PRAGMA auto_vacuum") == [(0,)]
    for expected_upgrades in (1, 0):
        queue = SqliteTurnQueue(path, clock=clock)
        with capture_logs() as logs:
            await queue.open()
        try:
            upgrades = [e for e in logs if e["event"] == "memory.queue_file_upgraded"]
            assert len(upgrades) == expected_upgrades
            claims = await queue.claim(
                owner="w", sessions=5, turns=10, lease_seconds=30, now=clock.now
            )
            assert [t.message_id for t in claims[0].turns] == ["m1"]
            await queue.release(owner="w", session_id="vs_old")
        finally:
            await queue.close()
    assert _rows(path, "PRAGMA auto_vacuum") == [(2,)]
    assert _rows(path, "PRAGMA user_version") == [(1,)]


async def test_a_new_file_is_created_with_incremental_vacuum(tmp_path, clock):
    """A queue file created by this version needs no upgrade: incremental vacuum from the start."""
    path = tmp_path / "q.sqlite3"
    queue = SqliteTurnQueue(path, clock=clock)
    with capture_logs() as logs:
        await queue.open()
    await queue.close()
    assert not [e for e in logs if e["event"] == "memory.queue_file_upgraded"]
    assert _rows(path, "PRAGMA auto_vacuum") == [(2,)]
    assert _rows(path, "PRAGMA user_version") == [(1,)]


def _memory_settings(env: dict[str, str]) -> MemorySettings:
    reader = EnvReader(env)
    settings = MemorySettings.from_env(reader)
    reader.raise_if_invalid()
    return settings


def test_default_retention_is_three_days():
    """Delivered turns are kept 3 days by default: far beyond a memory token's 45 minutes."""
    settings = _memory_settings({})
    assert settings.retain_delivered_seconds == 3 * 86_400
    assert settings.retain_delivered_seconds >= settings.token_ttl_seconds


@pytest.mark.parametrize(
    ("retain", "ttl"), [("60", "61"), ("3600", "7200"), ("86400", "604800"), ("2699", None)]
)
def test_a_retention_shorter_than_the_token_lifetime_is_refused(retain, ttl):
    """The dedup window must cover a token's lifetime, or a retried post would be stored twice."""
    env = {"MEMORY_RETAIN_DELIVERED_SECONDS": retain}
    if ttl is not None:
        env["MEMORY_TOKEN_TTL_SECONDS"] = ttl
    with pytest.raises(ConfigurationError, match="MEMORY_RETAIN_DELIVERED_SECONDS"):
        _memory_settings(env)


@pytest.mark.parametrize(("retain", "ttl"), [("60", "60"), ("7200", "3600"), ("604800", "604800")])
def test_a_retention_at_least_the_token_lifetime_is_accepted(retain, ttl):
    """Any retention as long as the token lifetime or longer loads."""
    env = {"MEMORY_RETAIN_DELIVERED_SECONDS": retain, "MEMORY_TOKEN_TTL_SECONDS": ttl}
    assert _memory_settings(env).retain_delivered_seconds == float(retain)


async def test_the_running_worker_purges_in_the_background(tmp_path, clock):
    """A running worker purges from its housekeeping (first at start) and stops it on stop."""
    path = tmp_path / "q.sqlite3"
    queue = SqliteTurnQueue(path, clock=clock)
    await queue.open()
    await queue.enqueue(_batch("vs_old", ["a", "b"]))
    await _deliver_all(queue, clock)
    await queue.close()
    clock.advance(4 * 86_400)
    reader = EnvReader({"MEMORY_SQLITE_PATH": str(path), "MEMORY_POLL_SECONDS": "0.05"})
    settings = MemorySettings.from_env(reader)
    reader.raise_if_invalid()
    runtime = build_memory_runtime(settings, sink=FakeSink(), run_worker=True, clock=clock)
    await runtime.start()
    try:
        assert runtime.worker is not None
        retention = runtime.worker.retention
        report = await async_poll_until(lambda: retention.last, what="the first purge")
        assert report.finished
        assert report.removed >= 3  # two turns and their session
    finally:
        await runtime.stop()
    assert _rows(path, "SELECT * FROM turns") == []


async def test_other_stores_are_purged_with_the_same_cut_off(queue, clock):
    """A store kept for the same window (the sink's records) is purged once, after the queue."""
    calls: list[float] = []

    async def purge_records(*, older_than: float) -> int:
        calls.append(older_than)
        return 2

    retention = Retention(queue, retain_seconds=HOUR, clock=clock, also=[purge_records])
    report = await retention.purge()
    assert calls == [clock.now - HOUR]
    assert report.removed == 2
