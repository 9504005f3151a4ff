"""The PostgreSQL queue's schema, as numbered migrations applied at start-up.

Every replica runs :func:`migrate` when it opens the queue. The migrations run in one
transaction under a transaction-scoped advisory lock, so replicas starting at once
apply each migration exactly once (the others wait, then find nothing left to do).
Applied versions are recorded in ``engram_schema_migrations`` per component. A database
migrated by a newer release (a version this one does not know) is left alone.

The tables mirror the SQLite backend's (see :mod:`engram_voice.memory.sqlite_schema`):
``memory_turns`` with the unique ``(session_id, message_id)`` key that makes enqueue
idempotent, ``memory_sessions`` with per-session delivery state and the lease,
``memory_dead_letters``. The running totals for ``/status`` live in
``memory_queue_counters``, split into :data:`COUNTER_SHARDS` rows: each connection adds
its deltas to the row of its backend PID, so concurrent writers (several replicas) do not
queue behind one hot row, and ``stats`` sums a fixed number of rows at any depth.
``memory_captured`` (migration 3) holds which sessions the server captures itself, shared
by every replica (:data:`~engram_voice.memory.queue.CAPTURE_STATES` as their index; its
statements are in :mod:`engram_voice.memory.postgres_capture`).
"""

from __future__ import annotations

import psycopg
import structlog

__all__ = [
    "COMPONENT",
    "COUNTER_SHARDS",
    "MIGRATIONS",
    "PROGRESS_SQL",
    "SHARD",
    "STATS_SQL",
    "migrate",
]

_logger = structlog.get_logger("engram_voice.memory.queue")
COMPONENT = "memory_queue"
COUNTER_SHARDS = 16
SHARD = f"pg_backend_pid() %% {COUNTER_SHARDS}"
"""The counter row this connection writes (SQL expression for parametrised queries)."""
STATS_SQL = (
    "SELECT COALESCE(SUM(pending), 0), COALESCE(SUM(sessions_pending), 0), "
    "COALESCE(SUM(dead_letters), 0), MAX(last_delivered_at), "
    "(SELECT MIN(accepted_at) FROM memory_turns WHERE state = 0) "
    "FROM memory_queue_counters"
)
"""The figures: the counter shards plus an index seek for the oldest pending turn."""
PROGRESS_SQL = (
    "SELECT count(*) FILTER (WHERE t.state = 0), count(*) FILTER (WHERE t.state = 1), "
    "count(*) FILTER (WHERE t.state = 2), "
    "(SELECT attempts FROM memory_sessions WHERE session_id = %(s)s), "
    "(SELECT next_attempt_at FROM memory_sessions WHERE session_id = %(s)s) "
    "FROM memory_turns t WHERE t.session_id = %(s)s"
)
"""One session's turns by state plus its retry schedule, in one statement (one snapshot),
through the ``(session_id, message_id)`` unique index: only that session's turns are read."""
_LOCK_KEY = 0x656E6772616D5131  # "engramQ1": the advisory lock serialising migrations
_LOCK_WAIT = "60s"

MIGRATIONS: tuple[str, ...] = (
    # 1: the queue
    f"""
    CREATE TABLE memory_sessions (
        session_id      text PRIMARY KEY,
        user_id         text NOT NULL,
        agent           text NOT NULL,
        created_at      double precision NOT NULL,
        pending         integer NOT NULL DEFAULT 0,
        attempts        integer NOT NULL DEFAULT 0,
        next_attempt_at double precision NOT NULL DEFAULT 0,
        last_error      text,
        lease_owner     text,
        lease_until     double precision
    );
    CREATE INDEX memory_sessions_ready ON memory_sessions (next_attempt_at, created_at)
        WHERE pending > 0;
    CREATE TABLE memory_turns (
        seq            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        session_id     text NOT NULL,
        message_id     text NOT NULL,
        role           text NOT NULL,
        text           text,
        at             text,
        accepted_at    double precision NOT NULL,
        state          smallint NOT NULL DEFAULT 0,
        delivered_at   double precision,
        dead_letter_id bigint,
        UNIQUE (session_id, message_id)
    );
    CREATE INDEX memory_turns_pending ON memory_turns (session_id, seq) WHERE state = 0;
    CREATE INDEX memory_turns_pending_age ON memory_turns (accepted_at) WHERE state = 0;
    CREATE INDEX memory_turns_delivered ON memory_turns (delivered_at) WHERE state = 1;
    CREATE INDEX memory_turns_dead ON memory_turns (dead_letter_id) WHERE state = 2;
    CREATE TABLE memory_dead_letters (
        id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        session_id  text NOT NULL,
        user_id     text NOT NULL,
        agent       text NOT NULL,
        turns       integer NOT NULL,
        reason      text NOT NULL,
        attempts    integer NOT NULL,
        created_at  double precision NOT NULL,
        replayed_at double precision
    );
    CREATE TABLE memory_queue_counters (
        shard             smallint PRIMARY KEY,
        pending           bigint NOT NULL DEFAULT 0,
        sessions_pending  bigint NOT NULL DEFAULT 0,
        dead_letters      bigint NOT NULL DEFAULT 0,
        last_delivered_at double precision
    );
    INSERT INTO memory_queue_counters (shard) SELECT generate_series(0, {COUNTER_SHARDS - 1});
    """,
    # 2: retention's sessions step seeks idle sessions by age instead of scanning them all
    """
    CREATE INDEX memory_sessions_idle ON memory_sessions (created_at)
        WHERE pending = 0 AND lease_owner IS NULL;
    """,
    # 3: which sessions the server captures itself (issue 11), shared by every replica
    """
    CREATE TABLE memory_captured (
        session_id     text PRIMARY KEY,
        user_id        text NOT NULL,
        agent          text NOT NULL,
        state          smallint NOT NULL,
        state_until double precision,
        updated_at     double precision NOT NULL
    );
    CREATE INDEX memory_captured_updated ON memory_captured (updated_at);
    """,
)
"""Migration N is ``MIGRATIONS[N - 1]``; append only, never edit one that shipped."""


async def migrate(
    conn: psycopg.AsyncConnection[tuple[object, ...]],
    *,
    component: str = COMPONENT,
    migrations: tuple[str, ...] = MIGRATIONS,
) -> tuple[int, int]:
    """Apply a component's missing migrations under the advisory lock; return versions.

    Every component (the queue, the usage store) shares the lock and the versions table.
    """
    async with conn.transaction():
        await conn.execute(f"SET LOCAL lock_timeout = '{_LOCK_WAIT}'")
        await conn.execute("SET LOCAL statement_timeout = 0")
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS engram_schema_migrations ("
            " component text NOT NULL, version integer NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (component, version))"
        )
        cursor = await conn.execute(
            "SELECT COALESCE(MAX(version), 0) FROM engram_schema_migrations WHERE component = %s",
            (component,),
        )
        row = await cursor.fetchone()
        current = int(str(row[0])) if row else 0
        if current > len(migrations):
            _logger.warning(
                "memory.queue_schema_newer",
                component=component,
                version=current,
                known=len(migrations),
            )
            return current, current
        for version in range(current + 1, len(migrations) + 1):
            await conn.execute(migrations[version - 1])
            await conn.execute(
                "INSERT INTO engram_schema_migrations (component, version) VALUES (%s, %s)",
                (component, version),
            )
        if current < len(migrations):
            _logger.info(
                "memory.queue_migrated", component=component, before=current, after=len(migrations)
            )
        return current, len(migrations)
