"""Leases in the queue contract: a worker whose lease was taken changes nothing it leases.

Run against every backend (SQLite, PostgreSQL). Worker ``a`` claims a session, its lease
runs out and worker ``b`` claims the session; whatever ``a`` then does with the lease
(renew it, schedule a retry, give it back) must leave the session as ``b`` holds it. The
outcomes of a sink call (``mark_delivered``, ``dead_letter``) are facts about the turns,
not about the lease, and are recorded whoever holds it, with the totals kept exact: a
random history of two workers (expiring leases, outcomes for part of a claim, repeated or
late) keeps ``stats`` equal to a recount after every step.
"""

import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from engram_voice.memory.queue import EnqueueBatch, TurnQueue
from tests.support.clock import FakeClock

LEASE = 30.0

_LEASE_CALLS: dict[str, Callable[[TurnQueue, float], Awaitable[Any]]] = {
    "renew": lambda q, now: q.renew(owner="a", session_id="vs_1", lease_seconds=LEASE, now=now),
    "schedule_retry": lambda q, now: q.schedule_retry(
        owner="a", session_id="vs_1", error="down", next_attempt_at=now + 600
    ),
    "release": lambda q, now: q.release(owner="a", session_id="vs_1", next_attempt_at=now + 600),
}


async def _taken_over(queue: TurnQueue, clock: FakeClock) -> list[int]:
    """Let ``a`` claim vs_1, its lease run out and ``b`` claim it; return the turns' seqs."""
    turns = [(f"m{i}", "user", f"text {i}", None) for i in range(3)]
    await queue.enqueue(EnqueueBatch(session_id="vs_1", user_id="u", agent="e", turns=turns))
    first = await queue.claim(owner="a", sessions=1, turns=10, lease_seconds=LEASE, now=clock.now)
    clock.advance(LEASE + 1)
    second = await queue.claim(owner="b", sessions=1, turns=10, lease_seconds=LEASE, now=clock.now)
    assert [c.session_id for c in first + second] == ["vs_1", "vs_1"]
    clock.advance(1)
    return [turn.seq for turn in second[0].turns]


@pytest.mark.parametrize("call", sorted(_LEASE_CALLS))
async def test_a_worker_whose_lease_was_taken_changes_nothing(queue, backend, clock, call):
    """Renewing, retrying or releasing a lease another worker took leaves the session as is."""
    await _taken_over(queue, clock)
    before = (await queue.session_progress("vs_1"), backend.recount())
    result = await _LEASE_CALLS[call](queue, clock.now)
    assert result in (None, False)  # renew answers False; the others answer nothing
    assert (await queue.session_progress("vs_1"), backend.recount()) == before
    assert (
        await queue.claim(owner="c", sessions=1, turns=10, lease_seconds=LEASE, now=clock.now) == []
    )
    assert await queue.renew(owner="b", session_id="vs_1", lease_seconds=LEASE, now=clock.now)


@pytest.mark.parametrize("outcome", ["mark_delivered", "dead_letter"])
async def test_a_sink_outcome_is_recorded_whoever_holds_the_lease(queue, backend, clock, outcome):
    """A batch the old owner delivered (or had refused) is recorded once; totals stay exact."""
    seqs = await _taken_over(queue, clock)
    if outcome == "mark_delivered":
        await queue.mark_delivered(owner="a", session_id="vs_1", seqs=seqs[:2], now=clock.now)
    else:
        await queue.dead_letter(
            owner="a", session_id="vs_1", seqs=seqs[:2], reason="400", attempts=1, now=clock.now
        )
    await queue.mark_delivered(owner="b", session_id="vs_1", seqs=seqs, now=clock.now)
    progress = await queue.session_progress("vs_1")
    dead = 2 if outcome == "dead_letter" else 0
    assert (progress.queued, progress.delivered, progress.dead_lettered) == (0, 3 - dead, dead)
    assert await queue.stats() == backend.recount()
    assert await queue.renew(owner="b", session_id="vs_1", lease_seconds=LEASE, now=clock.now)


async def _step(
    queue: TurnQueue, clock: FakeClock, rng: random.Random, held: dict[str, Any]
) -> None:
    """Do one random thing two workers might: enqueue, claim, an outcome, a lease call."""
    worker = rng.choice(["a", "b"])
    action = rng.choice(["enqueue", "claim", "claim", "outcome", "outcome", "lease", "expire"])
    if action == "enqueue":
        ids = [f"m{rng.randint(0, 30)}" for _ in range(rng.randint(1, 4))]
        turns = [(i, "user", f"text of {i}", None) for i in ids]
        session = f"s{rng.randint(0, 3)}"
        await queue.enqueue(EnqueueBatch(session_id=session, user_id="u", agent="e", turns=turns))
    elif action == "claim":
        claimed = await queue.claim(
            owner=worker, sessions=2, turns=rng.randint(1, 5), lease_seconds=LEASE, now=clock.now
        )
        for claim in claimed:  # a worker remembers what it claimed, even after losing it
            held[f"{worker}:{claim.session_id}"] = [t.seq for t in claim.turns]
    elif action == "expire":
        clock.advance(LEASE + 1)
    elif held:
        key = rng.choice(sorted(held))
        owner, session_id = key.split(":")
        seqs = rng.sample(held[key], rng.randint(0, len(held[key])))  # a part, or all again
        lease = {"owner": owner, "session_id": session_id}
        if action == "outcome" and rng.random() < 0.7:
            await queue.mark_delivered(**lease, seqs=seqs, now=clock.now)
        elif action == "outcome":
            await queue.dead_letter(**lease, seqs=seqs, reason="x", attempts=1, now=clock.now)
        else:
            call = rng.choice(["renew", "retry", "release"])
            if call == "renew":
                await queue.renew(**lease, lease_seconds=LEASE, now=clock.now)
            elif call == "retry":
                await queue.schedule_retry(**lease, error="down", next_attempt_at=clock.now)
            else:
                await queue.release(**lease, next_attempt_at=clock.now)
    clock.advance(1)


@pytest.mark.parametrize("seed", range(8))
async def test_totals_match_a_recount_through_takeovers_and_partial_outcomes(
    queue, backend, clock, seed
):
    """Two workers, expiring leases, outcomes for parts of a claim, again and late: exact totals."""
    rng = random.Random(seed)
    held: dict[str, Any] = {}
    for _ in range(40):
        await _step(queue, clock, rng, held)
        assert await queue.stats() == backend.recount()
