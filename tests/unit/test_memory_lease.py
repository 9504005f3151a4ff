"""Short leases renewed by a heartbeat: crash recovery without a second delivery."""

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from engram_voice.envreader import EnvReader
from engram_voice.memory import MemorySettings
from engram_voice.memory.circuit import CircuitBreaker
from engram_voice.memory.delivery import Deliverer, InlineRetryPolicy
from engram_voice.memory.lease import SessionLease
from engram_voice.memory.queue import EnqueueBatch
from engram_voice.memory.sqlite_queue import SqliteTurnQueue
from engram_voice.memory.worker import DeliveryWorker, WorkerOptions
from tests.support.memory import FakeClock, FakeSink

LEASE = WorkerOptions().lease_seconds


def _batch(session: str, count: int) -> EnqueueBatch:
    turns = [(f"m{i:03d}", "user", f"turn {i}", None) for i in range(count)]
    return EnqueueBatch(session_id=session, user_id="alice", agent="elena", turns=turns)


def _worker(queue: Any, sink: FakeSink, clock: FakeClock, owner: str) -> DeliveryWorker:
    return DeliveryWorker(
        queue,
        Deliverer(sink, InlineRetryPolicy(attempts=1, wait_initial=0, wait_max=0, wait_jitter=0)),
        CircuitBreaker(failures=100, cooldown=1, clock=clock),
        WorkerOptions(concurrency=1),
        clock=clock,
        owner=owner,
        sleep=clock.sleep,
    )


def _lease_until(path: Path, session: str) -> float | None:
    with sqlite3.connect(path) as conn:
        (until,) = conn.execute(
            "SELECT lease_until FROM sessions WHERE session_id=?", (session,)
        ).fetchone()
    return float(until) if until is not None else None


async def _until(predicate: Any, what: str) -> None:
    """Poll (bounded) for a condition reached by the event loop and the queue's thread."""
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not reached: {what}")


def test_the_default_lease_is_short_enough_to_resume_within_30_seconds():
    """Settings and options default to a lease of at most 20 s (it was 120 s)."""
    settings = MemorySettings.from_env(EnvReader({}))
    assert settings.lease_seconds == LEASE
    assert LEASE <= 20  # the promise: delivery resumes within ~30 s of a crash


@pytest.mark.parametrize("early", [0.5, 0.9, 0.99])
async def test_a_dead_owners_lease_becomes_claimable_after_the_short_lease(queue, clock, early):
    """A session leased by a worker that died is claimable once the default lease runs out."""
    await queue.enqueue(_batch("vs_1", 3))
    claimed = await queue.claim(
        owner="dead", sessions=1, turns=10, lease_seconds=LEASE, now=clock()
    )
    assert [c.session_id for c in claimed] == ["vs_1"]
    before = await queue.claim(
        owner="new", sessions=1, turns=10, lease_seconds=LEASE, now=clock() + LEASE * early
    )
    assert before == []
    after = await queue.claim(
        owner="new", sessions=1, turns=10, lease_seconds=LEASE, now=clock() + LEASE + 0.01
    )
    assert [t.message_id for t in after[0].turns] == ["m000", "m001", "m002"]


@pytest.mark.parametrize("lease_spans", [2, 5])
async def test_a_live_lease_is_renewed_during_one_slow_sink_call(
    queue, clock, tmp_path, lease_spans
):
    """While one sink call hangs for several lease lengths, nobody else can claim the session."""
    await queue.enqueue(_batch("vs_1", 3))
    sink = FakeSink(gate=asyncio.Event())
    worker = _worker(queue, sink, clock, owner="alive")
    drain = asyncio.create_task(worker.drain())
    await asyncio.wait_for(sink.entered.wait(), 5)
    for _ in range(lease_spans * 3):
        clock.advance(LEASE / 3)
        expected = clock() + LEASE
        await _until(
            lambda at=expected: (_lease_until(tmp_path / "q.sqlite3", "vs_1") or 0) >= at,
            "the heartbeat renewed the lease",
        )
        stolen = await queue.claim(
            owner="other", sessions=1, turns=10, lease_seconds=LEASE, now=clock()
        )
        assert stolen == []
    sink.gate.set()
    report = await asyncio.wait_for(drain, 5)
    assert report.delivered == 3
    assert sink.calls == 1


