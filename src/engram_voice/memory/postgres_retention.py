"""Bounded retention steps for the PostgreSQL queue (one transaction each).

:func:`purge_step` removes at most ``limit`` rows, in this order: turns delivered before
``older_than``, dead letters replayed before it, sessions created before it with nothing
pending, no lease and no turn left, then captured-session records untouched since then.
Pending turns and unreplayed dead letters stay whatever their age. A session removed here
while a replica still caches it is created again by that replica's next write (see
:mod:`engram_voice.memory.postgres_writes`); a write racing the delete locks the row
first, and the delete re-checks ``pending = 0`` after it.
"""

from __future__ import annotations

import psycopg
from psycopg.rows import TupleRow

__all__ = [
    "PURGE_CAPTURED_SQL",
    "PURGE_LETTERS_SQL",
    "PURGE_SESSIONS_SQL",
    "PURGE_TURNS_SQL",
    "purge_step",
]

Conn = psycopg.AsyncConnection[TupleRow]
PURGE_TURNS_SQL = (
    "DELETE FROM memory_turns WHERE seq IN (SELECT seq FROM memory_turns "
    "WHERE state = 1 AND delivered_at < %s LIMIT %s)"
)
PURGE_LETTERS_SQL = (
    "DELETE FROM memory_dead_letters WHERE id IN (SELECT id FROM memory_dead_letters "
    "WHERE replayed_at IS NOT NULL AND replayed_at < %s LIMIT %s)"
)
PURGE_SESSIONS_SQL = (
    "DELETE FROM memory_sessions WHERE ctid = ANY(ARRAY(SELECT s.ctid "
    "FROM memory_sessions s WHERE s.created_at < %s AND s.pending = 0 "
    "AND s.lease_owner IS NULL AND NOT EXISTS "
    "(SELECT 1 FROM memory_turns t WHERE t.session_id = s.session_id) "
    "LIMIT %s FOR UPDATE OF s SKIP LOCKED)) "
    "AND pending = 0 AND lease_owner IS NULL"
)
"""Old idle sessions through ``memory_sessions_idle`` (migration 2), locked (a session a
writer holds is skipped, never waited for) and deleted by row address: no step reads the
whole table, whatever its size."""
PURGE_CAPTURED_SQL = (
    "DELETE FROM memory_captured WHERE session_id IN (SELECT session_id FROM memory_captured "
    "WHERE updated_at < %s LIMIT %s)"
)


async def purge_step(conn: Conn, *, older_than: float, limit: int) -> int:
    """Delete at most ``limit`` rows retention no longer needs (see above); return how many."""
    removed = 0
    for sql in (PURGE_TURNS_SQL, PURGE_LETTERS_SQL, PURGE_SESSIONS_SQL, PURGE_CAPTURED_SQL):
        if removed >= limit:
            break
        cursor = await conn.execute(sql, (older_than, limit - removed))
        removed += cursor.rowcount
    return removed
