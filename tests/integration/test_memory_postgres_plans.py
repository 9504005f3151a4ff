"""Query plans of the PostgreSQL queue's retention: no step reads a whole table."""

import psycopg
import pytest

from engram_voice.memory.postgres_queue import PostgresTurnQueue
from engram_voice.memory.postgres_retention import PURGE_SESSIONS_SQL


@pytest.mark.parametrize(
    ("sessions", "idle_percent"), [(5_000, 50), (50_000, 90), (50_000, 20), (100_000, 99)]
)
async def test_the_sessions_purge_seeks_old_idle_sessions_whatever_the_table_size(
    postgres_server, sessions, idle_percent
):
    """Retention's sessions step reads an index by age and deletes by address, never a scan."""
    database = postgres_server.new_database("purgeplan")
    queue = PostgresTurnQueue(postgres_server.conninfo(database), pool_size=2)
    await queue.open()
    await queue.close()
    cutoff = sessions / 100  # retention keeps the newest 99 % of sessions
    with psycopg.connect(postgres_server.conninfo(database), autocommit=True) as conn:
        # Sessions created at 1..N: idle ones (nothing pending) and busy ones (pending
        # turns, some leased); every session past the cut-off still has three turns.
        conn.execute(
            "INSERT INTO memory_sessions (session_id, user_id, agent, created_at, pending, "
            "lease_owner) SELECT 's' || i, 'u', 'a', i, "
            "CASE WHEN i %% 100 < %(idle)s THEN 0 ELSE 3 END, "
            "CASE WHEN i %% 7 = 0 AND i %% 100 >= %(idle)s THEN 'w' END "
            "FROM generate_series(1, %(n)s::int) AS i",
            {"idle": idle_percent, "n": sessions},
        )
        conn.execute(
            "INSERT INTO memory_turns (session_id, message_id, role, accepted_at, state) "
            "SELECT 's' || i, 'm' || j, 'user', i, "
            "CASE WHEN i %% 100 < %(idle)s THEN 1 ELSE 0 END "
            "FROM generate_series(%(cut)s::int, %(n)s::int) AS i, generate_series(1, 3) AS j",
            {"idle": idle_percent, "n": sessions, "cut": int(cutoff)},
        )
        conn.execute("ANALYZE memory_sessions")
        conn.execute("ANALYZE memory_turns")
        cursor = psycopg.ClientCursor(conn)
        cursor.execute(f"EXPLAIN {PURGE_SESSIONS_SQL}", (cutoff, 1000))
        plan = "\n".join(str(row[0]) for row in cursor.fetchall())
    assert "Seq Scan on memory_sessions" not in plan, plan
    assert "Seq Scan on memory_turns" not in plan, plan
    assert "memory_sessions_idle" in plan, plan
