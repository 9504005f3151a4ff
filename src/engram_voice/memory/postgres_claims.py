"""The PostgreSQL queue's worker side: claims, leases, outcomes and replay.

The worker's calls run on an autocommit connection lent by
:class:`~engram_voice.memory.postgres_queue.PostgresTurnQueue`, and each but the claim is
one statement (its own transaction: one round trip, no BEGIN or COMMIT): ``renew``,
``schedule_retry`` and ``release`` change the session only while ``owner`` holds its
lease; ``mark_delivered`` and ``dead_letter`` lock the session's row first (the one lock
order of every writer), change the turns, and move the session's pending count and the
running totals by what changed, in the same statement. :func:`claim` leases ready
sessions with ``FOR UPDATE SKIP LOCKED`` (no two workers on any replica get the same
session, nobody waits), then reads their turns with a second statement; an expired lease
is simply claimable again. :func:`replay` (an operator's command) runs in a transaction
and keeps the totals with :func:`lock_session` and :func:`change_pending`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from engram_voice.memory.postgres_schema import SHARD
from engram_voice.memory.queue import ClaimedSession, QueuedTurn, QueueUnavailableError

__all__ = [
    "change_pending",
    "claim",
    "dead_letter",
    "lock_session",
    "mark_delivered",
    "release",
    "renew",
    "replay",
    "schedule_retry",
]

Conn = psycopg.AsyncConnection[TupleRow]


_LEASE_SQL = (
    "WITH ready AS (SELECT session_id FROM memory_sessions "
    "WHERE pending > 0 AND next_attempt_at <= %(now)s "
    "AND (lease_until IS NULL OR lease_until < %(now)s) "
    "ORDER BY next_attempt_at, created_at LIMIT %(n)s FOR UPDATE SKIP LOCKED) "
    "UPDATE memory_sessions s SET lease_owner = %(owner)s, lease_until = %(until)s "
    "FROM ready WHERE s.session_id = ready.session_id "
    "RETURNING s.session_id, s.user_id, s.agent, s.attempts, s.next_attempt_at, "
    "s.created_at"
)
_TURNS_SQL = (
    "SELECT s.id, t.seq, t.message_id, t.role, t.text, t.at, t.accepted_at "
    "FROM unnest(%s::text[]) AS s(id) CROSS JOIN LATERAL ("
    " SELECT seq, message_id, role, text, at, accepted_at FROM memory_turns"
    " WHERE session_id = s.id AND state = 0 ORDER BY seq LIMIT %s) AS t "
    "ORDER BY s.id, t.seq"
)
_MARK_DELIVERED_SQL = f"""
WITH s AS (
    SELECT session_id FROM memory_sessions WHERE session_id = %(s)s FOR UPDATE
), t AS (
    UPDATE memory_turns SET state = 1, text = NULL, delivered_at = %(now)s
    WHERE session_id = (SELECT session_id FROM s) AND state = 0 AND seq = ANY(%(seqs)s)
    RETURNING 1
), n AS (
    SELECT count(*)::int AS n FROM t
), u AS (
    UPDATE memory_sessions SET pending = pending - n.n, attempts = 0, last_error = NULL
    FROM n WHERE session_id = (SELECT session_id FROM s) RETURNING pending AS after, n.n
), c AS (
    UPDATE memory_queue_counters SET pending = pending - u.n,
        sessions_pending = sessions_pending + (u.after > 0)::int - (u.after + u.n > 0)::int,
        last_delivered_at = GREATEST(COALESCE(last_delivered_at, 0), %(now)s)
    FROM u WHERE shard = {SHARD} AND u.n > 0
)
SELECT count(*) FROM u
"""  # noqa: S608 - SHARD is a constant expression, every value is a parameter
"""Lock the session first (the one lock order), mark the turns, and move the session's
pending count and the running totals by what changed: one statement, one transaction."""
_DEAD_LETTER_SQL = f"""
WITH s AS (
    SELECT session_id, user_id, agent FROM memory_sessions WHERE session_id = %(s)s FOR UPDATE
), l AS (
    INSERT INTO memory_dead_letters (session_id, user_id, agent, turns, reason, attempts,
        created_at)
    SELECT session_id, user_id, agent, %(turns)s, %(reason)s, %(attempts)s, %(now)s FROM s
    RETURNING id
), t AS (
    UPDATE memory_turns SET state = 2, dead_letter_id = l.id FROM l
    WHERE session_id = (SELECT session_id FROM s) AND state = 0 AND seq = ANY(%(seqs)s)
    RETURNING 1
), n AS (
    SELECT count(*)::int AS n FROM t
), u AS (
    UPDATE memory_sessions SET pending = pending - n.n, attempts = 0, last_error = %(error)s
    FROM n, l WHERE session_id = (SELECT session_id FROM s) RETURNING pending AS after, n.n
), c AS (
    UPDATE memory_queue_counters SET pending = pending - u.n,
        sessions_pending = sessions_pending + (u.after > 0)::int - (u.after + u.n > 0)::int,
        dead_letters = dead_letters + 1
    FROM u WHERE shard = {SHARD}
)
SELECT id FROM l
"""  # noqa: S608 - SHARD is a constant expression, every value is a parameter
"""Lock the session first, file the letter, move the turns into it, and move the pending
count and the running totals: one statement, one transaction."""


async def claim(
    conn: Conn, *, owner: str, sessions: int, turns: int, lease_seconds: float, now: float
) -> list[ClaimedSession]:
    """Lease ready sessions (SKIP LOCKED: never two owners), then read their oldest turns.

    Two statements on an autocommit connection (two round trips, no BEGIN or COMMIT):
    the lease commits first, so the turns are read in a snapshot taken after it (as the
    second statement of a transaction would be) and a claim that finds nothing ready is
    one round trip. Should the read fail, the sessions stay leased until the lease runs
    out, as when a worker dies right after its claim.
    """
    cursor = await conn.execute(
        _LEASE_SQL,
        {"now": now, "n": sessions, "owner": owner, "until": now + lease_seconds},
    )
    leased = sorted(await cursor.fetchall(), key=lambda row: (row[4], row[5]))
    if not leased:
        return []
    ids = [str(row[0]) for row in leased]
    cursor = await conn.execute(_TURNS_SQL, (ids, turns))
    found: dict[str, list[QueuedTurn]] = {session_id: [] for session_id in ids}
    for row in await cursor.fetchall():
        found[str(row[0])].append(QueuedTurn(*row[1:]))
    return [
        ClaimedSession(
            session_id=str(row[0]),
            user_id=str(row[1]),
            agent=str(row[2]),
            attempts=int(str(row[3])),
            turns=found[str(row[0])],
        )
        for row in leased
    ]


async def renew(
    conn: Conn, *, owner: str, session_id: str, lease_seconds: float, now: float
) -> bool:
    """Extend this owner's lease on a session; False when another owner took it."""
    cursor = await conn.execute(
        "UPDATE memory_sessions SET lease_until = %s WHERE session_id = %s AND lease_owner = %s",
        (now + lease_seconds, session_id, owner),
    )
    return cursor.rowcount > 0


