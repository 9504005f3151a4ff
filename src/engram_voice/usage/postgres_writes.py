"""The usage tables on PostgreSQL: their migration and how one write is applied."""

from __future__ import annotations

import psycopg
from psycopg.rows import TupleRow

from engram_voice.usage.records import TOKEN_KINDS, CallEnded, CallStarted, TokensUsed, UsageWrite

__all__ = ["MIGRATIONS", "apply_write"]

_TOKENS = ", ".join(f"{k} bigint NOT NULL DEFAULT 0" for k in TOKEN_KINDS)
MIGRATIONS: tuple[str, ...] = (
    f"""
    CREATE TABLE usage_calls (
        call_id text PRIMARY KEY, user_id text NOT NULL, agent text NOT NULL,
        upstream text NOT NULL, day text NOT NULL, started_at double precision NOT NULL,
        ended_at double precision, seconds double precision, reason text, {_TOKENS});
    CREATE TABLE usage_daily (
        user_id text NOT NULL, day text NOT NULL, calls integer NOT NULL DEFAULT 0,
        seconds double precision NOT NULL DEFAULT 0, {_TOKENS}, PRIMARY KEY (user_id, day));
    CREATE INDEX usage_daily_day ON usage_daily (day);
    """,
)
"""The usage component's migrations (applied by ``memory.postgres_schema.migrate``)."""
_ADD_TOKENS = ", ".join(f"{k} = {k} + %({k})s" for k in TOKEN_KINDS)
Conn = psycopg.AsyncConnection[TupleRow]


async def apply_write(conn: Conn, write: UsageWrite) -> None:
    """Apply one write to the call record and its user's day (idempotent per call start/end)."""
    await conn.execute(
        "INSERT INTO usage_daily (user_id, day) VALUES (%s, %s) ON CONFLICT DO NOTHING",
        (write.user_id, write.day),
    )
    if isinstance(write, CallStarted):
        cursor = await conn.execute(
            "INSERT INTO usage_calls (call_id, user_id, agent, upstream, day, started_at) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (
                write.call_id,
                write.user_id,
                write.agent,
                write.upstream,
                write.day,
                write.started_at,
            ),
        )
        if cursor.rowcount:
            await conn.execute(
                "UPDATE usage_daily SET calls = calls + 1 WHERE user_id = %s AND day = %s",
                (write.user_id, write.day),
            )
    elif isinstance(write, TokensUsed):
        values = {k: int(write.tokens.get(k, 0)) for k in TOKEN_KINDS}
        await conn.execute(
            f"UPDATE usage_calls SET {_ADD_TOKENS} WHERE call_id = %(call_id)s",  # noqa: S608
            {**values, "call_id": write.call_id},
        )
        await conn.execute(
            f"UPDATE usage_daily SET {_ADD_TOKENS} "  # noqa: S608
            "WHERE user_id = %(user_id)s AND day = %(day)s",
            {**values, "user_id": write.user_id, "day": write.day},
        )
    elif isinstance(write, CallEnded):
        cursor = await conn.execute(
            "UPDATE usage_calls SET seconds = %s, reason = %s, ended_at = %s "
            "WHERE call_id = %s AND seconds IS NULL",
            (write.seconds, write.reason, write.ended_at, write.call_id),
        )
        if cursor.rowcount:
            await conn.execute(
                "UPDATE usage_daily SET seconds = seconds + %s WHERE user_id = %s AND day = %s",
                (write.seconds, write.user_id, write.day),
            )
