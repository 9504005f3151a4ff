"""The captured-session policy: for a session the server hears, the browser adds nothing.

The record lives in the queue, so every runtime on the same storage (replicas, a
restarted process) decides alike; these tests use several runtimes on one SQLite file
(the contract suite runs the queue's side on PostgreSQL too).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from engram_voice.errors import CapturePendingError, RateLimitedError, StorageUnavailableError
from engram_voice.memory import MemoryRuntime, build_memory_runtime
from engram_voice.memory.captured import LEASE_SECONDS, CaptureAuthority
from engram_voice.memory.queue import CAPTURE_STATES, CaptureState, QueueUnavailableError
from engram_voice.memory.schemas import EnrichMessage
from engram_voice.memory.sqlite_queue import SqliteTurnQueue
from tests.support.clock import FakeClock
from tests.support.memory import FakeSink
from tests.unit.test_memory_worker import KEYS, _settings


def turns(*ids: str, text: str = "said") -> list[EnrichMessage]:
    """Return user turns with ``ids``."""
    return [EnrichMessage(id=i, role="user", text=f"{text} {i}") for i in ids]


@pytest.fixture(name="sink")
def fixture_sink() -> FakeSink:
    """Return an in-memory sink."""
    return FakeSink()


@pytest.fixture(name="clock")
def fixture_clock() -> FakeClock:
    """Return a wall clock that moves only when a test says so."""
    return FakeClock()


class Replicas:
    """Runtimes on one queue file, as service replicas on one shared queue."""

    def __init__(self, tmp_path: Path, sink: FakeSink, clock: FakeClock) -> None:
        self._tmp, self._sink, self._clock = tmp_path, sink, clock
        self.started: list[MemoryRuntime] = []

    async def start(self) -> MemoryRuntime:
        """Start one more runtime on the shared file."""
        runtime = build_memory_runtime(
            _settings(self._tmp), token_keys=KEYS, sink=self._sink, clock=self._clock
        )
        await runtime.start()
        self.started.append(runtime)
        return runtime

    async def stop(self, runtime: MemoryRuntime) -> None:
        """Stop one runtime (its in-flight marks are written first, bounded)."""
        await runtime.stop()
        self.started.remove(runtime)


@pytest.fixture(name="replicas")
async def fixture_replicas(
    tmp_path: Path, sink: FakeSink, clock: FakeClock
) -> AsyncIterator[Replicas]:
    """Yield a factory of runtimes sharing one queue file; all stopped afterwards."""
    replicas = Replicas(tmp_path, sink, clock)
    yield replicas
    for runtime in list(replicas.started):
        await replicas.stop(runtime)


async def mark(runtime: MemoryRuntime, session: str, *, captured: bool) -> None:
    """Mark ``session`` as a sideband would, and wait until the mark is stored."""
    runtime.mark_captured(session, captured=captured, user_id="alice", agent="elena")
    await runtime.captured.settle(5)


async def post(runtime: MemoryRuntime, session: str, posted: Sequence[str]) -> tuple[int, int, int]:
    """Post ``posted`` as the session's browser; return (accepted, duplicates, not_heard)."""
    claims = runtime.verify(runtime.grant(session, "alice", "elena")["token"])
    result, ignored = await runtime.accept_browser(claims, turns(*posted, text="forged"))
    return result.accepted, result.duplicates, ignored


@pytest.mark.parametrize(
    ("posted", "heard", "not_heard"),
    [
        (["item_1"], 1, 0),
        (["item_x"], 0, 1),
        (["item_1", "item_2", "item_x", "item_y"], 2, 2),
        (["item_2", "item_2", "item_z"], 2, 1),
    ],
)
async def test_a_session_captured_on_one_replica_takes_no_unheard_turn_on_another(
    replicas: Replicas, sink: FakeSink, posted: list[str], heard: int, not_heard: int
) -> None:
    """A post to replica B of a session A captures stores nothing; only A's turns land."""
    a, b = await replicas.start(), await replicas.start()
    await mark(a, "vs_1", captured=True)
    await a.accept_captured("vs_1", "alice", "elena", turns("item_1", "item_2"))

    assert await post(b, "vs_1", posted) == (0, heard, not_heard)
    await a.drain()
    assert sink.message_ids("vs_1") == ["item_1", "item_2"]
    assert all(text.startswith("said") for text in sink.texts("vs_1"))


