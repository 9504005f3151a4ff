"""The PostgreSQL queue's group write: many requests' turns in one statement.

:func:`write_group` writes a group of batches with one statement (one network round trip,
and on an autocommit connection one transaction without a separate BEGIN and COMMIT). The
statement locks every session of the group in sorted order (so concurrent groups on any
replica never deadlock, and turns of one session get ``seq`` values in commit order),
inserts only the turns of batches whose user and agent own their session (the ownership
check is a join, not a round trip of its own) with ``ON CONFLICT DO NOTHING`` on the unique
``(session_id, message_id)`` key, updates the sessions' pending counts and the running
totals, and returns the inserted keys together with every session's owner. Sessions this
process has not seen committed are inserted first (one more statement); a session found
missing after all (deleted by retention) is inserted then and its batches written again.
"""

from __future__ import annotations

import msgspec
import psycopg
from psycopg.rows import TupleRow

from engram_voice.memory.postgres_schema import SHARD
from engram_voice.memory.queue import EnqueueBatch, EnqueueResult, SessionMismatchError

__all__ = ["write_group"]

_ENCODE = msgspec.json.Encoder().encode

_INSERT_SESSIONS = (
    "INSERT INTO memory_sessions (session_id, user_id, agent, created_at) "
    "SELECT s, u, a, %s FROM unnest(%s::text[], %s::text[], %s::text[]) AS v(s, u, a) "
    "ORDER BY s ON CONFLICT (session_id) DO NOTHING"
)
_WRITE_TURNS = f"""
WITH v AS (
    SELECT e->>0 AS session_id, e->>1 AS user_id, e->>2 AS agent, e->>3 AS message_id,
           e->>4 AS role, e->>5 AS body, e->>6 AS at, ord
    FROM json_array_elements(%(turns)s::json) WITH ORDINALITY AS x(e, ord)
), owners AS (
    SELECT session_id, user_id, agent FROM memory_sessions
    WHERE session_id IN (SELECT DISTINCT v.session_id FROM v)
    ORDER BY session_id FOR UPDATE
), ins AS (
    INSERT INTO memory_turns (session_id, message_id, role, text, at, accepted_at)
    SELECT v.session_id, v.message_id, v.role, v.body, v.at, %(now)s
    FROM v JOIN owners AS o
        ON o.session_id = v.session_id AND o.user_id = v.user_id AND o.agent = v.agent
    ORDER BY v.ord
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
SELECT true, session_id, message_id, NULL FROM ins
UNION ALL
SELECT false, session_id, user_id, agent FROM owners
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


async def _write_turns(
    conn: psycopg.AsyncConnection[TupleRow], batches: list[EnqueueBatch], now: float
) -> tuple[dict[str, tuple[str, str]], list[tuple[str, str]]]:
    """Run the one statement; return every locked session's owner and the inserted keys.

    The turns travel as one JSON array of arrays: encoding it is one C call, where seven
    array parameters cost psycopg a Python dump per element.
    """
    rows = [
        (batch.session_id, batch.user_id, batch.agent, message_id, role, text, at)
        for batch in batches
        for message_id, role, text, at in batch.turns
    ]
    try:
        turns = _ENCODE(rows).decode()
    except (UnicodeEncodeError, msgspec.EncodeError) as exc:  # e.g. a lone surrogate
        raise psycopg.DataError("a turn's text cannot be encoded") from exc
    cursor = await conn.execute(_WRITE_TURNS, {"turns": turns, "now": now})
    owners: dict[str, tuple[str, str]] = {}
    inserted: list[tuple[str, str]] = []
    for is_turn, session_id, second, agent in await cursor.fetchall():
        if is_turn:
            inserted.append((str(session_id), str(second)))
        else:
            owners[str(session_id)] = (str(second), str(agent))
    return owners, inserted


async def write_group(
    conn: psycopg.AsyncConnection[TupleRow],
    batches: list[EnqueueBatch],
    now: float,
    known: frozenset[str] | set[str] = frozenset(),
) -> list[EnqueueResult | SessionMismatchError]:
    """Write every batch; a batch whose session belongs to another user or agent writes nothing.

    ``known`` names sessions this process saw committed before: their insert is skipped
    (a session found missing after all is inserted then, so a deleted row is no problem).
    On an autocommit connection each statement commits on its own: the turns, the pending
    counts and the totals always commit together, in the one statement.
    """
    first: dict[str, tuple[str, str]] = {}
    for batch in batches:
        first.setdefault(batch.session_id, (batch.user_id, batch.agent))
    ids = sorted(first)
    new = [i for i in ids if i not in known]
    if new:
        await _insert_sessions(conn, first, new, now)
    owners, inserted = await _write_turns(conn, batches, now)
    missing = {i for i in ids if i not in owners}
    if missing:  # known here, gone from the table: create them and write their batches now
        await _insert_sessions(conn, first, sorted(missing), now)
        again = [batch for batch in batches if batch.session_id in missing]
        more_owners, more_inserted = await _write_turns(conn, again, now)
        owners.update(more_owners)
        inserted.extend(more_inserted)
    stored = set(inserted)
    results: list[EnqueueResult | SessionMismatchError] = []
    for batch in batches:
        if owners.get(batch.session_id) != (batch.user_id, batch.agent):
            results.append(SessionMismatchError(batch.session_id))
            continue
        accepted = 0
        for message_id, *_ in batch.turns:
            key = (batch.session_id, message_id)
            if key in stored:  # the first batch naming a new key is the one that stored it
                stored.discard(key)
                accepted += 1
        results.append(EnqueueResult(accepted=accepted, duplicates=len(batch.turns) - accepted))
    return results
