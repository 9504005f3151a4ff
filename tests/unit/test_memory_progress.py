"""How far a session's turns got: ``TurnQueue.session_progress`` and its HTTP endpoint.

The queue side is checked against a model over random histories (enqueue, deliver,
dead-letter, fail and retry, replay, across two sessions); the endpoint for who may read
what: only the holder of a session's memory token reads that session, any other session
is 404 whether it exists or not, and the reads are rate-limited per session.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar.testing import TestClient

from engram_voice.app import create_app
from engram_voice.credentials.secret import Secret
from engram_voice.errors import StorageUnavailableError
from engram_voice.memory.queue import (
    EnqueueBatch,
    QueueUnavailableError,
    SessionProgress,
    TurnQueue,
)
from engram_voice.memory.ratelimit import SessionRateLimiter
from engram_voice.memory.runtime import STATUS_READ_SECONDS, MemoryRuntime
from engram_voice.memory.sqlite_queue import QueueClosedError, SqliteTurnQueue
from engram_voice.memory.sqlite_schema import PROGRESS_SQL, SCHEMA
from engram_voice.memory.tokens import MemoryTokenSigner
from engram_voice.settings import Settings
from tests.support.clock import FakeClock

SIGNER = MemoryTokenSigner([("k1", Secret("a" * 64))])
"""Signs with the key of the unit suite's ``app_env`` (``MEMORY_TOKEN_KEYS=k1:aaa…``)."""
SESSIONS = ("vs_a", "vs_b")


def _batch(session: str, ids: list[str]) -> EnqueueBatch:
    return EnqueueBatch(
        session_id=session,
        user_id="alice",
        agent="elena",
        turns=[(i, "user", f"text of {i}", None) for i in ids],
    )


@dataclass
class Model:
    """What a session's progress must be after a history of operations."""

    pending: list[str] = field(default_factory=list)
    delivered: int = 0
    dead: dict[int, list[str]] = field(default_factory=dict)
    next_at: float | None = None
    attempts: int = 0

    def expected(self) -> SessionProgress:
        """Return the progress this model predicts."""
        retrying = bool(self.pending) and self.next_at is not None
        return SessionProgress(
            queued=len(self.pending),
            delivered=self.delivered,
            dead_lettered=sum(len(v) for v in self.dead.values()),
            attempts=self.attempts if retrying else 0,
            next_attempt_at=self.next_at if retrying else None,
        )


OPERATION = st.tuples(
    st.sampled_from(SESSIONS),
    st.sampled_from(["enqueue", "deliver", "dead", "fail", "replay"]),
    st.integers(min_value=1, max_value=4),
)


async def _play(path: Path, history: list[tuple[str, str, int]]) -> None:
    clock = FakeClock()
    queue = SqliteTurnQueue(path, clock=clock)
    await queue.open()
    models = {s: Model() for s in SESSIONS}
    counter = 0
    try:
        for session, op, n in history:
            model = models[session]
            clock.advance(1)
            if op == "enqueue":
                ids = [f"m{counter + i}" for i in range(n)]
                counter += n
                await queue.enqueue(_batch(session, ids))
                model.pending += ids
                continue
            if op == "replay":
                if model.dead:
                    letter = next(iter(model.dead))
                    await queue.replay([letter], now=clock.now)
                    model.pending = model.dead.pop(letter) + model.pending
                    model.next_at, model.attempts = None, 0
                continue
            # Deliver, dead-letter or fail the oldest ``n`` pending turns of the session.
            claims = await queue.claim(
                owner="w", sessions=10, turns=n, lease_seconds=30, now=clock.now + 10_000
            )
            mine = [c for c in claims if c.session_id == session]
            for other in claims:
                if other.session_id != session:
                    await queue.release(owner="w", session_id=other.session_id)
            if not mine:
                continue
            seqs = [t.seq for t in mine[0].turns]
            taken = model.pending[: len(seqs)]
            if op == "deliver":
                await queue.mark_delivered(owner="w", session_id=session, seqs=seqs, now=clock.now)
                await queue.release(owner="w", session_id=session)
                model.pending, model.delivered = (
                    model.pending[len(seqs) :],
                    model.delivered + len(seqs),
                )
                model.next_at, model.attempts = None, 0
            elif op == "dead":
                letter = await queue.dead_letter(
                    owner="w",
                    session_id=session,
                    seqs=seqs,
                    reason="refused",
                    attempts=1,
                    now=clock.now,
                )
                await queue.release(owner="w", session_id=session)
                model.pending = model.pending[len(seqs) :]
                model.dead[letter] = taken
                model.next_at, model.attempts = None, 0
            else:
                model.next_at = clock.now + 60
                model.attempts += 1
                await queue.schedule_retry(
                    owner="w", session_id=session, error="down", next_attempt_at=model.next_at
                )
        for session in SESSIONS:
            assert await queue.session_progress(session) == models[session].expected(), session
    finally:
        await queue.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=st.lists(OPERATION, max_size=14))
def test_progress_counts_each_sessions_turns_by_state_after_any_history(
    history: list[tuple[str, str, int]],
) -> None:
    """After any history of two sessions, each one's progress is its own counts and retry time."""
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(_play(Path(folder) / "q.sqlite3", history))


async def test_a_session_the_queue_never_saw_has_nothing_in_progress(
    queue: SqliteTurnQueue,
) -> None:
    """An unknown session reads as zero turns everywhere, not as an error."""
    await queue.enqueue(_batch("vs_a", ["m1"]))
    assert await queue.session_progress("vs_unknown") == SessionProgress()


