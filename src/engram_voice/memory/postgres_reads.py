"""The PostgreSQL queue's status and operator reads (MVCC: never blocked by writers).

``stats`` sums the counter shards (a fixed number of rows at any depth) and seeks the
oldest pending turn; ``session_progress`` reads one session's turns through the unique
``(session_id, message_id)`` index (see :mod:`engram_voice.memory.postgres_schema`).
Each function runs on a connection lent by
:class:`~engram_voice.memory.postgres_queue.PostgresTurnQueue`.
"""

from __future__ import annotations

import psycopg
from psycopg.rows import TupleRow

from engram_voice.memory.postgres_schema import PROGRESS_SQL, STATS_SQL
from engram_voice.memory.queue import DeadLetter, QueueStats, SessionProgress

__all__ = ["dead_letters", "session_progress", "stats"]

Conn = psycopg.AsyncConnection[TupleRow]


async def stats(conn: Conn) -> QueueStats:
    """Sum the counter shards and seek the oldest pending turn."""
    cursor = await conn.execute(STATS_SQL)
    row = await cursor.fetchone()
    assert row is not None  # noqa: S101 - an aggregate always returns one row
    depth, sessions, dead, last, oldest = row
    return QueueStats(
        backend="postgres",
        depth=int(str(depth)),
        sessions_pending=int(str(sessions)),
        oldest_pending_at=oldest,
        dead_letters=int(str(dead)),
        last_delivered_at=last,
    )


async def session_progress(conn: Conn, session_id: str) -> SessionProgress:
    """Count one session's turns by state (an index seek) and its retry schedule."""
    cursor = await conn.execute(PROGRESS_SQL, {"s": session_id})
    row = await cursor.fetchone()
    assert row is not None  # noqa: S101 - an aggregate always returns one row
    queued, delivered, dead, attempts, next_at = row
    retrying = bool(queued and attempts and next_at)
    return SessionProgress(
        queued=int(str(queued)),
        delivered=int(str(delivered)),
        dead_lettered=int(str(dead)),
        attempts=int(str(attempts)) if retrying else 0,
        next_attempt_at=float(str(next_at)) if retrying else None,
    )


async def dead_letters(conn: Conn, *, limit: int, include_replayed: bool) -> list[DeadLetter]:
    """List dead letters, newest first."""
    where = "" if include_replayed else "WHERE replayed_at IS NULL"
    cursor = await conn.execute(
        "SELECT id, session_id, user_id, agent, turns, reason, attempts, created_at, "  # noqa: S608 - fixed fragments
        f"replayed_at FROM memory_dead_letters {where} ORDER BY id DESC LIMIT %s",
        (limit,),
    )
    return [DeadLetter(*row) for row in await cursor.fetchall()]
