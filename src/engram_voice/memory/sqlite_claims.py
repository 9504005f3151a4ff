"""The SQLite queue's worker side: claims, leases, outcomes and replay.

Each function runs on the queue's writer thread with its connection (see
:class:`~engram_voice.memory.sqlite_queue.SqliteTurnQueue`), every change in one
``BEGIN IMMEDIATE`` transaction. The running totals follow from the schema's triggers.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from engram_voice.memory.queue import ClaimedSession, QueuedTurn
from engram_voice.memory.sqlite_schema import PENDING, claim_sql
from engram_voice.memory.sqlite_writes import set_state, transaction

__all__ = [
    "claim",
    "dead_letter",
    "mark_delivered",
    "release",
    "renew",
    "replay",
    "schedule_retry",
]


def claim(
    conn: sqlite3.Connection,
    *,
    owner: str,
    sessions: int,
    turns: int,
    lease_seconds: float,
    now: float,
) -> list[ClaimedSession]:
    """Lease ready sessions (pending, due, unleased) with their oldest pending turns.

    Looks first without the file's write lock (a WAL read): an idle worker's poll, or
    a claim after the ready sessions ran out, neither waits for another process's
    write nor makes one wait; only when a session looks ready is the lock taken and
    the choice made again inside the transaction.
    """
    if conn.execute(claim_sql(), (now, now, 1)).fetchone() is None:
        return []
    with transaction(conn):
        rows = conn.execute(claim_sql(), (now, now, sessions)).fetchall()
        claimed: list[ClaimedSession] = []
        for session_id, user_id, agent, attempts in rows:
            conn.execute(
                "UPDATE sessions SET lease_owner=?, lease_until=? WHERE session_id=?",
                (owner, now + lease_seconds, session_id),
            )
            found = conn.execute(
                "SELECT seq, message_id, role, text, at, accepted_at FROM turns "
                "WHERE session_id=? AND state=? ORDER BY seq LIMIT ?",
                (session_id, PENDING, turns),
            ).fetchall()
            claimed.append(
                ClaimedSession(
                    session_id=session_id,
                    user_id=user_id,
                    agent=agent,
                    attempts=attempts,
                    turns=[QueuedTurn(*row) for row in found],
                )
            )
        return claimed


def renew(
    conn: sqlite3.Connection, *, owner: str, session_id: str, lease_seconds: float, now: float
) -> bool:
    """Extend this owner's lease on a session; False when the lease was lost."""
    sql = "UPDATE sessions SET lease_until=? WHERE session_id=? AND lease_owner=?"
    return _changed(conn, sql, (now + lease_seconds, session_id, owner)) > 0


def mark_delivered(
    conn: sqlite3.Connection, *, session_id: str, seqs: Sequence[int], now: float
) -> None:
    """Mark turns delivered, drop their text, and reset the session's attempt count."""
    with transaction(conn):
        changed = set_state(conn, seqs, "state=1, text=NULL, delivered_at=?", (now,))
        conn.execute(
            "UPDATE sessions SET pending=pending-?, attempts=0, last_error=NULL WHERE session_id=?",
            (changed, session_id),
        )
        if changed:
            conn.execute(
                "UPDATE queue_counters SET last_delivered_at="
                "MAX(COALESCE(last_delivered_at, 0), ?) WHERE id=1",
                (now,),
            )


def schedule_retry(
    conn: sqlite3.Connection, *, owner: str, session_id: str, error: str, next_attempt_at: float
) -> None:
    """Count a failed attempt, remember why, release the lease until ``next_attempt_at``."""
    _changed(
        conn,
        "UPDATE sessions SET attempts=attempts+1, last_error=?, next_attempt_at=?, "
        "lease_owner=NULL, lease_until=NULL WHERE session_id=? AND lease_owner=?",
        (error[:500], next_attempt_at, session_id, owner),
    )


def dead_letter(
    conn: sqlite3.Connection,
    *,
    session_id: str,
    seqs: Sequence[int],
    reason: str,
    attempts: int,
    now: float,
) -> int:
    """Move the turns to a new dead letter and reset the session's attempts."""
    with transaction(conn):
        user_id, agent = conn.execute(
            "SELECT user_id, agent FROM sessions WHERE session_id=?", (session_id,)
        ).fetchone()
        cursor = conn.execute(
            "INSERT INTO dead_letters(session_id, user_id, agent, turns, reason, "
            "attempts, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (session_id, user_id, agent, len(seqs), reason[:1000], attempts, now),
        )
        letter_id = int(cursor.lastrowid or 0)
        changed = set_state(conn, seqs, "state=2, dead_letter_id=?", (letter_id,))
        conn.execute(
            "UPDATE sessions SET pending=pending-?, attempts=0, last_error=? WHERE session_id=?",
            (changed, reason[:500], session_id),
        )
        return letter_id


def release(
    conn: sqlite3.Connection, *, owner: str, session_id: str, next_attempt_at: float
) -> None:
    """Give a lease back without counting an attempt."""
    _changed(
        conn,
        "UPDATE sessions SET lease_owner=NULL, lease_until=NULL, "
        "next_attempt_at=MAX(next_attempt_at, ?) WHERE session_id=? AND lease_owner=?",
        (next_attempt_at, session_id, owner),
    )


def replay(conn: sqlite3.Connection, ids: Sequence[int] | None, *, now: float) -> int:
    """Return dead-lettered turns to the queue in their original order; count them."""
    with transaction(conn):
        if ids is None:
            rows = conn.execute(
                "SELECT id, session_id FROM dead_letters WHERE replayed_at IS NULL"
            ).fetchall()
        else:
            marks = ",".join("?" * len(ids))
            rows = conn.execute(
                f"SELECT id, session_id FROM dead_letters WHERE replayed_at IS NULL "  # noqa: S608
                f"AND id IN ({marks})",
                tuple(ids),
            ).fetchall()
        total = 0
        for letter_id, session_id in rows:
            moved = conn.execute(
                "UPDATE turns SET state=0, dead_letter_id=NULL WHERE state=2 AND dead_letter_id=?",
                (letter_id,),
            ).rowcount
            conn.execute(
                "UPDATE sessions SET pending=pending+?, attempts=0, next_attempt_at=0, "
                "last_error=NULL WHERE session_id=?",
                (moved, session_id),
            )
            conn.execute("UPDATE dead_letters SET replayed_at=? WHERE id=?", (now, letter_id))
            total += moved
        return total


def _changed(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> int:
    with transaction(conn):
        return conn.execute(sql, params).rowcount