async def mark_delivered(conn: Conn, *, session_id: str, seqs: Sequence[int], now: float) -> None:
    """Mark turns delivered, drop their text, and reset the session's attempt count.

    One statement (:data:`_MARK_DELIVERED_SQL`): on an autocommit connection, one round
    trip and its own transaction.
    """
    cursor = await conn.execute(
        _MARK_DELIVERED_SQL, {"s": session_id, "seqs": list(seqs), "now": now}
    )
    row = await cursor.fetchone()
    if not row or not row[0]:
        raise QueueUnavailableError("unknown session")


async def schedule_retry(
    conn: Conn, *, owner: str, session_id: str, error: str, next_attempt_at: float
) -> None:
    """Count a failed attempt, remember why, release the lease until ``next_attempt_at``."""
    await conn.execute(
        "UPDATE memory_sessions SET attempts = attempts + 1, last_error = %s, "
        "next_attempt_at = %s, lease_owner = NULL, lease_until = NULL "
        "WHERE session_id = %s AND lease_owner = %s",
        (error[:500], next_attempt_at, session_id, owner),
    )


async def dead_letter(
    conn: Conn, *, session_id: str, seqs: Sequence[int], reason: str, attempts: int, now: float
) -> int:
    """Move the turns to a new dead letter and reset the session's attempts.

    One statement (:data:`_DEAD_LETTER_SQL`): on an autocommit connection, one round trip
    and its own transaction.
    """
    cursor = await conn.execute(
        _DEAD_LETTER_SQL,
        {
            "s": session_id,
            "seqs": list(seqs),
            "turns": len(seqs),
            "reason": reason[:1000],
            "error": reason[:500],
            "attempts": attempts,
            "now": now,
        },
    )
    row = await cursor.fetchone()
    if row is None:
        raise QueueUnavailableError("unknown session")
    return int(str(row[0]))


