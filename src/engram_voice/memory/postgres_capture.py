"""The PostgreSQL queue's captured-session records, shared by every replica.

``memory_captured`` (migration 3, see :mod:`engram_voice.memory.postgres_schema`) holds
which sessions the server captures itself, with
:data:`~engram_voice.memory.queue.CAPTURE_STATES` stored as their index. Each function
here runs its statements on a connection already in a transaction (lent by
:class:`~engram_voice.memory.postgres_queue.PostgresTurnQueue`); retention removes old
records (:mod:`engram_voice.memory.postgres_retention`).
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg
from psycopg.rows import TupleRow

from engram_voice.memory.queue import CAPTURE_STATES, CaptureState

__all__ = [
    "CAPTURE_STATE_SQL",
    "MARK_CAPTURE_SQL",
    "RENEW_CAPTURE_SQL",
    "capture_state",
    "mark_capture",
    "mark_captures",
    "renew_capture",
]

Conn = psycopg.AsyncConnection[TupleRow]
MARK_CAPTURE_SQL = (
    "INSERT INTO memory_captured AS c (session_id, user_id, agent, state, state_until, "
    "updated_at) VALUES (%(s)s, %(u)s, %(a)s, %(state)s, %(until)s, %(now)s) "
    "ON CONFLICT (session_id) DO UPDATE SET state = GREATEST(c.state, excluded.state), "
    "state_until = CASE WHEN excluded.state > c.state THEN excluded.state_until "
    "WHEN excluded.state = c.state AND c.state_until IS NOT NULL "
    "AND excluded.updated_at >= c.updated_at THEN excluded.state_until "
    "ELSE c.state_until END, "
    "updated_at = GREATEST(c.updated_at, excluded.updated_at) RETURNING state"
)
"""Insert or move a session's capture state forward (never back); returns the stored one.

A mark in the same state replaces ``state_until`` unless it is NULL (for good) or the
stored one was written later (``updated_at``): a late lease can never reopen a capture
that ended for good or was suspended (its sideband dropped) after the lease was taken."""
RENEW_CAPTURE_SQL = (
    "UPDATE memory_captured SET state_until = %(until)s, updated_at = %(now)s "
    "WHERE session_id = ANY(%(ids)s) AND state = 2 AND state_until IS NOT NULL "
    "AND updated_at <= %(now)s"
)
"""Extend live captures' leases (never one that ended for good, moved on, or was marked
after this renewal began)."""
CAPTURE_STATE_SQL = (
    "SELECT c.state, c.state_until, ARRAY(SELECT t.message_id FROM memory_turns t "
    "WHERE t.session_id = c.session_id AND t.message_id = ANY(%(ids)s)) "
    "FROM memory_captured c WHERE c.session_id = %(s)s"
)
"""The state and which asked ids are stored, in one statement (one snapshot, key seeks)."""


async def mark_capture(
    conn: Conn,
    *,
    session_id: str,
    user_id: str,
    agent: str,
    state: str,
    now: float,
    state_until: float | None,
) -> str:
    """Record a session's capture state (only ever forward); return the stored one."""
    params = {
        "s": session_id,
        "u": user_id,
        "a": agent,
        "state": CAPTURE_STATES.index(state),
        "until": state_until,
        "now": now,
    }
    cursor = await conn.execute(MARK_CAPTURE_SQL, params)
    row = await cursor.fetchone()
    assert row is not None  # noqa: S101 - an upsert with RETURNING returns its row
    return CAPTURE_STATES[int(str(row[0]))]


async def mark_captures(
    conn: Conn,
    marks: Sequence[tuple[str, str, str]],
    *,
    state: str,
    now: float,
    state_until: float | None,
) -> None:
    """Record every ``(session id, user id, agent)`` in ``state`` (one pipelined batch)."""
    index = CAPTURE_STATES.index(state)
    params = [
        {"s": session_id, "u": user, "a": agent, "state": index, "until": state_until, "now": now}
        for session_id, user, agent in marks
    ]
    async with conn.cursor() as cursor:
        await cursor.executemany(MARK_CAPTURE_SQL.removesuffix(" RETURNING state"), params)


async def renew_capture(conn: Conn, session_ids: Sequence[str], *, until: float, now: float) -> int:
    """Extend the leases of live captures in one statement; return how many."""
    cursor = await conn.execute(
        RENEW_CAPTURE_SQL, {"until": until, "now": now, "ids": list(session_ids)}
    )
    return cursor.rowcount


async def capture_state(
    conn: Conn, session_id: str, message_ids: Sequence[str]
) -> CaptureState | None:
    """Read a session's capture state and which of ``message_ids`` are stored (one read)."""
    cursor = await conn.execute(
        CAPTURE_STATE_SQL, {"s": session_id, "ids": list(dict.fromkeys(message_ids))}
    )
    row = await cursor.fetchone()
    if row is None:
        return None
    state, until, stored = row
    return CaptureState(
        state=CAPTURE_STATES[int(str(state))],
        state_until=float(str(until)) if until is not None else None,
        stored=frozenset(str(found) for found in stored or ()),
    )
