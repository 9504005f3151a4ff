import asyncio

import pytest

from engram_voice.memory.queue import EnqueueBatch, SessionMismatchError
from engram_voice.memory.sqlite_queue import SqliteTurnQueue


def _batch(session="vs_1", user="alice", ids=("m1", "m2"), agent="elena"):
    return EnqueueBatch(
        session_id=session,
        user_id=user,
        agent=agent,
        turns=[(i, "user", f"text of {i}", None) for i in ids],
    )


async def test_enqueue_is_idempotent_on_session_and_message_id(queue):
    """Posting the same turns again stores nothing new and reports them as duplicates."""
    first = await queue.enqueue(_batch())
    second = await queue.enqueue(_batch())
    third = await queue.enqueue(_batch(ids=("m2", "m3")))
    assert (first.accepted, first.duplicates) == (2, 0)
    assert (second.accepted, second.duplicates) == (0, 2)
    assert (third.accepted, third.duplicates) == (1, 1)
    assert (await queue.stats()).depth == 3


async def test_concurrent_enqueues_share_commits(queue):
    """Many concurrent requests are written with far fewer commits than requests."""
    results = await asyncio.gather(
        *(queue.enqueue(_batch(session=f"s{i}", ids=("m",))) for i in range(50))
    )
    assert sum(r.accepted for r in results) == 50
    assert queue.commits < 50


async def test_a_session_belongs_to_its_first_user_and_agent(queue):
    """Turns for a stored session under another user are refused, and nothing is written."""
    await queue.enqueue(_batch())
    with pytest.raises(SessionMismatchError):
        await queue.enqueue(_batch(user="mallory", ids=("x",)))
    assert (await queue.stats()).depth == 2


async def test_turns_survive_reopening_the_file(tmp_path, clock):
    """What enqueue acknowledged is on disk: a new queue on the same file sees it."""
    path = tmp_path / "q.sqlite3"
    first = SqliteTurnQueue(path, clock=clock)
    await first.open()
    await first.enqueue(_batch())
    await first.close()
    second = SqliteTurnQueue(path, clock=clock)
    await second.open()
    try:
        claims = await second.claim(
            owner="w", sessions=5, turns=10, lease_seconds=30, now=clock.now
        )
        assert [t.message_id for t in claims[0].turns] == ["m1", "m2"]
    finally:
        await second.close()


async def test_claim_returns_turns_in_order_and_leases_the_session(queue, clock):
    """A claimed session comes with its turns in order; another worker cannot claim it."""
    await queue.enqueue(_batch(ids=("b", "a", "c")))
    await queue.enqueue(_batch(ids=("d",)))
    claims = await queue.claim(owner="w1", sessions=5, turns=10, lease_seconds=30, now=clock.now)
    assert [t.message_id for t in claims[0].turns] == ["b", "a", "c", "d"]
    assert (claims[0].user_id, claims[0].agent) == ("alice", "elena")
    assert (
        await queue.claim(owner="w2", sessions=5, turns=10, lease_seconds=30, now=clock.now) == []
    )


async def test_an_expired_lease_lets_another_worker_take_over(queue, clock):
    """A crashed worker's lease runs out and its session is claimed again, turns intact."""
    await queue.enqueue(_batch())
    await queue.claim(owner="crashed", sessions=5, turns=10, lease_seconds=30, now=clock.now)
    later = clock.now + 31
    claims = await queue.claim(owner="w2", sessions=5, turns=10, lease_seconds=30, now=later)
    assert [t.message_id for t in claims[0].turns] == ["m1", "m2"]


async def test_delivered_turns_leave_the_queue_but_still_count_as_duplicates(queue, clock):
    """Delivered turns are no longer pending, and posting them again stores nothing."""
    await queue.enqueue(_batch())
    claim = (await queue.claim(owner="w", sessions=1, turns=10, lease_seconds=30, now=clock.now))[0]
    await queue.mark_delivered(
        owner="w", session_id="vs_1", seqs=[t.seq for t in claim.turns], now=clock.now
    )
    await queue.release(owner="w", session_id="vs_1")
    stats = await queue.stats()
    assert (stats.depth, stats.last_delivered_at) == (0, clock.now)
    assert (await queue.enqueue(_batch())).duplicates == 2
    assert await queue.claim(owner="w", sessions=1, turns=10, lease_seconds=30, now=clock.now) == []


async def test_a_scheduled_retry_waits_until_its_time(queue, clock):
    """After a failed attempt the session is not claimable before next_attempt_at."""
    await queue.enqueue(_batch())
    await queue.claim(owner="w", sessions=1, turns=10, lease_seconds=30, now=clock.now)
    await queue.schedule_retry(
        owner="w", session_id="vs_1", error="down", next_attempt_at=clock.now + 10
    )
    assert await queue.claim(owner="w", sessions=1, turns=10, lease_seconds=30, now=clock.now) == []
    claims = await queue.claim(
        owner="w", sessions=1, turns=10, lease_seconds=30, now=clock.now + 10
    )
    assert claims[0].attempts == 1


async def test_dead_letters_are_listed_and_replayed_in_original_order(queue, clock):
    """A dead-lettered batch is visible with its reason and, replayed, precedes later turns."""
    await queue.enqueue(_batch(ids=("m1", "m2")))
    claim = (await queue.claim(owner="w", sessions=1, turns=10, lease_seconds=30, now=clock.now))[0]
    letter = await queue.dead_letter(
        owner="w",
        session_id="vs_1",
        seqs=[t.seq for t in claim.turns],
        reason="zep answered 400",
        attempts=1,
        now=clock.now,
    )
    await queue.release(owner="w", session_id="vs_1")
    await queue.enqueue(_batch(ids=("m3",)))
    letters = await queue.dead_letters(limit=10, include_replayed=False)
    assert [(d.id, d.turns, d.reason) for d in letters] == [(letter, 2, "zep answered 400")]
    assert (await queue.stats()).dead_letters == 1
    assert await queue.replay([letter], now=clock.now) == 2
    assert await queue.dead_letters(limit=10, include_replayed=False) == []
    claims = await queue.claim(owner="w", sessions=1, turns=10, lease_seconds=30, now=clock.now)
    assert [t.message_id for t in claims[0].turns] == ["m1", "m2", "m3"]


async def test_purge_forgets_old_delivered_turns_only(queue, clock):
    """Purging removes delivered turns past retention and keeps pending ones."""
    await queue.enqueue(_batch(ids=("m1",)))
    claim = (await queue.claim(owner="w", sessions=1, turns=10, lease_seconds=30, now=clock.now))[0]
    await queue.mark_delivered(
        owner="w", session_id="vs_1", seqs=[claim.turns[0].seq], now=clock.now
    )
    await queue.enqueue(_batch(ids=("m2",)))
    assert await queue.purge_delivered(older_than=clock.now + 1) == 1
    assert (await queue.stats()).depth == 1