def test_progress_reads_only_the_sessions_turns_through_an_index(tmp_path: Path) -> None:
    """The query seeks the (session_id, message_id) index: its cost is the session's turns."""
    conn = sqlite3.connect(tmp_path / "plan.sqlite3", isolation_level=None)
    conn.executescript(SCHEMA)
    plan = " ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {PROGRESS_SQL}", ("s",)))
    conn.close()
    assert "SCAN turns" not in plan, plan
    assert "SEARCH turns USING" in plan, plan
    assert "(session_id=?)" in plan, plan


# -- the endpoint ------------------------------------------------------------------------


def _token(session: str) -> str:
    return SIGNER.issue(session_id=session, user_id="alice", agent="elena").token


def _post(client: TestClient[Any], session: str, ids: list[str]) -> None:
    body = {"session_id": session, "messages": [{"id": i, "role": "user", "text": i} for i in ids]}
    answer = client.post(
        "/memory/enrich", json=body, headers={"Authorization": f"Bearer {_token(session)}"}
    )
    assert answer.status_code == 202, answer.text


def _progress(client: TestClient[Any], session: str, token: str | None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.get(f"/memory/sessions/{session}/progress", headers=headers)


def test_the_token_holder_reads_its_sessions_queued_turns(client: TestClient[Any]) -> None:
    """The session's own token reads its counts (worker off: all queued), never cached."""
    _post(client, "vs_a", ["m1", "m2"])
    answer = _progress(client, "vs_a", _token("vs_a"))
    assert answer.status_code == 200
    assert answer.headers["cache-control"] == "no-store"
    assert answer.json() == {
        "session_id": "vs_a",
        "queued": 2,
        "delivered": 0,
        "dead_lettered": 0,
        "retrying": False,
        "next_attempt_at": None,
    }


@pytest.mark.parametrize("target", ["vs_b", "vs_never_seen", "vs_a.x", "%20"])
def test_another_sessions_progress_is_404_whether_or_not_it_exists(
    client: TestClient[Any], target: str
) -> None:
    """A token of session A asking for any other session gets the same 404, leaking nothing."""
    _post(client, "vs_a", ["m1"])
    _post(client, "vs_b", ["m1", "m2", "m3"])
    answer = _progress(client, target, _token("vs_a"))
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/problem+json")
    body = answer.json()
    assert (body["code"], body["detail"]) == (
        "not_found",
        "no memory progress for this session with this token",
    )
    assert "queued" not in answer.text


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer ",
        "Basic abc",
        "Bearer not-a-jwt",
        "Bearer "
        + MemoryTokenSigner([("k1", Secret("b" * 64))])
        .issue(session_id="vs_a", user_id="alice", agent="elena")
        .token,
    ],
    ids=["missing", "empty", "wrong-scheme", "malformed", "foreign-key"],
)
def test_progress_without_a_valid_memory_token_is_401(
    client: TestClient[Any], header: str | None
) -> None:
    """No token, a malformed one or one signed with another key: 401, never the counts."""
    _post(client, "vs_a", ["m1"])
    headers = {"Authorization": header} if header is not None else {}
    answer = client.get("/memory/sessions/vs_a/progress", headers=headers)
    assert answer.status_code == 401
    assert answer.json()["code"] == "unauthenticated"
    assert "queued" not in answer.text


@pytest.fixture(name="slow_client")
def fixture_slow_client(app_env: dict[str, str]) -> Iterator[TestClient[Any]]:
    """Serve the app with a budget of 3 requests per session per minute."""
    env = {**app_env, "MEMORY_RATE_PER_MINUTE": "3"}
    with TestClient(create_app(Settings.from_env(env))) as client:
        yield client


def test_progress_is_rate_limited_per_session_apart_from_enrich(
    slow_client: TestClient[Any],
) -> None:
    """Polling beyond the per-session budget is 429 with Retry-After; posting is unaffected."""
    token = _token("vs_a")
    answers = [_progress(slow_client, "vs_a", token).status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    limited = _progress(slow_client, "vs_a", token)
    assert limited.json()["code"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert _progress(slow_client, "vs_b", _token("vs_b")).status_code == 200
    _post(slow_client, "vs_a", ["m1"])  # enrich keeps its own budget


class _StuckQueue:
    """A queue whose progress read fails the way ``failure`` says."""

    backend = "stub"

    def __init__(self, failure: str) -> None:
        self.failure = failure

    async def session_progress(self, session_id: str) -> SessionProgress:
        """Fail: storage unavailable, closed, or no answer at all."""
        if self.failure == "unavailable":
            raise QueueUnavailableError("database is locked")
        if self.failure == "closed":
            raise QueueClosedError("the memory queue is not open")
        await asyncio.Event().wait()  # never answers; the runtime's bound must end it
        raise AssertionError(session_id)


@pytest.mark.parametrize("failure", ["unavailable", "closed", "silent"])
async def test_progress_is_503_with_retry_after_when_the_queue_cannot_answer(failure: str) -> None:
    """Locked, closed or silent storage: a bounded wait, then 503 storage_unavailable."""
    runtime = MemoryRuntime(
        queue=cast("TurnQueue", _StuckQueue(failure)),
        sink=None,
        worker=None,
        signer=None,
        rate_limiter=SessionRateLimiter(10),
        run_worker=False,
    )
    with pytest.raises(StorageUnavailableError) as caught:
        await asyncio.wait_for(runtime.progress("vs_a"), timeout=STATUS_READ_SECONDS * 20)
    assert caught.value.retry_after == 2