class _Renewals:
    """The real queue, recording each renewal's answer; ``fail`` makes renewals raise."""

    def __init__(self, queue: SqliteTurnQueue) -> None:
        self._queue = queue
        self.fail = False
        self.answers: list[bool | str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    async def renew(self, **kwargs: Any) -> bool:
        if self.fail:
            self.answers.append("locked")
            raise sqlite3.OperationalError("database is locked")
        held: bool = await self._queue.renew(**kwargs)
        self.answers.append(held)
        return held


@pytest.mark.parametrize("how", ["taken", "renew_fails"])
async def test_a_worker_that_lost_its_lease_sends_no_further_batch(queue, clock, how):
    """Once a renewal fails or finds another owner, the in-flight batch is the last one sent."""
    await queue.enqueue(_batch("vs_1", 60))  # two batches of 30
    lost_before = REGISTRY.get_sample_value("engram_memory_leases_lost_total") or 0.0
    sink = FakeSink(gate=asyncio.Event())
    renewals = _Renewals(queue)
    worker = _worker(renewals, sink, clock, owner="first")
    drain = asyncio.create_task(worker.drain())
    await asyncio.wait_for(sink.entered.wait(), 5)
    if how == "taken":
        taken = await queue.claim(
            owner="second", sessions=1, turns=300, lease_seconds=LEASE, now=clock() + LEASE + 1
        )
        assert [c.session_id for c in taken] == ["vs_1"]
    else:
        renewals.fail = True
    clock.advance(LEASE / 3)  # the heartbeat runs once and finds the lease gone
    await _until(lambda: renewals.answers[-1:] in ([False], ["locked"]), "the heartbeat ran")
    sink.gate.set()
    await asyncio.wait_for(drain, 5)
    assert sink.calls == 1
    assert len(sink.messages["vs_1"]) == 30
    assert (await queue.stats()).depth == 30
    assert REGISTRY.get_sample_value("engram_memory_leases_lost_total") == lost_before + 1


class _RenewSwallowingCancel:
    """A queue whose renewal waits, and may swallow a cancellation as 3.11's wait_for can."""

    def __init__(self, *, swallow: bool) -> None:
        self.swallow = swallow
        self.calls = 0
        self.waiting = asyncio.Event()

    async def renew(self, **_: Any) -> bool:
        """Wait until cancelled; then either re-raise or answer 'held' anyway."""
        self.calls += 1
        self.waiting.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            if not self.swallow:
                raise
        return True


@pytest.mark.parametrize("swallow", [True, False])
async def test_the_heartbeat_stops_when_the_block_ends_even_if_a_cancel_is_swallowed(swallow):
    """Leaving kept_alive ends the heartbeat although a renewal swallowed its cancellation."""
    queue = _RenewSwallowingCancel(swallow=swallow)
    lease = SessionLease(
        queue,  # type: ignore[arg-type]
        owner="w",
        session_id="vs_1",
        lease_seconds=LEASE,
        clock=FakeClock(),
        sleep=lambda _: asyncio.sleep(0),
    )

    async def block() -> None:
        async with lease.kept_alive():
            await queue.waiting.wait()

    # Watched from outside: kept_alive swallows a cancellation of its own, so the old
    # heartbeat (renewing for ever) kept the block from ever ending, timeout or not.
    task = asyncio.create_task(block())
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done
    calls = queue.calls
    for _ in range(20):
        await asyncio.sleep(0)
    assert queue.calls == calls == 1
