"""How the delivery worker claims sessions, on every queue backend (SQLite, PostgreSQL)."""

import asyncio
from collections.abc import Sequence

import pytest

from engram_voice.memory.circuit import CircuitBreaker
from engram_voice.memory.delivery import Deliverer, InlineRetryPolicy
from engram_voice.memory.queue import EnqueueBatch, TurnQueue
from engram_voice.memory.sink import Keepalive, SinkMessage, SinkSession
from engram_voice.memory.worker import DeliveryWorker, WorkerOptions
from tests.support.clock import FakeClock
from tests.support.memory import FakeSink


class _OrderSink(FakeSink):
    """The in-memory sink that records which session each call delivered; each call takes 1 s."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.order: list[str] = []
        self.clock = clock

    async def deliver(
        self, session: SinkSession, messages: Sequence[SinkMessage], keepalive: Keepalive
    ) -> int:
        """Record the session, then store as the fake does."""
        self.order.append(session.session_id)
        self.clock.advance(1)
        return await super().deliver(session, messages, keepalive)


def _worker(queue: TurnQueue, sink: FakeSink, clock: FakeClock, claim_turns: int) -> DeliveryWorker:
    circuit = CircuitBreaker(failures=100, cooldown=30, clock=clock)
    options = WorkerOptions(concurrency=1, claim_turns=claim_turns)
    return DeliveryWorker(
        queue, Deliverer(sink, InlineRetryPolicy()), circuit, options, clock=clock
    )


@pytest.mark.parametrize(
    ("sessions", "turns", "claim_turns"), [(2, 2, 1), (5, 3, 1), (4, 6, 2), (7, 5, 3)]
)
async def test_a_session_with_turns_left_waits_behind_the_sessions_ready_before_it(
    queue, clock, sessions, turns, claim_turns
):
    """Claims go round the ready sessions: none is claimed again while another still waits."""
    names = [f"s{n}" for n in range(sessions)]
    for name in names:  # created one second apart: s0 is the oldest
        clock.advance(1)
        ids = [f"{name}m{i}" for i in range(turns)]
        turns_in = [(i, "user", f"text {i}", None) for i in ids]
        await queue.enqueue(
            EnqueueBatch(session_id=name, user_id="alice", agent="elena", turns=turns_in)
        )
    clock.advance(1)
    sink = _OrderSink(clock)
    report = await _worker(queue, sink, clock, claim_turns).drain()
    rounds = -(-turns // claim_turns)
    assert report.delivered == sessions * turns
    assert sink.order == names * rounds
    assert all(len(sink.message_ids(name)) == turns for name in names)


async def _nothing_ready(queue: TurnQueue, clock: FakeClock, state: str) -> None:
    """Leave the queue with sessions (or none) of which none is ready to claim."""
    if state == "empty":
        return
    batch = EnqueueBatch(
        session_id="s", user_id="alice", agent="elena", turns=[("m", "user", "text", None)]
    )
    await queue.enqueue(batch)
    claimed = await queue.claim(owner="a", sessions=1, turns=10, lease_seconds=30, now=clock.now)
    if state == "leased":
        return
    if state == "retrying":
        await queue.schedule_retry(
            owner="a", session_id="s", error="x", next_attempt_at=clock.now + 60
        )
        return
    seqs = [turn.seq for turn in claimed[0].turns]
    await queue.mark_delivered(owner="a", session_id="s", seqs=seqs, now=clock.now)
    await queue.release(owner="a", session_id="s", next_attempt_at=clock.now)


@pytest.mark.parametrize("state", ["empty", "leased", "retrying", "delivered"])
async def test_a_claim_that_finds_nothing_ready_does_not_wait_for_a_held_write_lock(
    queue, backend, clock, state
):
    """An idle worker's poll answers 'nothing' at once while another process holds the lock."""
    await _nothing_ready(queue, clock, state)
    with backend.locked():
        async with asyncio.timeout(10):
            claimed = await queue.claim(
                owner="b", sessions=4, turns=10, lease_seconds=30, now=clock.now
            )
    assert claimed == []
