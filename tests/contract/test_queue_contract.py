"""The queue contract: what every TurnQueue backend (SQLite, PostgreSQL) guarantees."""

import asyncio
import random

import pytest

from engram_voice.memory.queue import (
    EnqueueBatch,
    QueueClosedError,
    QueueUnavailableError,
    SessionMismatchError,
    SessionProgress,
    TurnQueue,
)
from tests.support.clock import FakeClock


def _batch(session="vs_1", user="alice", ids=("m1", "m2"), agent="elena"):
    return EnqueueBatch(
        session_id=session,
        user_id=user,
        agent=agent,
        turns=[(i, "user", f"text of {i}", None) for i in ids],
    )


async def _claim(queue: TurnQueue, clock: FakeClock, owner="w", sessions=5, now=None):
    return await queue.claim(
        owner=owner,
        sessions=sessions,
        turns=10,
        lease_seconds=30,
        now=clock.now if now is None else now,
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


@pytest.mark.parametrize("seed", range(4))
async def test_concurrent_overlapping_requests_store_each_turn_once(queue, clock, seed):
    """Concurrent requests naming overlapping ids store every id once and count it once."""
    rng = random.Random(seed)
    requests = [
        _batch(session=f"s{rng.randint(0, 3)}", ids=[f"m{rng.randint(0, 9)}" for _ in range(3)])
        for _ in range(40)
    ]
    results = await asyncio.gather(*(queue.enqueue(b) for b in requests))
    unique = {(b.session_id, t[0]) for b in requests for t in b.turns}
    assert sum(r.accepted for r in results) == len(unique)
    assert sum(r.accepted + r.duplicates for r in results) == sum(len(b.turns) for b in requests)
    assert (await queue.stats()).depth == len(unique)


async def test_concurrent_enqueues_share_commits(queue):
    """Many concurrent requests are written with far fewer commits than requests."""
    results = await asyncio.gather(
        *(queue.enqueue(_batch(session=f"s{i}", ids=("m",))) for i in range(50))
    )
    assert sum(r.accepted for r in results) == 50
    assert queue.commits < 50


@pytest.mark.parametrize("seed", range(4))
async def test_enqueue_many_answers_each_batch_as_enqueue_would(queue, seed):
    """Many sessions' batches in one call store each turn once; a foreign session fails alone."""
    rng = random.Random(seed)
    await queue.enqueue(_batch(session="owned", ids=("o1",)))
    batches = []
    for n in range(rng.randint(2, 30)):
        if rng.random() < 0.2:
            batches.append(_batch(session="owned", user="mallory", ids=(f"x{n}",)))
        else:
            ids = [f"m{rng.randint(0, 5)}" for _ in range(rng.randint(1, 3))]
            batches.append(_batch(session=f"s{rng.randint(0, 4)}", ids=ids))
    commits = queue.commits
    results = await queue.enqueue_many(batches)
    assert len(results) == len(batches)
    seen = {(b.session_id, t[0]) for b in batches if b.user_id != "mallory" for t in b.turns}
    accepted = 0
    for batch, result in zip(batches, results, strict=True):
        if batch.user_id == "mallory":
            assert isinstance(result, SessionMismatchError)
            continue
        assert result.accepted + result.duplicates == len(batch.turns)
        accepted += result.accepted
    assert accepted == len(seen)
    assert queue.commits - commits <= 2  # shared, not one per batch (PostgreSQL: 2 writers)
    assert (await queue.stats()).depth == len(seen) + 1
    assert await queue.enqueue_many([]) == []


async def test_a_session_belongs_to_its_first_user_and_agent(queue):
    """Turns for a stored session under another user or agent are refused, nothing written."""
    await queue.enqueue(_batch())
    with pytest.raises(SessionMismatchError):
        await queue.enqueue(_batch(user="mallory", ids=("x",)))
    with pytest.raises(SessionMismatchError):
        await queue.enqueue(_batch(agent="marcus", ids=("y",)))
    assert (await queue.stats()).depth == 2


async def test_a_mismatch_in_a_shared_commit_refuses_only_that_request(queue):
    """Requests committed together succeed or fail on their own session's owner alone."""
    good, bad = await asyncio.gather(
        queue.enqueue(_batch(ids=("a",))),
        queue.enqueue(_batch(user="mallory", ids=("b",))),
        return_exceptions=True,
    )
    assert not isinstance(good, BaseException)
    assert good.accepted == 1
    assert isinstance(bad, SessionMismatchError)


async def test_acknowledged_turns_survive_reopening(backend, clock):
    """What enqueue acknowledged is durable: a new queue on the same storage sees it."""
    first = backend.make(clock)
    await first.open()
    await first.enqueue(_batch())
    await first.close()
    second = backend.make(clock)
    await second.open()
    try:
        claims = await _claim(second, clock)
        assert [t.message_id for t in claims[0].turns] == ["m1", "m2"]
    finally:
        await second.close()


async def test_claim_returns_turns_in_order_and_leases_the_session(queue, clock):
    """A claimed session comes with its turns in order; another worker cannot claim it."""
    await queue.enqueue(_batch(ids=("b", "a", "c")))
    await queue.enqueue(_batch(ids=("d",)))
    claims = await _claim(queue, clock, owner="w1")
    assert [t.message_id for t in claims[0].turns] == ["b", "a", "c", "d"]
    assert (claims[0].user_id, claims[0].agent) == ("alice", "elena")
    assert await _claim(queue, clock, owner="w2") == []


async def test_two_replicas_never_lease_the_same_session(backend, clock):
    """Queues on the same storage (two replicas) claim disjoint sessions, all of them."""
    one, two = backend.make(clock), backend.make(clock)
    await one.open()
    await two.open()
    try:
        for i in range(12):
            await one.enqueue(_batch(session=f"s{i}", ids=("m",)))
        first, second = await asyncio.gather(
            _claim(one, clock, owner="a", sessions=8), _claim(two, clock, owner="b", sessions=8)
        )
        ids_a = {c.session_id for c in first}
        ids_b = {c.session_id for c in second}
        assert not ids_a & ids_b
        assert len(ids_a | ids_b) == 12
    finally:
        await one.close()
        await two.close()


async def test_an_expired_lease_lets_another_worker_take_over(queue, clock):
    """A crashed worker's lease runs out and its session is claimed again, turns intact."""
    await queue.enqueue(_batch())
    await _claim(queue, clock, owner="crashed")
    claims = await _claim(queue, clock, owner="w2", now=clock.now + 31)
    assert [t.message_id for t in claims[0].turns] == ["m1", "m2"]


async def test_renew_tells_whether_the_lease_is_still_held(queue, clock):
    """Renewing succeeds while held (even late) and fails once another worker took over."""
    await queue.enqueue(_batch())
    await _claim(queue, clock, owner="slow")
    assert await queue.renew(owner="slow", session_id="vs_1", lease_seconds=30, now=clock.now + 5)
    assert await queue.renew(owner="slow", session_id="vs_1", lease_seconds=30, now=clock.now + 40)
    await _claim(queue, clock, owner="other", now=clock.now + 80)
    assert not await queue.renew(
        owner="slow", session_id="vs_1", lease_seconds=30, now=clock.now + 81
    )
    assert await queue.renew(owner="other", session_id="vs_1", lease_seconds=30, now=clock.now + 81)


async def test_delivered_turns_leave_the_queue_but_still_count_as_duplicates(queue, clock):
    """Delivered turns are no longer pending, and posting them again stores nothing."""
    await queue.enqueue(_batch())
    claim = (await _claim(queue, clock, sessions=1))[0]
    await queue.mark_delivered(
        owner="w", session_id="vs_1", seqs=[t.seq for t in claim.turns], now=clock.now
    )
    await queue.release(owner="w", session_id="vs_1")
    stats = await queue.stats()
    assert (stats.depth, stats.last_delivered_at) == (0, clock.now)
    assert (await queue.enqueue(_batch())).duplicates == 2
    assert await _claim(queue, clock) == []


async def test_a_scheduled_retry_waits_until_its_time(queue, clock):
    """After a failed attempt the session is not claimable before next_attempt_at."""
    await queue.enqueue(_batch())
    await _claim(queue, clock, sessions=1)
    await queue.schedule_retry(
        owner="w", session_id="vs_1", error="down", next_attempt_at=clock.now + 10
    )
    assert await _claim(queue, clock) == []
    claims = await _claim(queue, clock, now=clock.now + 10)
    assert claims[0].attempts == 1


async def test_dead_letters_are_listed_and_replayed_in_original_order(queue, clock):
    """A dead-lettered batch is visible with its reason and, replayed, precedes later turns."""
    await queue.enqueue(_batch(ids=("m1", "m2")))
    claim = (await _claim(queue, clock, sessions=1))[0]
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
    assert [d.replayed_at for d in await queue.dead_letters(limit=10, include_replayed=True)] == [
        clock.now
    ]
    claims = await _claim(queue, clock, sessions=1)
    assert [t.message_id for t in claims[0].turns] == ["m1", "m2", "m3"]


async def test_session_progress_counts_one_sessions_turns_by_state(queue, clock):
    """Progress counts only the asked session's turns as queued, delivered or dead-lettered."""
    assert await queue.session_progress("vs_1") == SessionProgress()
    await queue.enqueue(_batch(ids=("m1", "m2", "m3")))
    await queue.enqueue(_batch(session="vs_2", ids=("x1",)))
    claim = (await _claim(queue, clock, sessions=1))[0]
    seqs = [t.seq for t in claim.turns]
    await queue.mark_delivered(owner="w", session_id="vs_1", seqs=seqs[:1], now=clock.now)
    await queue.dead_letter(
        owner="w", session_id="vs_1", seqs=seqs[1:2], reason="400", attempts=1, now=clock.now
    )
    await queue.schedule_retry(
        owner="w", session_id="vs_1", error="down", next_attempt_at=clock.now + 10
    )
    progress = await queue.session_progress("vs_1")
    assert (progress.queued, progress.delivered, progress.dead_lettered) == (1, 1, 1)
    assert (progress.attempts, progress.next_attempt_at) == (1, clock.now + 10)
    other = await queue.session_progress("vs_2")
    assert (other.queued, other.delivered, other.dead_lettered, other.next_attempt_at) == (
        1,
        0,
        0,
        None,
    )


async def test_purge_forgets_old_delivered_turns_only(queue, clock):
    """Purging removes delivered turns past retention and keeps pending ones."""
    await queue.enqueue(_batch(ids=("m1",)))
    claim = (await _claim(queue, clock, sessions=1))[0]
    await queue.mark_delivered(
        owner="w", session_id="vs_1", seqs=[claim.turns[0].seq], now=clock.now
    )
    await queue.enqueue(_batch(ids=("m2",)))
    assert await queue.purge_delivered(older_than=clock.now + 1) == 1
    assert (await queue.stats()).depth == 1


async def test_purge_steps_are_bounded_and_keep_what_is_not_done(queue, clock):
    """Each purge step removes at most ``limit`` rows; pending turns and unreplayed letters stay."""
    await queue.enqueue(_batch(session="done", ids=[f"d{i}" for i in range(5)]))
    claim = (await _claim(queue, clock, sessions=1))[0]
    await queue.mark_delivered(
        owner="w", session_id="done", seqs=[t.seq for t in claim.turns], now=clock.now
    )
    await queue.release(owner="w", session_id="done")
    await queue.enqueue(_batch(session="buried", ids=("b1",)))
    claim = (await _claim(queue, clock, sessions=1))[0]
    await queue.dead_letter(
        owner="w",
        session_id="buried",
        seqs=[claim.turns[0].seq],
        reason="400",
        attempts=1,
        now=clock.now,
    )
    await queue.release(owner="w", session_id="buried")
    await queue.enqueue(_batch(session="waiting", ids=("w1",)))
    clock.advance(10)
    steps = []
    while (step := await queue.purge_delivered(older_than=clock.now, limit=2)) > 0:
        steps.append(step)
        assert len(steps) < 20
    assert all(step <= 2 for step in steps)
    assert sum(steps) >= 6  # five delivered turns and the finished session "done"
    assert await queue.session_progress("done") == SessionProgress()
    assert (await queue.session_progress("waiting")).queued == 1
    assert (await queue.session_progress("buried")).dead_lettered == 1
    assert len(await queue.dead_letters(limit=10, include_replayed=True)) == 1
    assert (await queue.enqueue(_batch(session="done", ids=("d9",)))).accepted == 1
    assert (await queue.stats()).depth == 2


async def _random_history(queue: TurnQueue, clock: FakeClock, seed: int) -> None:
    """Enqueue, deliver, dead-letter, replay, retry and purge in a seeded random order."""
    rng = random.Random(seed)
    letters: list[int] = []
    for step in range(60):
        clock.advance(1)
        action = rng.choice(["enqueue", "enqueue", "deliver", "bury", "replay", "purge"])
        if action == "enqueue":
            session = f"s{rng.randint(0, 6)}"
            ids = [f"m{rng.randint(0, 40)}" for _ in range(rng.randint(1, 5))]
            await queue.enqueue(
                EnqueueBatch(
                    session_id=session,
                    user_id="alice",
                    agent="elena",
                    turns=[(i, "user", f"text of {i}", None) for i in ids],
                )
            )
            continue
        if action == "replay" and letters:
            await queue.replay([letters.pop(0)] if rng.random() < 0.5 else None, now=clock())
            continue
        if action == "purge":
            await queue.purge_delivered(older_than=clock() - rng.randint(0, 30))
            continue
        claims = await queue.claim(
            owner="w", sessions=2, turns=rng.randint(1, 6), lease_seconds=15, now=clock()
        )
        for claim in claims:
            seqs = [t.seq for t in claim.turns]
            if action == "deliver":
                await queue.mark_delivered(
                    owner="w", session_id=claim.session_id, seqs=seqs, now=clock()
                )
            else:
                letters.append(
                    await queue.dead_letter(
                        owner="w",
                        session_id=claim.session_id,
                        seqs=seqs,
                        reason=f"step {step}",
                        attempts=1,
                        now=clock(),
                    )
                )
            await queue.release(owner="w", session_id=claim.session_id)


@pytest.mark.parametrize("seed", range(8))
async def test_the_running_totals_always_match_a_recount(queue, backend, clock, seed):
    """After any mix of writes, the O(1) figures equal a full COUNT over the tables."""
    await _random_history(queue, clock, seed)
    stats = await queue.stats()
    recount = backend.recount()
    assert stats.backend == backend.name
    assert stats.depth == recount.depth
    assert stats.sessions_pending == recount.sessions_pending
    assert stats.oldest_pending_at == recount.oldest_pending_at
    assert stats.dead_letters == recount.dead_letters
    if recount.last_delivered_at is not None:  # purge forgets turns, not the last delivery
        assert stats.last_delivered_at == recount.last_delivered_at


async def test_a_write_blocked_by_a_lock_fails_within_its_bound(queue, backend):
    """A write that cannot get the storage lock raises QueueUnavailableError, not a driver error."""
    await queue.enqueue(_batch(ids=("before",)))
    with backend.locked():
        async with asyncio.timeout(10):
            with pytest.raises(QueueUnavailableError) as caught:
                await queue.enqueue(_batch(ids=("blocked",)))
    assert caught.value.reason in {"database locked", "database busy"}
    assert (await queue.enqueue(_batch(ids=("after",)))).accepted == 1


async def test_a_closed_queue_refuses_work_with_a_neutral_error(backend, clock):
    """After close, enqueue and stats raise QueueClosedError (a QueueUnavailableError)."""
    queue = backend.make(clock)
    await queue.open()
    await queue.close()
    with pytest.raises(QueueClosedError):
        await queue.enqueue(_batch())
    with pytest.raises(QueueUnavailableError):
        await queue.stats()


async def test_a_large_enqueue_many_is_stored_whole_beside_single_enqueues(queue):
    """Entries of many batches and single enqueues waiting together are all stored, once each."""
    many = [_batch(session=f"big{n}", ids=(f"m{n}",)) for n in range(700)]
    results = await asyncio.gather(
        queue.enqueue_many(many),
        *(queue.enqueue(_batch(session=f"one{n}", ids=("x",))) for n in range(20)),
        queue.enqueue_many(many[:5]),
    )
    assert [r.accepted for r in results[0]] == [1] * 700
    assert [r.accepted for r in results[1:21]] == [1] * 20
    assert [r.duplicates for r in results[21]] == [1] * 5
    assert (await queue.stats()).depth == 720
