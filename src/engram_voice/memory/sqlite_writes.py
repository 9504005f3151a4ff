"""The SQLite queue's write helpers: one transaction, state changes in chunks, group writes.

They run on the queue's writer thread with its connection (see
:mod:`engram_voice.memory.sqlite_queue`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from engram_voice.memory.queue import EnqueueBatch, EnqueueResult, SessionMismatchError

__all__ = ["describe_error", "set_state", "transaction", "write_group"]

_MAX_OWNERS = 100_000


def describe_error(exc: sqlite3.Error) -> str:
    """Return a short, secret-free reason: "database locked", "database busy", or the type."""
    text = str(exc).lower()
    if "locked" in text:
        return "database locked"
    if "busy" in text:
        return "database busy"
    return f"database error ({type(exc).__name__})"


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """Run the block in ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolling back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def set_state(
    conn: sqlite3.Connection, seqs: Sequence[int], assignments: str, params: tuple[Any, ...]
) -> int:
    """Apply ``assignments`` to the pending turns ``seqs`` (500 at a time); count changes."""
    changed = 0
    for start in range(0, len(seqs), 500):
        chunk = seqs[start : start + 500]
        marks = ",".join("?" * len(chunk))
        changed += conn.execute(
            f"UPDATE turns SET {assignments} WHERE state=0 AND seq IN ({marks})",  # noqa: S608
            (*params, *chunk),
        ).rowcount
    return changed


def _session_owner(conn: sqlite3.Connection, batch: EnqueueBatch, now: float) -> tuple[str, str]:
    conn.execute(
        "INSERT INTO sessions(session_id, user_id, agent, created_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(session_id) DO NOTHING",
        (batch.session_id, batch.user_id, batch.agent, now),
    )
    user_id, agent = conn.execute(
        "SELECT user_id, agent FROM sessions WHERE session_id=?", (batch.session_id,)
    ).fetchone()
    return user_id, agent


def _add_pending(conn: sqlite3.Connection, session_id: str, accepted: int) -> bool:
    """Count ``accepted`` new pending turns on the session; False when its row is gone."""
    sql = "UPDATE sessions SET pending=pending+? WHERE session_id=?"
    return conn.execute(sql, (accepted, session_id)).rowcount > 0


def write_group(
    conn: sqlite3.Connection,
    batches: list[EnqueueBatch],
    now: float,
    owners: dict[str, tuple[str, str]],
) -> list[EnqueueResult | SessionMismatchError]:
    """Write every batch in one transaction; a mismatched session writes nothing."""
    results: list[EnqueueResult | SessionMismatchError] = []
    checked: dict[str, tuple[str, str]] = {}
    with transaction(conn):
        for batch in batches:
            owner = owners.get(batch.session_id) or checked.get(batch.session_id)
            if owner is None:
                owner = checked[batch.session_id] = _session_owner(conn, batch, now)
            if owner != (batch.user_id, batch.agent):
                results.append(SessionMismatchError(batch.session_id))
                continue
            accepted = conn.executemany(
                "INSERT OR IGNORE INTO turns(session_id, message_id, role, text, at, accepted_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (batch.session_id, mid, role, text, at, now)
                    for mid, role, text, at in batch.turns
                ],
            ).rowcount
            if accepted and not _add_pending(conn, batch.session_id, accepted):
                # Retention removed the finished session since this process cached its
                # owner (maybe in another process): store the row again, then count.
                _session_owner(conn, batch, now)
                _add_pending(conn, batch.session_id, accepted)
            results.append(EnqueueResult(accepted=accepted, duplicates=len(batch.turns) - accepted))
    if len(owners) > _MAX_OWNERS:
        owners.clear()
    owners.update(checked)  # only after the commit: a rolled-back session row is not known
    return results
