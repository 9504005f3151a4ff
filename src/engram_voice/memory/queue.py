"""The durable turn queue: data types and the Protocol every backend implements.

SQLite (:mod:`engram_voice.memory.sqlite_queue`) is the default, PostgreSQL
(:mod:`engram_voice.memory.postgres_queue`) the shared queue of several replicas; both
plug in behind this :class:`TurnQueue` seam and are built by one factory,
:func:`engram_voice.memory.backends.build_queue`. Callers see only the errors defined
here (never a driver's own exception type). Guarantees
a backend must give: ``enqueue`` returns only after the turns are durable and is
idempotent on ``(session_id, message_id)``; a session is leased to one worker at a time
and its turns come back in acceptance order; an expired lease makes the work claimable
again, and ``renew`` tells a worker whether it still holds its lease (leases are short
and renewed by a heartbeat, see :mod:`engram_voice.memory.lease`). ``stats`` costs the
same at any queue depth (running totals kept with the writes, an index seek for the
oldest turn), never waits behind writes, and raises :class:`QueueUnavailableError`
when storage cannot answer; ``session_progress`` reads the same way and costs only the
session's own turns (an index seek by session id). ``mark_capture`` and
``capture_state`` hold which sessions the server captures itself (shared by every
replica, durable across restarts; see :mod:`engram_voice.memory.captured`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

__all__ = [
    "CAPTURE_STATES",
    "CaptureState",
    "ClaimedSession",
    "DeadLetter",
    "EnqueueBatch",
    "EnqueueResult",
    "QueueClosedError",
    "QueueStats",
    "QueueUnavailableError",
    "QueuedTurn",
    "SessionMismatchError",
    "SessionProgress",
    "TurnQueue",
]


class SessionMismatchError(Exception):
    """The session is already stored for another user or agent."""


class QueueUnavailableError(Exception):
    """Storage cannot answer right now (locked, unreachable); ``reason`` says why, briefly."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class QueueClosedError(QueueUnavailableError):
    """The queue is not open (or shutting down) and takes no more work."""

    def __init__(self, reason: str = "queue closed") -> None:
        super().__init__(reason)


class QueuedTurn(msgspec.Struct, frozen=True):
    """One transcript turn as stored (``seq`` orders turns within a session)."""

    seq: int
    message_id: str
    role: str
    text: str
    at: str | None
    accepted_at: float


class EnqueueBatch(msgspec.Struct, frozen=True):
    """Turns of one request for one session, with the identity the token proved."""

    session_id: str
    user_id: str
    agent: str
    turns: Sequence[tuple[str, str, str, str | None]]
    """(message_id, role, text, at) in conversation order."""


class EnqueueResult(msgspec.Struct, frozen=True):
    """How many turns were newly stored and how many were already there."""

    accepted: int
    duplicates: int


class ClaimedSession(msgspec.Struct, frozen=True):
    """A session leased to one worker with its oldest pending turns."""

    session_id: str
    user_id: str
    agent: str
    attempts: int
    turns: list[QueuedTurn]


class DeadLetter(msgspec.Struct, frozen=True):
    """A batch that could not be delivered, kept for an operator to inspect and replay."""

    id: int
    session_id: str
    user_id: str
    agent: str
    turns: int
    reason: str
    attempts: int
    created_at: float
    replayed_at: float | None


class QueueStats(msgspec.Struct, frozen=True):
    """What ``/status`` and the metrics report about the queue."""

    backend: str
    depth: int
    sessions_pending: int
    oldest_pending_at: float | None
    dead_letters: int
    last_delivered_at: float | None


class SessionProgress(msgspec.Struct, frozen=True):
    """How far one session's turns got (``GET /memory/sessions/{id}/progress``).

    ``queued`` turns wait for delivery, ``delivered`` reached the memory store (until
    retention purges them), ``dead_lettered`` were refused for good (until an operator
    replays them). ``next_attempt_at`` (unix seconds) is set while a failed delivery waits
    for its retry, with ``attempts`` the failures so far; a session the queue never saw
    has every count at zero.
    """

    queued: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    attempts: int = 0
    next_attempt_at: float | None = None


CAPTURE_STATES = ("browser", "expected", "captured", "lost")
"""A session's capture states in the only order they may change (a later one never goes
back): ``browser`` (the browser's posts are the source; the server may start hearing the
session, as Voice Live does from its first mirrored transcript), ``expected`` (set up for
capture, the sideband not up yet), ``captured`` (the server's record is authoritative),
``lost`` (capture ended for good: the browser's posts are the source again). Stored as
the index in this tuple, so a mark is ``GREATEST(stored, new)``."""


class CaptureState(msgspec.Struct, frozen=True):
    """A session's stored capture state and which of the asked turn ids are stored."""

    state: str
    """One of :data:`CAPTURE_STATES`."""
    state_until: float | None
    """Unix seconds. While ``expected``: when the expectation lapses. While ``captured``:
    when the lease of the replica holding the sideband lapses (None: the call ended while
    captured, so for good)."""
    stored: frozenset[str] = frozenset()
    """Of the ids asked about, those already stored for the session (any state)."""


