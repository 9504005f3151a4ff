"""The PostgreSQL queue's group write: many requests' turns in one transaction.

:func:`write_group` runs inside the transaction of one pooled connection (see
:mod:`engram_voice.memory.postgres_queue`). It creates unknown sessions, locks every
session of the group in sorted order (so concurrent groups on any replica never
deadlock, and turns of one session get ``seq`` values in commit order), refuses batches
whose session belongs to another user or agent, inserts the rest with
``ON CONFLICT DO NOTHING`` on the unique ``(session_id, message_id)`` key, and updates the
sessions' pending counts and the running totals in the same statement.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import TupleRow

from engram_voice.memory.postgres_schema import SHARD
from engram_voice.memory.queue import EnqueueBatch, EnqueueResult, SessionMismatchError

__all__ = ["write_group"]

_INSERT_SESSIONS = (
    "INSERT INTO memory_sessions (session_id, user_id, agent, created_at) "
    "SELECT s, u, a, %s FROM unnest(%s::text[], %s::text[], %s::text[]) AS v(s, u, a) "
    "ORDER BY s ON CONFLICT (session_id) DO NOTHING"
)
_LOCK_SESSIONS = (
    "SELECT session_id, user_id, agent FROM memory_sessions WHERE session_id = ANY(%s) "
    "ORDER BY session_id FOR UPDATE"
)
_INSERT_TURNS = f"""
WITH v AS (
    SELECT * FROM unnest(%(s)s::text[], %(m)s::text[], %(r)s::text[], %(t)s::text[],
                         %(a)s::text[]) WITH ORDINALITY AS v(session_id, message_id, role,
                                                             body, at, ord)
), ins AS (
    INSERT INTO memory_turns (session_id, message_id, role, text, at, accepted_at)
    SELECT session_id, message_id, role, body, at, %(now)s FROM v ORDER BY ord
    ON CONFLICT (session_id, message_id) DO NOTHING
    RETURNING session_id, message_id
), counted AS (
    SELECT session_id, count(*)::int AS n FROM ins GROUP BY session_id
), sessions AS (
    UPDATE memory_sessions AS s SET pending = s.pending + c.n FROM counted AS c
    WHERE s.session_id = c.session_id RETURNING s.pending - c.n AS before, c.n
), totals AS (
    UPDATE memory_queue_counters SET
        pending = pending + (SELECT COALESCE(SUM(n), 0) FROM sessions),
        sessions_pending = sessions_pending
            + (SELECT count(*) FROM sessions WHERE before = 0 AND n > 0)
    WHERE shard = {SHARD} AND EXISTS (SELECT 1 FROM sessions)
)
SELECT session_id, message_id FROM ins
"""  # noqa: S608 - SHARD is a constant expression, every value is a parameter


async def _insert_sessions(
    conn: psycopg.AsyncConnection[TupleRow],
    first: dict[str, tuple[str, str]],
    ids: list[str],
    now: float,
) -> None:
    await conn.execute(
        _INSERT_SESSIONS,
        (now, ids, [first[i][0] for i in ids], [first[i][1] for i in ids]),
    )


async def _lock(
    conn: psycopg.AsyncConnection[TupleRow], ids: list[str]
) -> dict[str, tuple[str, str]]:
    cursor = await conn.execute(_LOCK_SESSIONS, (ids,))
    return {str(row[0]): (str(row[1]), str(row[2])) for row in await cursor.fetchall()}


async def write_group(
    conn: psycopg.AsyncConnection[TupleRow],
    batches: list[EnqueueBatch],
    now: float,
    known: frozenset[str] | set[str] = frozenset(),
) -> list[EnqueueResult | SessionMismatchError]:
    """Write every batch in the caller's transaction; a mismatched session writes nothing.

    ``known`` names sessions this process saw committed before: their insert is skipped
    (a session found missing after all is inserted then, so a deleted row is no problem).
    """
    first: dict[str, tuple[str, str]] = {}
    for batch in batches:
        first.setdefault(batch.session_id, (batch.user_id, batch.agent))
    ids = sorted(first)
    new = [i for i in ids if i not in known]
    if new:
        await _insert_sessions(conn, first, new, now)
    owners = await _lock(conn, ids)
    missing = [i for i in ids if i not in owners]
    if missing:  # known here, gone from the table: create and lock them now
        await _insert_sessions(conn, first, missing, now)
        owners.update(await _lock(conn, missing))
    columns: dict[str, list[Any]] = {"s": [], "m": [], "r": [], "t": [], "a": []}
    accepted_ok: list[bool] = []
    for batch in batches:
        ok = owners.get(batch.session_id) == (batch.user_id, batch.agent)
        accepted_ok.append(ok)
        if not ok:
            continue
        for message_id, role, text, at in batch.turns:
            columns["s"].append(batch.session_id)
            columns["m"].append(message_id)
            columns["r"].append(role)
            columns["t"].append(text)
            columns["a"].append(at)
    inserted: set[tuple[str, str]] = set()
    if columns["s"]:
        cursor = await conn.execute(_INSERT_TURNS, {**columns, "now": now})
        inserted = {(str(row[0]), str(row[1])) for row in await cursor.fetchall()}
    results: list[EnqueueResult | SessionMismatchError] = []
    for batch, ok in zip(batches, accepted_ok, strict=True):
        if not ok:
            results.append(SessionMismatchError(batch.session_id))
            continue
        accepted = 0
        for message_id, *_ in batch.turns:
            key = (batch.session_id, message_id)
            if key in inserted:  # the first batch naming a new key is the one that stored it
                inserted.discard(key)
                accepted += 1
        results.append(EnqueueResult(accepted=accepted, duplicates=len(batch.turns) - accepted))
    return results
