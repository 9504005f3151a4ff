"""The SQLite queue's captured-session records, shared by every process on the file.

``captured_sessions`` (schema step 2, see :mod:`engram_voice.memory.sqlite_schema`) holds
which sessions the server captures itself, with
:data:`~engram_voice.memory.queue.CAPTURE_STATES` stored as their index;
:data:`MARK_CAPTURE_SQL` only ever moves a state forward. The functions here run on the
queue's writer or reader thread with its connection (see
:class:`~engram_voice.memory.sqlite_queue.SqliteTurnQueue`); retention removes old records
(:func:`~engram_voice.memory.sqlite_retention.purge_captured`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from engram_voice.memory.queue import CAPTURE_STATES, CaptureState
from engram_voice.memory.sqlite_writes import transaction

__all__ = [
    "MARK_CAPTURE_SQL",
    "RENEW_CAPTURE_SQL",
    "capture_state",
    "mark_capture",
    "mark_captures",
    "renew_capture",
]

MARK_CAPTURE_SQL = (
    "INSERT INTO captured_sessions (session_id, user_id, agent, state, state_until, "
    "updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (session_id) DO UPDATE SET "
    "state = MAX(state, excluded.state), "
    "state_until = CASE WHEN excluded.state > state THEN excluded.state_until "
    "WHEN excluded.state = state AND state_until IS NOT NULL "
    "AND excluded.updated_at >= updated_at THEN excluded.state_until "
    "ELSE state_until END, "
    "updated_at = MAX(updated_at, excluded.updated_at) RETURNING state"
)
"""Insert or move a session's capture state forward (never back); returns the stored one.

A mark in the same state replaces ``state_until`` unless it is NULL (for good) or the
stored one was written later (``updated_at``): a late lease can never reopen a capture
that ended for good or was suspended (its sideband dropped) after the lease was taken."""
RENEW_CAPTURE_SQL = (
    "UPDATE captured_sessions SET state_until = ?1, updated_at = ?2 "
    "WHERE session_id = ?3 AND state = 2 AND state_until IS NOT NULL AND updated_at <= ?2"
)
"""Extend a live capture's lease (never one that ended for good, moved on, or was marked
after this renewal began)."""


def mark_capture(
    conn: sqlite3.Connection,
    *,
    session_id: str,
    user_id: str,
    agent: str,
    state: str,
    now: float,
    state_until: float | None,
) -> str:
    """Record a session's capture state (only ever forward); return the stored one."""
    params = (session_id, user_id, agent, CAPTURE_STATES.index(state), state_until, now)
    with transaction(conn):
        row = conn.execute(MARK_CAPTURE_SQL, params).fetchone()
    return CAPTURE_STATES[int(row[0])]


def mark_captures(
    conn: sqlite3.Connection,
    marks: Sequence[tuple[str, str, str]],
    *,
    state: str,
    now: float,
    state_until: float | None,
) -> None:
    """Record every ``(session id, user id, agent)`` in ``state`` in one transaction."""
    index = CAPTURE_STATES.index(state)
    rows = [(session_id, user, agent, index, state_until, now) for session_id, user, agent in marks]
    with transaction(conn):
        conn.executemany(MARK_CAPTURE_SQL.removesuffix(" RETURNING state"), rows)


def renew_capture(
    conn: sqlite3.Connection, session_ids: Sequence[str], *, until: float, now: float
) -> int:
    """Extend the leases of live captures in one transaction; return how many."""
    with transaction(conn):
        return sum(
            conn.execute(RENEW_CAPTURE_SQL, (until, now, session_id)).rowcount
            for session_id in session_ids
        )


def capture_state(
    conn: sqlite3.Connection, session_id: str, message_ids: Sequence[str]
) -> CaptureState | None:
    """Read a session's capture state and which of ``message_ids`` are stored (one read)."""
    ids = list(dict.fromkeys(message_ids))
    conn.execute("BEGIN")  # one snapshot for both statements
    try:
        row = conn.execute(
            "SELECT state, state_until FROM captured_sessions WHERE session_id = ?",
            (session_id,),
        ).fetchone()
        if row is None:
            return None
        stored: frozenset[str] = frozenset()
        if ids:
            marks = ",".join("?" * len(ids))
            stored = frozenset(
                str(found)
                for (found,) in conn.execute(
                    "SELECT message_id FROM turns WHERE session_id = ? "  # noqa: S608
                    f"AND message_id IN ({marks})",
                    (session_id, *ids),
                )
            )
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")  # a read: nothing to keep
    return CaptureState(state=CAPTURE_STATES[int(row[0])], state_until=row[1], stored=stored)
