"""The SQLite queue's status and operator reads; status on a connection and thread of their own.

WAL lets this connection read while a write is in progress; with a short busy timeout it
never queues behind writes. ``stats`` reads the running totals the schema's triggers keep,
so it costs the same at any depth; ``session_progress`` reads one session's turns by an
index seek (see :mod:`engram_voice.memory.sqlite_schema`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from engram_voice.memory.queue import DeadLetter, QueueStats, SessionProgress
from engram_voice.memory.sqlite_schema import PROGRESS_SQL, STATS_SQL

__all__ = ["READ_BUSY_SECONDS", "connect_reader", "dead_letters", "session_progress", "stats"]

READ_BUSY_SECONDS = 0.25
"""How long a status read waits for a lock (WAL readers rarely wait at all)."""


def connect_reader(path: Path) -> sqlite3.Connection:
    """Open a read-only connection to the queue file with the short busy timeout."""
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=READ_BUSY_SECONDS
    )
    conn.execute(f"PRAGMA busy_timeout={int(READ_BUSY_SECONDS * 1000)}")
    conn.execute("PRAGMA query_only=1")
    return conn


def stats(conn: sqlite3.Connection) -> QueueStats:
    """Return the running totals and the oldest pending turn."""
    depth, sessions, dead, last, oldest = conn.execute(STATS_SQL).fetchone()
    return QueueStats(
        backend="sqlite",
        depth=depth,
        sessions_pending=sessions,
        oldest_pending_at=oldest,
        dead_letters=dead,
        last_delivered_at=last,
    )


def session_progress(conn: sqlite3.Connection, session_id: str) -> SessionProgress:
    """Count one session's turns by state (an index seek) and its retry schedule."""
    queued, delivered, dead, attempts, next_at = conn.execute(
        PROGRESS_SQL, (session_id,)
    ).fetchone()
    retrying = bool(queued and attempts and next_at)
    return SessionProgress(
        queued=queued,
        delivered=delivered,
        dead_lettered=dead,
        attempts=attempts if retrying else 0,
        next_attempt_at=next_at if retrying else None,
    )


def dead_letters(
    conn: sqlite3.Connection, *, limit: int, include_replayed: bool
) -> list[DeadLetter]:
    """List dead letters, newest first (on whichever connection the queue lends)."""
    where = "" if include_replayed else "WHERE replayed_at IS NULL"
    sql = (
        "SELECT id, session_id, user_id, agent, turns, reason, attempts, created_at, "  # noqa: S608 - fixed fragments
        f"replayed_at FROM dead_letters {where} ORDER BY id DESC LIMIT ?"
    )
    return [DeadLetter(*row) for row in conn.execute(sql, (limit,)).fetchall()]
