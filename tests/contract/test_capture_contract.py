"""The captured-session record every TurnQueue backend (SQLite, PostgreSQL) keeps and shares."""

import itertools
import random

import pytest

from engram_voice.memory.queue import CAPTURE_STATES, EnqueueBatch, TurnQueue
from tests.support.clock import FakeClock


async def _mark(queue: TurnQueue, clock: FakeClock, state: str, session="vs_1", until=None):
    return await queue.mark_capture(
        session_id=session,
        user_id="alice",
        agent="elena",
        state=state,
        now=clock.now,
        state_until=until,
    )


def _batch(session="vs_1", ids=("m1", "m2")):
    return EnqueueBatch(
        session_id=session,
        user_id="alice",
        agent="elena",
        turns=[(i, "user", f"text of {i}", None) for i in ids],
    )


async def test_a_session_never_marked_has_no_capture_state(queue):
    """A session nobody marked (e.g. minted for the browser alone) reads as None."""
    await queue.enqueue(_batch())
    assert await queue.capture_state("vs_1", ["m1"]) is None
    assert await queue.capture_state("vs_unknown") is None


@pytest.mark.parametrize(
    "order",
    [
        *itertools.permutations(CAPTURE_STATES),
        *(tuple(random.Random(seed).choices(CAPTURE_STATES, k=6)) for seed in range(6)),
    ],
)
async def test_capture_states_only_move_forward_whatever_order_marks_arrive_in(queue, clock, order):
    """After any sequence of marks the stored state is the latest in the state order."""
    answers = [await _mark(queue, clock, state) for state in order]
    expected = [max(order[: n + 1], key=CAPTURE_STATES.index) for n in range(len(order))]
    assert answers == expected
    found = await queue.capture_state("vs_1")
    assert found is not None
    assert found.state == expected[-1]


@pytest.mark.parametrize(
    ("marks", "state", "until"),
    [
        ([("expected", 10), ("captured", 60)], "captured", 60),
        ([("captured", 60), ("expected", 10)], "captured", 60),
        ([("captured", 60), ("captured", 90)], "captured", 90),
        ([("captured", 60), ("captured", None)], "captured", None),
        ([("captured", None), ("captured", 90)], "captured", None),
        ([("expected", 10), ("captured", None), ("captured", 60)], "captured", None),
        ([("captured", 60), ("lost", None), ("captured", 90)], "lost", None),
        ([("browser", None), ("captured", 60)], "captured", 60),
    ],
)
async def test_a_mark_sets_the_deadline_but_never_reopens_a_capture_ended_for_good(
    queue, clock, marks, state, until
):
    """A later or equal state takes the mark's deadline, except over None (for good)."""
    for mark, seconds in marks:
        await _mark(queue, clock, mark, until=None if seconds is None else clock.now + seconds)
    found = await queue.capture_state("vs_1")
    assert found is not None
    assert found.state == state
    assert found.state_until == (None if until is None else clock.now + until)


async def test_renewal_extends_only_live_captures(queue, clock):
    """``renew_capture`` moves leases of captured sessions only: never ended, lost or expected."""
    await _mark(queue, clock, "captured", session="live", until=clock.now + 60)
    await _mark(queue, clock, "captured", session="ended", until=None)
    await _mark(queue, clock, "captured", session="gone", until=clock.now + 60)
    await _mark(queue, clock, "lost", session="gone")
    await _mark(queue, clock, "expected", session="coming", until=clock.now + 10)
    ids = ["live", "ended", "gone", "coming", "unknown"]
    assert await queue.renew_capture(ids, until=clock.now + 500, now=clock.now) == 1
    found = {s: await queue.capture_state(s) for s in ids}
    assert found["live"].state_until == clock.now + 500
    assert found["ended"].state_until is None
    assert (found["gone"].state, found["gone"].state_until) == ("lost", None)
    assert found["coming"].state_until == clock.now + 10
    assert found["unknown"] is None


async def test_capture_state_names_the_asked_ids_stored_for_that_session_in_any_state(queue, clock):
    """Stored ids count whether pending, delivered or dead-lettered; other sessions' never."""
    await _mark(queue, clock, "captured")
    await queue.enqueue(_batch(ids=("m1", "m2", "m3")))
    await queue.enqueue(_batch(session="vs_2", ids=("x1",)))
    (claim,) = await queue.claim(owner="w", sessions=1, turns=2, lease_seconds=30, now=clock.now)
    seqs = [t.seq for t in claim.turns]
    await queue.mark_delivered(owner="w", session_id="vs_1", seqs=seqs[:1], now=clock.now)
    await queue.dead_letter(
        owner="w", session_id="vs_1", seqs=seqs[1:], reason="r", attempts=1, now=clock.now
    )
    found = await queue.capture_state("vs_1", ["m1", "m2", "m3", "m4", "x1", "m1"])
    assert found is not None
    assert found.state == "captured"
    assert found.stored == frozenset({"m1", "m2", "m3"})
    assert (await queue.capture_state("vs_1")).stored == frozenset()


