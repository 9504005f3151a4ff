"""The stand-in's SQLite persistence, enforcing Zep's rules on users, sessions, messages.

Rules (as Zep applies them): a user id is created once; a session is created once and
only for a known user; a memory call carries 1-30 messages, each with a ``role_type``
and content within the size limit and without U+0000 (Zep keeps messages in PostgreSQL,
whose text type cannot hold it); a message ``uuid`` that already exists (or repeats
within the call) rejects the whole call. Every write is one transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["MAX_MESSAGES_PER_CALL", "ROLE_TYPES", "StandinStore", "ZepRuleError"]

MAX_MESSAGES_PER_CALL = 30
ROLE_TYPES = frozenset({"norole", "system", "assistant", "user", "function", "tool"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY, body TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY, user_id TEXT, metadata TEXT, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    uuid TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    role_type TEXT NOT NULL,
    role TEXT,
    content TEXT NOT NULL,
    metadata TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_session ON messages(session_id, seq);
"""


class ZepRuleError(Exception):
    """A request broke one of Zep's rules; ``status`` is what Zep answers.

    ``code`` and ``param`` fill the v4 error body (``{"error": {code, message, param}}``);
    the v2 body carries only the message.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        retry_after: int | None = None,
        retry_after_ms: int | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.retry_after_ms = retry_after_ms
        self.code = code
        self.param = param


class MessageIn(msgspec.Struct, frozen=True):
    """A message as the SDK sends it (unknown fields tolerated, like Zep)."""

    content: str | None = None
    role_type: str | None = None
    role: str | None = None
    uuid: str | None = None
    metadata: dict[str, Any] | None = None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class StandinStore:
    """Users, sessions and messages in one SQLite file, guarded by one lock."""

    def __init__(self, path: str | Path, *, max_content_chars: int = 2500) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._max_content = max_content_chars

    def close(self) -> None:
        """Close the database."""
        self._conn.close()

    def add_user(self, user_id: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """Create a user; 400 when the id is missing or already taken."""
        if not user_id:
            raise ZepRuleError(400, "user_id is required")
        created = _now()
        with self._lock:
            try:
                self._conn.execute(
                    "INSERT INTO users(user_id, body, created_at) VALUES (?, ?, ?)",
                    (user_id, json.dumps(body), created),
                )
            except sqlite3.IntegrityError:
                raise ZepRuleError(400, f"user {user_id} already exists") from None
        return {**body, "user_id": user_id, "created_at": created, "uuid": str(uuid.uuid4())}

    def get_user(self, user_id: str) -> dict[str, Any]:
        """Return a user or raise 404."""
        row = self._conn.execute(
            "SELECT body, created_at FROM users WHERE user_id=?", (user_id,)
        ).fetchone()
        if row is None:
            raise ZepRuleError(404, f"user {user_id} not found")
        return {**json.loads(row[0]), "user_id": user_id, "created_at": row[1]}

    def add_session(
        self, session_id: str | None, user_id: str | None, metadata: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Create a session; 400 for a missing id, an unknown user or a duplicate."""
        if not session_id:
            raise ZepRuleError(400, "session_id is required")
        created = _now()
        with self._lock:
            if user_id is not None and (
                self._conn.execute("SELECT 1 FROM users WHERE user_id=?", (user_id,)).fetchone()
                is None
            ):
                raise ZepRuleError(400, f"user {user_id} does not exist")
            try:
                self._conn.execute(
                    "INSERT INTO sessions(session_id, user_id, metadata, created_at) "
                    "VALUES (?, ?, ?, ?)",
                    (session_id, user_id, json.dumps(metadata or {}), created),
                )
            except sqlite3.IntegrityError:
                raise ZepRuleError(400, f"session {session_id} already exists") from None
        return {
            "session_id": session_id,
            "user_id": user_id,
            "metadata": metadata or {},
            "created_at": created,
        }

    def get_session(self, session_id: str) -> dict[str, Any]:
        """Return a session or raise 404."""
        row = self._conn.execute(
            "SELECT user_id, metadata, created_at FROM sessions WHERE session_id=?",
            (session_id,),
        ).fetchone()
        if row is None:
            raise ZepRuleError(404, f"session {session_id} not found")
        return {
            "session_id": session_id,
            "user_id": row[0],
            "metadata": json.loads(row[1] or "{}"),
            "created_at": row[2],
        }

    def add_messages(self, session_id: str, messages: list[MessageIn]) -> int:
        """Append messages atomically after checking every rule; return how many."""
        self.get_session(session_id)
        if not messages:
            raise ZepRuleError(400, "messages must not be empty")
        if len(messages) > MAX_MESSAGES_PER_CALL:
            raise ZepRuleError(400, f"at most {MAX_MESSAGES_PER_CALL} messages per call")
        rows = []
        seen: set[str] = set()
        created = _now()
        for index, message in enumerate(messages):
            if message.role_type not in ROLE_TYPES:
                raise ZepRuleError(
                    400, f"messages[{index}].role_type is required and must be valid"
                )
            if message.content is None or len(message.content) > self._max_content:
                raise ZepRuleError(
                    400, f"messages[{index}].content is missing or over {self._max_content} chars"
                )
            if "\x00" in message.content or "\x00" in (message.role or ""):
                raise ZepRuleError(
                    400, f"messages[{index}]: invalid byte sequence for encoding UTF8: 0x00"
                )
            message_uuid = message.uuid or str(uuid.uuid4())
            if message_uuid in seen:
                raise ZepRuleError(400, f"duplicate message uuid {message_uuid}")
            seen.add(message_uuid)
            rows.append(
                (
                    message_uuid,
                    session_id,
                    message.role_type,
                    message.role,
                    message.content,
                    json.dumps(message.metadata or {}),
                    created,
                )
            )
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.executemany(
                    "INSERT INTO messages(uuid, session_id, role_type, role, content, metadata, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            except sqlite3.IntegrityError:
                self._conn.execute("ROLLBACK")
                raise ZepRuleError(400, "message uuid already exists") from None
            self._conn.execute("COMMIT")
        return len(rows)

    def messages(self, session_id: str, lastn: int | None = None) -> list[dict[str, Any]]:
        """Return the session's messages in order (the last ``lastn`` when given)."""
        self.get_session(session_id)
        rows = self._conn.execute(
            "SELECT uuid, role_type, role, content, metadata, created_at FROM messages "
            "WHERE session_id=? ORDER BY seq",
            (session_id,),
        ).fetchall()
        if lastn:
            rows = rows[-lastn:]
        return [_message(row) for row in rows]

    def message(self, session_id: str, message_uuid: str) -> dict[str, Any]:
        """Return one message of the session or raise 404."""
        row = self._conn.execute(
            "SELECT uuid, role_type, role, content, metadata, created_at FROM messages "
            "WHERE session_id=? AND uuid=?",
            (session_id, message_uuid),
        ).fetchone()
        if row is None:
            raise ZepRuleError(404, f"message {message_uuid} not found")
        return _message(row)

    def counts(self) -> dict[str, int]:
        """Return how many users, sessions and messages are stored."""
        return {
            table: self._conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608
            for table in ("users", "sessions", "messages")
        }


def _message(row: tuple[Any, ...]) -> dict[str, Any]:
    message_uuid, role_type, role, content, metadata, created_at = row
    return {
        "uuid": message_uuid,
        "role_type": role_type,
        "role": role,
        "content": content,
        "metadata": json.loads(metadata or "{}"),
        "created_at": created_at,
        "token_count": 0,
    }