class TurnQueue(Protocol):
    """A durable, idempotent, per-session ordered queue of transcript turns."""

    backend: str

    async def open(self) -> None:
        """Open storage (create the schema when missing)."""

    async def close(self) -> None:
        """Finish pending writes and close storage."""

    async def enqueue(self, batch: EnqueueBatch) -> EnqueueResult:
        """Store the turns durably (duplicates ignored) and return the counts.

        May raise :class:`QueueUnavailableError` when storage cannot take them; callers
        bound the wait themselves (a cancelled call may still have stored the turns).
        """

    async def enqueue_many(
        self, batches: Sequence[EnqueueBatch]
    ) -> list[EnqueueResult | SessionMismatchError]:
        """Store several sessions' batches in one shared commit; one result per batch.

        A batch for a session owned by another user or agent is not stored and gets a
        :class:`SessionMismatchError` in its place (the others are stored). Raises
        :class:`QueueUnavailableError` when storage cannot take them (none is answered).
        """

    async def claim(
        self, *, owner: str, sessions: int, turns: int, lease_seconds: float, now: float
    ) -> list[ClaimedSession]:
        """Lease up to ``sessions`` ready sessions with up to ``turns`` pending turns each."""

    async def renew(self, *, owner: str, session_id: str, lease_seconds: float, now: float) -> bool:
        """Extend a lease this owner still holds (expired or not); False once another took it."""

    async def mark_delivered(
        self, *, owner: str, session_id: str, seqs: Sequence[int], now: float
    ) -> None:
        """Record turns as delivered (their text is dropped; their key stays for dedup)."""

    async def schedule_retry(
        self, *, owner: str, session_id: str, error: str, next_attempt_at: float
    ) -> None:
        """Count a failed attempt, release the lease and wake the session at a later time."""

    async def dead_letter(
        self,
        *,
        owner: str,
        session_id: str,
        seqs: Sequence[int],
        reason: str,
        attempts: int,
        now: float,
    ) -> int:
        """Move turns to a new dead letter, reset the session's attempts; return its id."""

    async def release(self, *, owner: str, session_id: str, next_attempt_at: float = 0.0) -> None:
        """Give a lease back without counting an attempt."""

    async def stats(self) -> QueueStats:
        """Return the figures at a cost independent of depth, off the write path.

        Raises :class:`QueueUnavailableError` when storage cannot answer promptly.
        """

    async def session_progress(self, session_id: str) -> SessionProgress:
        """Return one session's counts by state; bounded by that session's turns (index seek).

        Reads off the write path, like ``stats``; raises :class:`QueueUnavailableError`
        when storage cannot answer.
        """

    async def dead_letters(self, *, limit: int, include_replayed: bool) -> list[DeadLetter]:
        """List dead letters, newest first."""

    async def replay(self, ids: Sequence[int] | None, *, now: float) -> int:
        """Put dead letters (all unreplayed when ``ids`` is None) back in the queue."""

    async def purge_delivered(self, *, older_than: float, limit: int = 1000) -> int:
        """Remove one bounded step of what retention no longer needs; return the work done.

        In one short transaction: at most ``limit`` rows of delivered turns delivered
        before ``older_than`` (their dedup window ends), dead letters replayed before it,
        and sessions with nothing left (nothing pending, no turn, no lease). Pending turns
        and unreplayed dead letters are never removed. A backend may add bounded storage
        upkeep to the step (SQLite hands free pages back) and count it. A result of at
        least ``limit`` means there is more: :class:`~engram_voice.memory.retention.Retention`
        calls again after a pause, so writes never wait behind more than one step.
        """

    async def mark_capture(
        self,
        *,
        session_id: str,
        user_id: str,
        agent: str,
        state: str,
        now: float,
        state_until: float | None = None,
    ) -> str:
        """Record ``state`` (one of :data:`CAPTURE_STATES`) for a session; return the stored one.

        Durable when it returns. States only move forward (the stored one is the later
        of the two), so marks written late or out of order never undo a later one. A
        later state takes the mark's ``state_until``; the same state takes it unless the
        stored one is None (for good).
        """

    async def mark_captures(
        self,
        marks: Sequence[tuple[str, str, str]],
        *,
        state: str,
        now: float,
        state_until: float | None = None,
    ) -> None:
        """Record each ``(session id, user id, agent)`` in ``state``, in one transaction.

        The same rule as :meth:`mark_capture` applies to each (only ever forward).
        """

    async def renew_capture(self, session_ids: Sequence[str], *, until: float, now: float) -> int:
        """Extend the leases of live captures (``captured`` with a lease); return how many."""

    async def capture_state(
        self, session_id: str, message_ids: Sequence[str] = ()
    ) -> CaptureState | None:
        """Return the session's capture state (None: never marked) with the stored ids.

        One read off the write path (a key lookup plus an index seek per id asked);
        raises :class:`QueueUnavailableError` when storage cannot answer.
        """
