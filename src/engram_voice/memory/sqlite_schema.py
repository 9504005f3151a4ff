"""The SQLite queue's schema and its one non-trivial query.

``turns`` holds every accepted turn; ``(session_id, message_id)`` is unique, which is
what makes enqueue idempotent. ``state`` is 0 pending, 1 delivered (text dropped, key
kept for dedup until purged), 2 dead-lettered. ``sessions`` carries per-session
delivery state: owner identity, pending count, attempts, backoff and the lease.
Retention (:mod:`engram_voice.memory.sqlite_retention`) removes delivered turns, replayed
dead letters and finished sessions (``sessions_created`` finds the old ones).

``queue_counters`` is one row of running totals for ``/status`` (pending turns, sessions
with pending turns, unreplayed dead letters, last delivery), kept by triggers in the same
transactions as the writes, so reading them costs the same at any queue depth. The
script is additive and idempotent (``IF NOT EXISTS``): a file from an earlier version
gets the table, its figures computed once from the rows already there, and the triggers,
all in one transaction.

``captured_sessions`` (schema step 2) holds which sessions the server captures itself
(:data:`~engram_voice.memory.queue.CAPTURE_STATES`, stored as their index), shared by
every process on the file; its statements are in :mod:`engram_voice.memory.sqlite_capture`.
"""

from __future__ import annotations

__all__ = [
    "DEAD",
    "DELIVERED",
    "PENDING",
    "PROGRESS_SQL",
    "SCHEMA",
    "STATS_SQL",
    "claim_sql",
]

PENDING, DELIVERED, DEAD = 0, 1, 2

SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS sessions (
    session_id      TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL,
    agent           TEXT NOT NULL,
    created_at      REAL NOT NULL,
    pending         INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error      TEXT,
    lease_owner     TEXT,
    lease_until     REAL
);
CREATE INDEX IF NOT EXISTS sessions_ready ON sessions(next_attempt_at) WHERE pending > 0;
CREATE INDEX IF NOT EXISTS sessions_created ON sessions(created_at);

CREATE TABLE IF NOT EXISTS turns (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id     TEXT NOT NULL,
    message_id     TEXT NOT NULL,
    role           TEXT NOT NULL,
    text           TEXT,
    at             TEXT,
    accepted_at    REAL NOT NULL,
    state          INTEGER NOT NULL DEFAULT 0,
    delivered_at   REAL,
    dead_letter_id INTEGER,
    UNIQUE (session_id, message_id)
);
CREATE INDEX IF NOT EXISTS turns_pending ON turns(session_id, seq) WHERE state = 0;
CREATE INDEX IF NOT EXISTS turns_pending_age ON turns(accepted_at) WHERE state = 0;
CREATE INDEX IF NOT EXISTS turns_delivered ON turns(delivered_at) WHERE state = 1;
CREATE INDEX IF NOT EXISTS turns_dead ON turns(dead_letter_id) WHERE state = 2;

CREATE TABLE IF NOT EXISTS dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    agent       TEXT NOT NULL,
    turns       INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    created_at  REAL NOT NULL,
    replayed_at REAL
);

CREATE TABLE IF NOT EXISTS queue_counters (
    id                INTEGER PRIMARY KEY CHECK (id = 1),
    pending           INTEGER NOT NULL,
    sessions_pending  INTEGER NOT NULL,
    dead_letters      INTEGER NOT NULL,
    last_delivered_at REAL
);
INSERT INTO queue_counters(id, pending, sessions_pending, dead_letters, last_delivered_at)
SELECT 1,
    (SELECT COALESCE(SUM(pending), 0) FROM sessions),
    (SELECT COUNT(*) FROM sessions WHERE pending > 0),
    (SELECT COUNT(*) FROM dead_letters WHERE replayed_at IS NULL),
    (SELECT MAX(delivered_at) FROM turns WHERE state = 1)
WHERE NOT EXISTS (SELECT 1 FROM queue_counters);

CREATE TRIGGER IF NOT EXISTS counters_session_added AFTER INSERT ON sessions
WHEN new.pending <> 0 BEGIN
    UPDATE queue_counters SET pending = pending + new.pending,
        sessions_pending = sessions_pending + (new.pending > 0) WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS counters_session_pending AFTER UPDATE OF pending ON sessions
WHEN new.pending <> old.pending BEGIN
    UPDATE queue_counters SET pending = pending + new.pending - old.pending,
        sessions_pending = sessions_pending + (new.pending > 0) - (old.pending > 0)
    WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS counters_session_removed AFTER DELETE ON sessions
WHEN old.pending <> 0 BEGIN
    UPDATE queue_counters SET pending = pending - old.pending,
        sessions_pending = sessions_pending - (old.pending > 0) WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS counters_letter_added AFTER INSERT ON dead_letters
WHEN new.replayed_at IS NULL BEGIN
    UPDATE queue_counters SET dead_letters = dead_letters + 1 WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS counters_letter_replayed AFTER UPDATE OF replayed_at ON dead_letters
WHEN (old.replayed_at IS NULL) <> (new.replayed_at IS NULL) BEGIN
    UPDATE queue_counters SET dead_letters = dead_letters
        + (new.replayed_at IS NULL) - (old.replayed_at IS NULL) WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS counters_letter_removed AFTER DELETE ON dead_letters
WHEN old.replayed_at IS NULL BEGIN
    UPDATE queue_counters SET dead_letters = dead_letters - 1 WHERE id = 1;
END;

-- step 2: which sessions the server captures itself (issue 11, shared by replicas)
CREATE TABLE IF NOT EXISTS captured_sessions (
    session_id     TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL,
    agent          TEXT NOT NULL,
    state          INTEGER NOT NULL,
    state_until REAL,
    updated_at     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS captured_sessions_updated ON captured_sessions(updated_at);
COMMIT;
"""

STATS_SQL = (
    "SELECT pending, sessions_pending, dead_letters, last_delivered_at, "
    "(SELECT MIN(accepted_at) FROM turns WHERE state = 0) FROM queue_counters WHERE id = 1"
)
"""Running totals plus the oldest pending turn (an index seek on ``turns_pending_age``)."""

PROGRESS_SQL = (
    "SELECT COALESCE(SUM(state = 0), 0), COALESCE(SUM(state = 1), 0), "
    "COALESCE(SUM(state = 2), 0), "
    "(SELECT attempts FROM sessions WHERE session_id = ?1), "
    "(SELECT next_attempt_at FROM sessions WHERE session_id = ?1) "
    "FROM turns WHERE session_id = ?1"
)
"""One session's turns by state plus its retry schedule, in one statement (one snapshot).

It seeks the ``UNIQUE (session_id, message_id)`` index, so it reads only that session's
turns (a call has tens to a few hundred), never the whole queue; no extra index, so
enqueue pays nothing for it."""


def claim_sql() -> str:
    """Select ready sessions: pending turns, due now, lease free or expired (oldest first)."""
    return (
        "SELECT session_id, user_id, agent, attempts FROM sessions "
        "WHERE pending > 0 AND next_attempt_at <= ? "
        "AND (lease_until IS NULL OR lease_until < ?) "
        "ORDER BY next_attempt_at, created_at LIMIT ?"
    )