async def test_a_mark_is_shared_by_replicas_and_survives_reopening(backend, clock):
    """A mark stored by one queue is read by another on the same storage, and after reopening."""
    first, second = backend.make(clock), backend.make(clock)
    await first.open()
    await second.open()
    try:
        assert await _mark(first, clock, "captured") == "captured"
        found = await second.capture_state("vs_1")
        assert found is not None
        assert found.state == "captured"
    finally:
        await first.close()
        await second.close()
    third = backend.make(clock)
    await third.open()
    try:
        found = await third.capture_state("vs_1")
        assert found is not None
        assert found.state == "captured"
        assert await _mark(third, clock, "expected") == "captured"
    finally:
        await third.close()


async def test_purge_forgets_capture_records_untouched_for_the_window_in_bounded_steps(
    queue, clock
):
    """Retention removes old capture records (at most ``limit`` per step), never fresh ones."""
    for n in range(5):
        await _mark(queue, clock, "captured", session=f"old{n}")
    clock.advance(100)
    await _mark(queue, clock, "captured", session="fresh")
    await _mark(queue, clock, "lost", session="old0")  # touched again: fresh now
    assert await queue.purge_delivered(older_than=clock.now - 50, limit=3) >= 3
    await queue.purge_delivered(older_than=clock.now - 50, limit=3)
    remaining = [
        s for s in ["fresh", *(f"old{n}" for n in range(5))] if await queue.capture_state(s)
    ]
    assert remaining == ["fresh", "old0"]


_CALL_MARKS = {
    # (kind, written at, lease deadline): one call's marks from the replica holding it
    "lease": (1.0, 61.0),  # the sideband came up
    "renewal": (2.0, 62.0),  # the lease renewed (a renewal, not a mark)
    "suspended": (3.0, 3.0),  # the sideband dropped: nobody hears the call now
}


@pytest.mark.parametrize("order", list(itertools.permutations(_CALL_MARKS)))
@pytest.mark.parametrize("end", [None, "final", "lost"])
async def test_a_late_lease_or_renewal_never_undoes_a_later_suspension(queue, clock, order, end):
    """Whatever order a call's marks and renewals arrive in, the latest written one holds.

    A lease mark retried late, or a renewal that began before the sideband dropped, must
    not hand the session back to the server while nobody hears the call.
    """
    base = clock.now
    for kind in order:
        at, until = _CALL_MARKS[kind]
        if kind == "renewal":
            await queue.renew_capture(["vs_1"], until=base + until, now=base + at)
        else:
            await queue.mark_capture(
                session_id="vs_1",
                user_id="alice",
                agent="elena",
                state="captured",
                now=base + at,
                state_until=base + until,
            )
    if end is not None:
        await queue.mark_capture(
            session_id="vs_1",
            user_id="alice",
            agent="elena",
            state="captured" if end == "final" else "lost",
            now=base + 4.0,
            state_until=None,
        )
    found = await queue.capture_state("vs_1")
    assert found is not None
    if end is None:
        assert (found.state, found.state_until) == ("captured", base + 3.0)
    else:
        assert (found.state, found.state_until) == ("captured" if end == "final" else end, None)


_PRIOR = [
    None,
    ("expected", 30.0),
    ("captured", 30.0),
    ("captured", None),
    ("lost", None),
    ("browser", None),
]


@pytest.mark.parametrize("state", ["expected", "captured", "lost"])
async def test_marking_many_sessions_at_once_is_marking_each(queue, clock, state):
    """``mark_captures`` leaves every session as ``mark_capture`` one by one would."""
    sessions = []
    for n, prior in enumerate(_PRIOR):
        for twin in ("one", "many"):
            if prior is not None:
                until = clock.now + prior[1] if prior[1] is not None else None
                await _mark(queue, clock, prior[0], session=f"{twin}{n}", until=until)
        sessions.append(n)
    clock.advance(1)
    until = clock.now + 60 if state != "lost" else None
    for n in sessions:
        await _mark(queue, clock, state, session=f"one{n}", until=until)
    marks = [(f"many{n}", "alice", "elena") for n in sessions]
    await queue.mark_captures(marks, state=state, now=clock.now, state_until=until)
    await queue.mark_captures([], state=state, now=clock.now, state_until=until)
    for n in sessions:
        assert await queue.capture_state(f"many{n}") == await queue.capture_state(f"one{n}")
