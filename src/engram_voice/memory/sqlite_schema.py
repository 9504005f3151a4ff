"""The SQLite queue's schema and its one non-trivial query.

``turns`` holds every accepted turn; ``(session_id, message_id)`` is unique, which is
what makes enqueue idempotent. ``state`` is 0 pending, 1 delivered (text dropped, key
kept for dedup until purged), 2 dead-lettered. ``sessions`` carries per-session
delivery state: owner identity, pending count, attempts, backoff and the lease.
"""

from __future__ import annotations

__all__ = ["DEAD", "DELIVERED", "PENDING", "SCHEMA", "claim_sql"]

PENDING, DELIVERED, DEAD = 0, 1, 2

SCHEMA = """
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
"""


def claim_sql() -> str:
    """Select ready sessions: pending turns, due now, lease free or expired (oldest first)."""
    return (
        "SELECT session_id, user_id, agent, attempts FROM sessions "
        "WHERE pending > 0 AND next_attempt_at <= ? "
        "AND (lease_until IS NULL OR lease_until < ?) "
        "ORDER BY next_attempt_at, created_at LIMIT ?"
    )
