"""``Idempotency-Key`` on the stand-in's v4 writes: what it replays and what it refuses.

What is known (contract notes ``zep-v4-sideband-queues.md`` section 1.2, from the
``zep-cloud`` 4.0.1 source): every v4 write sends an ``Idempotency-Key`` header (the
caller's ``idempotency_key=`` or a fresh ``uuid4()`` per call), and the SDK's own retries
resend the same key. How Zep's server treats the key (window, replay status, a different
body) is recorded there as **not found**. The stand-in therefore chooses, and the sink
must not rely on more than "same key + same body is applied once":

- **Same key, same request** (method, path and canonical JSON body) within the window
  (``ZEP_STANDIN_IDEMPOTENCY_TTL_S``, default 24 h): nothing is applied again; the answer
  recorded the first time (status and body, the same server UUIDs) is sent again, with
  the header ``Idempotent-Replayed: true``.
- **Same key, different request**: refused with **422** ``idempotency_key_reused`` and
  nothing stored (as the IETF ``Idempotency-Key`` header draft advises; 422 is not one of
  the statuses the SDK retries, so the caller sees it at once as an ``ApiError``).
- Only successful answers are recorded: a refused call (4xx) or an injected fault that
  happens *before* the write stores no key, so a retry with the key is a fresh attempt.
  The store-then faults record the key with the batch, then lose the answer; a retry
  with the same key gets the recorded answer and stores nothing twice.
- A call without the header is applied every time.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from typing import Any

__all__ = ["IdempotencyKeyReusedError", "IdempotencyKeys", "fingerprint"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS v4_idempotency (
    key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, status INTEGER NOT NULL,
    body TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS v4_idempotency_age ON v4_idempotency(created_at);
"""


def fingerprint(method: str, path: str, body: bytes) -> str:
    """Return a digest of the request: method, path and the body as canonical JSON."""
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = body.decode("latin-1")
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


class IdempotencyKeyReusedError(Exception):
    """The key was recorded for a different request."""


class IdempotencyKeys:
    """Recorded answers by key, on the v4 store's connection (inside its transactions)."""

    def __init__(self, conn: sqlite3.Connection, *, ttl_s: float) -> None:
        self._conn = conn
        self._ttl_s = ttl_s
        conn.executescript(_SCHEMA)

    def find(self, key: str | None, request: str) -> tuple[int, dict[str, Any]] | None:
        """Return the answer recorded for ``key`` and this request, if any.

        Raises :class:`IdempotencyKeyReusedError` when the key belongs to another request.
        """
        if key is None:
            return None
        row = self._conn.execute(
            "SELECT fingerprint, status, body FROM v4_idempotency WHERE key=? AND created_at>=?",
            (key, time.time() - self._ttl_s),
        ).fetchone()
        if row is None:
            return None
        if row[0] != request:
            raise IdempotencyKeyReusedError(key)
        return int(row[1]), json.loads(row[2])

    def record(self, key: str | None, request: str, status: int, body: dict[str, Any]) -> None:
        """Record the answer under ``key`` (replacing an expired record); drop expired ones."""
        if key is None:
            return
        stamp = time.time()
        self._conn.execute("DELETE FROM v4_idempotency WHERE created_at<?", (stamp - self._ttl_s,))
        self._conn.execute(
            "INSERT OR REPLACE INTO v4_idempotency(key, fingerprint, status, body, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (key, request, status, json.dumps(body), stamp),
        )

    def count(self) -> int:
        """Return how many keys are recorded (expired ones included until the next write)."""
        return int(self._conn.execute("SELECT COUNT(*) FROM v4_idempotency").fetchone()[0])