async def test_a_restarted_replica_still_treats_the_session_as_captured(
    replicas: Replicas, sink: FakeSink
) -> None:
    """The authority is durable: after a restart a forged turn is still not heard."""
    a = await replicas.start()
    await mark(a, "vs_1", captured=True)
    await a.accept_captured("vs_1", "alice", "elena", turns("item_1"))
    await replicas.stop(a)
    restarted = await replicas.start()

    assert await post(restarted, "vs_1", ["item_1", "item_forged"]) == (0, 1, 1)
    await restarted.drain()
    assert sink.message_ids("vs_1") == ["item_1"]


async def test_a_session_that_fell_back_takes_the_browsers_turns_on_every_replica(
    replicas: Replicas, sink: FakeSink
) -> None:
    """Once the sideband is lost, the browser's posts are stored (deduplicated by the key)."""
    a, b = await replicas.start(), await replicas.start()
    await mark(a, "vs_1", captured=True)
    await a.accept_captured("vs_1", "alice", "elena", turns("item_1"))
    await mark(a, "vs_1", captured=False)

    assert await post(b, "vs_1", ["item_1", "item_2"]) == (1, 1, 0)
    await b.drain()
    assert sink.message_ids("vs_1") == ["item_1", "item_2"]
    assert (await a.status())["captured_sessions"]["fell_back_to_browser"] == 1


@pytest.mark.parametrize("outcome", ["captured", "lost", "lapsed"])
async def test_a_post_before_capture_is_up_is_held_then_decided_by_the_outcome(
    replicas: Replicas, sink: FakeSink, clock: FakeClock, outcome: str
) -> None:
    """While capture is expected a post is 503 capture_pending; posted again it gets the outcome.

    Captured: only heard turns count (nothing forged lands). Lost, or the expectation
    lapsed (the replica setting up the call died): the browser's turns are stored.
    """
    a, b = await replicas.start(), await replicas.start()
    assert await a.expect_capture("vs_1", "alice", "elena", window=20.0)

    with pytest.raises(CapturePendingError) as held:
        await post(b, "vs_1", ["item_1", "item_x"])
    assert held.value.status == 503
    assert held.value.retry_after is not None
    assert 1 <= held.value.retry_after <= 20
    if outcome == "lapsed":
        clock.advance(21)
    else:
        await mark(a, "vs_1", captured=outcome == "captured")
    await a.accept_captured("vs_1", "alice", "elena", turns("item_1"))

    again = await post(b, "vs_1", ["item_1", "item_x"])
    await a.drain()
    if outcome == "captured":
        assert again == (0, 1, 1)
        assert sink.message_ids("vs_1") == ["item_1"]
    else:
        assert again == (1, 1, 0)
        assert sink.message_ids("vs_1") == ["item_1", "item_x"]


class CountingQueue(SqliteTurnQueue):
    """The SQLite queue, counting capture-state reads."""

    reads = 0

    async def capture_state(
        self, session_id: str, message_ids: Sequence[str] = ()
    ) -> CaptureState | None:
        """Count the read, then read."""
        self.reads += 1
        return await super().capture_state(session_id, message_ids)


def _decision_key(kind: str, stored: frozenset[str]) -> tuple[str, frozenset[str]]:
    return kind, stored


@pytest.mark.parametrize("order", list(itertools.permutations(CAPTURE_STATES)))
async def test_the_replica_cache_never_answers_other_than_the_store(
    tmp_path: Path, clock: FakeClock, order: tuple[str, ...]
) -> None:
    """After every mark, in any order, a warm cache decides exactly as a fresh read does."""
    queue = CountingQueue(tmp_path / "q.sqlite3", clock=clock)
    writer = SqliteTurnQueue(tmp_path / "q.sqlite3", clock=clock)
    await queue.open()
    await writer.open()
    warm = CaptureAuthority(queue, clock=clock, timeout=5)
    try:
        for state in order:
            await writer.mark_capture(
                session_id="vs_1",
                user_id="alice",
                agent="elena",
                state=state,
                now=clock.now,
                state_until=clock.now + 10,
            )
            cold = CaptureAuthority(writer, clock=clock, timeout=5)
            got = await warm.decide("vs_1", ["m1"])
            want = await cold.decide("vs_1", ["m1"])
            assert _decision_key(got.kind, got.stored) == _decision_key(want.kind, want.stored)
    finally:
        await queue.close()
        await writer.close()


