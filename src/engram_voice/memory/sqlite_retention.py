"""Bounded storage for the SQLite queue: file settings, the one-time upgrade, purge steps.

What retention removes, in bounded steps of at most ``limit`` rows per transaction (so an
``enqueue`` waits behind one short step at most, never behind a whole purge):

1. delivered turns delivered before ``older_than`` (their text is already gone; the key
   kept for dedup goes now);
2. dead letters that were replayed before ``older_than`` (their turns went back to the
   queue; the record is history);
3. sessions with nothing pending, no lease and no turn left at all (delivered turns
   purged, no dead-lettered turn), created before ``older_than``.

Pending turns and dead letters that were never replayed are kept whatever their age:
they are accepted transcripts not yet in memory, and only an operator (replay) or the
worker (delivery, ``MEMORY_MAX_AGE_SECONDS`` → dead letter) moves them on.

The file itself stops growing once traffic is steady: freed pages go to SQLite's free
list and new rows reuse them. New files use ``auto_vacuum=INCREMENTAL`` and an existing
file is converted once when it is opened (``PRAGMA user_version`` 0 → 1, a ``VACUUM``);
after a purge, free pages beyond a reserve of a quarter of the pages in use are handed
back to the file system, ``limit`` pages per step (so a backlog that was delivered and
purged shrinks the file again). The WAL is bounded by SQLite's automatic checkpoints
(every 1,000 pages) and ``journal_size_limit`` (truncated at its next reset). No extra
checkpoint runs here: one would occupy the writer thread that enqueues wait for
(measured: it put the enqueue p99 during purges at 220 ms instead of 60 ms).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import NamedTuple

import structlog

from engram_voice.memory.sqlite_schema import DELIVERED, SCHEMA
from engram_voice.memory.sqlite_writes import transaction

__all__ = [
    "JOURNAL_SIZE_LIMIT",
    "PURGE_CAPTURED_SQL",
    "STORAGE_VERSION",
    "StorageFigures",
    "open_file",
    "prepare_file",
    "purge_captured",
    "purge_step",
    "reclaim_step",
    "storage_figures",
    "upgrade_file",
]

_logger = structlog.get_logger("engram_voice.memory.queue")

STORAGE_VERSION = 1
"""``PRAGMA user_version`` of a file whose storage settings are current."""
JOURNAL_SIZE_LIMIT = 16 * 1024 * 1024
"""Bytes the WAL is truncated to when it is reset (it grows past this only between checkpoints)."""
_INCREMENTAL = 2
_MIN_RESERVE_PAGES = 64


class StorageFigures(NamedTuple):
    """How big a database file is: its pages (in use and free), free pages, page size."""

    pages: int
    free: int
    page_size: int


def storage_figures(conn: sqlite3.Connection) -> StorageFigures:
    """Return the file's page count, free pages and page size."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return StorageFigures(pages, free, size)


def open_file(
    path: Path, *, synchronous: str, busy_timeout: float, upgrade_busy_seconds: float
) -> sqlite3.Connection:
    """Open the queue file for writing: its settings, the schema, the one-time upgrade."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
    )
    prepare_file(conn)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    conn.executescript(SCHEMA)
    upgrade_file(conn, busy_seconds=upgrade_busy_seconds)
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    return conn


def prepare_file(conn: sqlite3.Connection) -> None:
    """Set the per-connection storage pragmas; a brand-new file gets incremental vacuum.

    Call before the schema is created: ``auto_vacuum`` can only be chosen while the file
    has no table (an existing file is converted by :func:`upgrade_file`).
    """
    if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
    conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")


def upgrade_file(conn: sqlite3.Connection, *, busy_seconds: float) -> None:
    """Bring an older file to :data:`STORAGE_VERSION` (one ``VACUUM``), once.

    A file created by an earlier version has ``auto_vacuum=NONE``; switching it needs a
    ``VACUUM``, which rewrites the file (seconds per gigabyte) and holds the write lock
    meanwhile. Several processes starting at once may each run it; the later ones find
    it done. New files are created current and skip this.
    """
    if conn.execute("PRAGMA user_version").fetchone()[0] >= STORAGE_VERSION:
        return
    if conn.execute("PRAGMA auto_vacuum").fetchone()[0] != _INCREMENTAL:
        started = time.perf_counter()
        before = storage_figures(conn)
        conn.execute(f"PRAGMA busy_timeout={int(busy_seconds * 1000)}")
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        after = storage_figures(conn)
        _logger.info(
            "memory.queue_file_upgraded",
            version=STORAGE_VERSION,
            pages_before=before.pages,
            pages_after=after.pages,
            seconds=round(time.perf_counter() - started, 2),
        )
    conn.execute(f"PRAGMA user_version={STORAGE_VERSION}")


def purge_step(conn: sqlite3.Connection, *, older_than: float, limit: int) -> int:
    """Delete at most ``limit`` rows retention no longer needs, in one transaction.

    Delivered turns first, then replayed dead letters, then finished sessions (see the
    module docstring). Returns how many rows went; fewer than ``limit`` means none is left.
    Runs on the writer thread inside its own ``BEGIN IMMEDIATE`` … ``COMMIT``.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        removed = conn.execute(
            "DELETE FROM turns WHERE seq IN (SELECT seq FROM turns "
            "WHERE state=? AND delivered_at < ? LIMIT ?)",
            (DELIVERED, older_than, limit),
        ).rowcount
        if removed < limit:
            removed += conn.execute(
                "DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters "
                "WHERE replayed_at IS NOT NULL AND replayed_at < ? LIMIT ?)",
                (older_than, limit - removed),
            ).rowcount
        if removed < limit:
            removed += conn.execute(
                "DELETE FROM sessions WHERE session_id IN (SELECT s.session_id FROM sessions s "
                "WHERE s.created_at < ? AND s.pending = 0 AND s.lease_owner IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM turns t WHERE t.session_id = s.session_id) "
                "LIMIT ?)",
                (older_than, limit - removed),
            ).rowcount
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return removed


def reclaim_step(conn: sqlite3.Connection, *, limit: int) -> int:
    """Hand up to ``limit`` free pages beyond the reserve back to the file system.

    The reserve (a quarter of the pages in use, at least 64) stays on the free list for
    the next hours of traffic, so a steady file neither grows nor shrinks back and forth.
    Returns the pages released; a file without incremental vacuum releases none.
    """
    figures = storage_figures(conn)
    in_use = figures.pages - figures.free
    excess = figures.free - max(_MIN_RESERVE_PAGES, in_use // 4)
    released = 0
    if excess > 0 and conn.execute("PRAGMA auto_vacuum").fetchone()[0] == _INCREMENTAL:
        step = min(excess, limit)
        # executescript steps the pragma to completion (execute() frees a single page).
        conn.executescript(f"PRAGMA incremental_vacuum({int(step)});")
        released = figures.pages - storage_figures(conn).pages
    return released


PURGE_CAPTURED_SQL = (
    "DELETE FROM captured_sessions WHERE session_id IN (SELECT session_id "
    "FROM captured_sessions WHERE updated_at < ? LIMIT ?)"
)
"""One bounded retention step: capture records untouched for the whole window (every
memory token of theirs expired long before: retention is never shorter than a token)."""


def purge_captured(conn: sqlite3.Connection, *, older_than: float, limit: int) -> int:
    """Delete at most ``limit`` capture records untouched since ``older_than`` (one transaction)."""
    with transaction(conn):
        return conn.execute(PURGE_CAPTURED_SQL, (older_than, limit)).rowcount
