"""The SQLite sink state's tables and their migrations (component ``sink_state``).

``schema_versions`` holds one row per component that versions its tables in the queue's
file; :func:`migrate` runs every migration newer than the stored ``sink_state`` version,
with the version bump, in one ``BEGIN IMMEDIATE`` transaction (so two processes opening
an old file at once migrate it once). The queue's own tables are not touched.
"""

from __future__ import annotations

import sqlite3

__all__ = ["MIGRATIONS", "SCHEMA_COMPONENT", "migrate"]

SCHEMA_COMPONENT = "sink_state"
MIGRATIONS: tuple[str, ...] = (
    # 1: id map, batch in flight, delivered records
    """
    CREATE TABLE IF NOT EXISTS sink_ids (
        sink       TEXT NOT NULL,
        kind       TEXT NOT NULL,
        our_id     TEXT NOT NULL,
        sink_id    TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (sink, kind, our_id)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS sink_batches (
        sink       TEXT NOT NULL,
        session_id TEXT NOT NULL,
        batch_key  TEXT NOT NULL,
        target     TEXT NOT NULL,
        messages   BLOB NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (sink, session_id)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS sink_delivered (
        sink         TEXT NOT NULL,
        session_id   TEXT NOT NULL,
        message_id   TEXT NOT NULL,
        part         INTEGER NOT NULL,
        delivered_at REAL NOT NULL,
        PRIMARY KEY (sink, session_id, message_id, part)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS sink_delivered_age ON sink_delivered(delivered_at);
    """,
)
"""Migration ``n`` (1-based) brings the tables to version ``n``; only ever append."""

_VERSIONS = """
CREATE TABLE IF NOT EXISTS schema_versions (
    component TEXT PRIMARY KEY,
    version   INTEGER NOT NULL
)
"""


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the missing migrations in one transaction; return the resulting version."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(_VERSIONS)
        row = conn.execute(
            "SELECT version FROM schema_versions WHERE component = ?", (SCHEMA_COMPONENT,)
        ).fetchone()
        version = row[0] if row else 0
        for number, script in enumerate(MIGRATIONS, start=1):
            if number > version:
                for statement in filter(str.strip, script.split(";")):
                    conn.execute(statement)
        if version < len(MIGRATIONS):
            conn.execute(
                "INSERT INTO schema_versions(component, version) VALUES (?, ?) "
                "ON CONFLICT(component) DO UPDATE SET version = excluded.version",
                (SCHEMA_COMPONENT, len(MIGRATIONS)),
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return max(version, len(MIGRATIONS))