async def release(conn: Conn, *, owner: str, session_id: str, next_attempt_at: float) -> None:
    """Give a lease back without counting an attempt."""
    await conn.execute(
        "UPDATE memory_sessions SET lease_owner = NULL, lease_until = NULL, "
        "next_attempt_at = GREATEST(next_attempt_at, %s) "
        "WHERE session_id = %s AND lease_owner = %s",
        (next_attempt_at, session_id, owner),
    )


async def replay(conn: Conn, ids: Sequence[int] | None, *, now: float) -> int:
    """Return dead-lettered turns to the queue (their ``seq`` keeps their place); count them."""
    where = "" if ids is None else " AND id = ANY(%s)"
    cursor = await conn.execute(
        "SELECT id, session_id FROM memory_dead_letters "  # noqa: S608 - fixed fragment
        f"WHERE replayed_at IS NULL{where} ORDER BY session_id, id FOR UPDATE",
        () if ids is None else (list(ids),),
    )
    total = 0
    for letter_id, session_id in await cursor.fetchall():
        await lock_session(conn, str(session_id))
        moved = await conn.execute(
            "UPDATE memory_turns SET state = 0, dead_letter_id = NULL "
            "WHERE state = 2 AND dead_letter_id = %s",
            (letter_id,),
        )
        await conn.execute(
            "UPDATE memory_dead_letters SET replayed_at = %s WHERE id = %s",
            (now, letter_id),
        )
        await change_pending(
            conn,
            str(session_id),
            moved.rowcount,
            "attempts = 0, next_attempt_at = 0, last_error = NULL",
            (),
            dead=-1,
        )
        total += moved.rowcount
    return total


async def lock_session(conn: Conn, session_id: str) -> tuple[str, str]:
    """Lock the session's row first (the one lock order of every writer); return its owner."""
    cursor = await conn.execute(
        "SELECT user_id, agent FROM memory_sessions WHERE session_id = %s FOR UPDATE",
        (session_id,),
    )
    row = await cursor.fetchone()
    if row is None:
        raise QueueUnavailableError("unknown session")
    return str(row[0]), str(row[1])


async def change_pending(
    conn: Conn,
    session_id: str,
    delta: int,
    assignments: str,
    params: tuple[Any, ...],
    *,
    dead: int = 0,
    delivered: float | None = None,
) -> None:
    """Add ``delta`` to the session's pending turns (with ``assignments``) and the totals."""
    cursor = await conn.execute(
        f"UPDATE memory_sessions SET pending = pending + %s, {assignments} "  # noqa: S608
        "WHERE session_id = %s RETURNING pending",
        (delta, *params, session_id),
    )
    row = await cursor.fetchone()
    after = int(str(row[0])) if row else 0
    before = after - delta
    sessions = int(after > 0) - int(before > 0)
    if not (delta or sessions or dead or (delivered is not None and delta)):
        return
    await conn.execute(
        "UPDATE memory_queue_counters SET pending = pending + %s, "  # noqa: S608
        "sessions_pending = sessions_pending + %s, dead_letters = dead_letters + %s, "
        "last_delivered_at = CASE WHEN %s::double precision IS NULL THEN last_delivered_at "
        "ELSE GREATEST(COALESCE(last_delivered_at, 0), %s) END "
        f"WHERE shard = {SHARD}",
        (delta, sessions, dead, delivered if delta else None, delivered if delta else None),
    )