async def test_a_session_without_a_record_is_read_once_then_answered_from_the_cache(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Browser-only sessions cost one read: no record can appear after its token exists."""
    queue = CountingQueue(tmp_path / "q.sqlite3", clock=clock)
    await queue.open()
    authority = CaptureAuthority(queue, clock=clock, timeout=5)
    try:
        decisions = [await authority.decide("vs_direct", [f"m{n}"]) for n in range(20)]
    finally:
        await queue.close()
    assert {d.kind for d in decisions} == {"browser"}
    assert queue.reads == 1


async def test_a_record_that_cannot_be_read_refuses_the_post_as_retryable(
    replicas: Replicas, sink: FakeSink
) -> None:
    """When the record cannot be read the post is 503 storage_unavailable, never stored."""
    a = await replicas.start()
    await mark(a, "vs_1", captured=True)
    claims = a.verify(a.grant("vs_1", "alice", "elena")["token"])
    await a.queue.close()
    with pytest.raises(StorageUnavailableError) as refused:
        await a.accept_browser(claims, turns("item_forged"))
    assert refused.value.code == "storage_unavailable"
    assert sink.message_ids("vs_1") == []


async def test_posts_over_the_session_rate_are_refused_before_any_read(
    tmp_path: Path, sink: FakeSink, clock: FakeClock
) -> None:
    """The per-session rate limit comes first: a flood for a captured session costs no reads."""
    queue = CountingQueue(tmp_path / "queue.sqlite3", clock=clock)
    runtime = build_memory_runtime(
        _settings(tmp_path, MEMORY_RATE_PER_MINUTE="3"),
        token_keys=KEYS,
        sink=sink,
        queue=queue,
        clock=clock,
    )
    await runtime.start()
    try:
        await mark(runtime, "vs_1", captured=True)
        answers = []
        for _ in range(10):
            try:
                answers.append(await post(runtime, "vs_1", ["item_x"]))
            except RateLimitedError:
                answers.append(None)
    finally:
        await runtime.stop()
    assert answers[:3] == [(0, 0, 1)] * 3
    assert answers[3:] == [None] * 7
    assert queue.reads == 3


@pytest.mark.parametrize("ended", [False, True])
async def test_a_capture_whose_replica_stops_renewing_falls_back_after_its_lease(
    replicas: Replicas, sink: FakeSink, clock: FakeClock, *, ended: bool
) -> None:
    """A replica that died mid-call hands the session to the browser once its lease lapses.

    A call that ended while captured stays captured for good: its lease never lapses.
    """
    a, b = await replicas.start(), await replicas.start()
    await mark(a, "vs_1", captured=True)
    if ended:
        a.mark_captured("vs_1", captured=True, user_id="alice", agent="elena", final=True)
        await a.captured.settle(5)
    clock.advance(LEASE_SECONDS / 2)
    assert await post(b, "vs_1", ["item_x"]) == (0, 0, 1)
    clock.advance(LEASE_SECONDS)
    after = await post(b, "vs_1", ["item_x"])
    await b.drain()
    if ended:
        assert after == (0, 0, 1)
        assert sink.message_ids("vs_1") == []
    else:
        assert after == (1, 0, 0)
        assert sink.message_ids("vs_1") == ["item_x"]


async def test_the_replica_holding_a_call_keeps_its_lease_alive(
    replicas: Replicas, clock: FakeClock
) -> None:
    """Renewing moves the lease on, so a long call stays captured on every replica."""
    a, b = await replicas.start(), await replicas.start()
    await mark(a, "vs_1", captured=True)
    for _ in range(5):
        clock.advance(LEASE_SECONDS / 2)
        await a.captured.renew()
        assert await post(b, "vs_1", ["item_x"]) == (0, 0, 1)
    assert (await a.status())["captured_sessions"]["captured"] == 1


async def test_the_replica_cache_is_bounded_and_an_evicted_session_is_read_again(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Beyond its size the least recently used answers are forgotten (and read again)."""
    queue = CountingQueue(tmp_path / "q.sqlite3", clock=clock)
    await queue.open()
    authority = CaptureAuthority(queue, clock=clock, timeout=5, max_sessions=3)
    try:
        for n in range(5):
            await authority.decide(f"vs_{n}", ["m"])
        remembered = authority.describe()["remembered"]
        kept = [authority.known_browser(f"vs_{n}") for n in range(5)]
        await authority.decide("vs_0", ["m"])
    finally:
        await queue.close()
    assert remembered == 3
    assert kept == [False, False, True, True, True]
    assert queue.reads == 6


class WriteCountingQueue(SqliteTurnQueue):
    """The SQLite queue, counting capture-state writes (one per transaction asked for)."""

    writes = 0

    async def mark_capture(self, **kwargs: Any) -> str:
        """Count the write, then write."""
        self.writes += 1
        return await super().mark_capture(**kwargs)

    async def mark_captures(self, marks: Sequence[tuple[str, str, str]], **kwargs: Any) -> None:
        """Count the write, then write."""
        self.writes += 1
        await super().mark_captures(marks, **kwargs)


@pytest.mark.parametrize("waiting", [1, 7, 120])
async def test_renewing_captures_awaiting_their_first_item_is_one_write_for_all(
    tmp_path: Path, clock: FakeClock, waiting: int
) -> None:
    """Every capture still awaiting its first item gets its lease renewed, in one write."""
    queue = WriteCountingQueue(tmp_path / "q.sqlite3", clock=clock)
    await queue.open()
    authority = CaptureAuthority(queue, clock=clock, timeout=5)
    try:
        for n in range(waiting):
            authority.mark(f"vs_{n}", "alice", "elena", captured=True, pending=True)
        await authority.settle(5)
        clock.advance(LEASE_SECONDS / 2)
        writes = queue.writes
        await authority.renew()
        assert queue.writes - writes == 1
        for n in range(waiting):
            found = await queue.capture_state(f"vs_{n}")
            assert found is not None
            assert (found.state, found.state_until) == ("expected", clock.now + LEASE_SECONDS)
    finally:
        await queue.close()


class FailingRenewalQueue(SqliteTurnQueue):
    """The SQLite queue whose renewal writes fail (``locked``) or hang, once ``failing``."""

    failing: str | None = None

    async def _fail(self) -> None:
        if self.failing == "locked":
            raise QueueUnavailableError("locked")
        await asyncio.Event().wait()  # hangs until the authority's bound cancels it

    async def mark_captures(self, marks: Sequence[tuple[str, str, str]], **kwargs: Any) -> None:
        """Fail or hang when asked to, else write."""
        if self.failing:
            await self._fail()
        await super().mark_captures(marks, **kwargs)

    async def renew_capture(self, session_ids: Sequence[str], *, until: float, now: float) -> int:
        """Fail or hang when asked to, else write."""
        if self.failing:
            await self._fail()
        return await super().renew_capture(session_ids, until=until, now=now)


@pytest.mark.parametrize(("failing", "error"), [("locked", "locked"), ("hang", "timeout")])
async def test_a_failed_renewal_is_logged_per_write_and_never_raises(
    tmp_path: Path, clock: FakeClock, failing: str, error: str
) -> None:
    """Each failed or timed-out renewal write is logged with its session count; renew returns."""
    queue = FailingRenewalQueue(tmp_path / "q.sqlite3", clock=clock)
    await queue.open()
    authority = CaptureAuthority(queue, clock=clock, timeout=0.2)
    try:
        for n in range(3):
            authority.mark(f"vs_w{n}", "alice", "elena", captured=True, pending=True)
        for n in range(2):
            authority.mark(f"vs_l{n}", "alice", "elena", captured=True)
        await authority.settle(5)
        queue.failing = failing
        with capture_logs() as logs:
            await asyncio.wait_for(authority.renew(), timeout=10)
        failed = [
            (e["sessions"], e["error"]) for e in logs if e["event"] == "memory.capture_renew_failed"
        ]
        assert failed == [(3, error), (2, error)]
    finally:
        await queue.close()
