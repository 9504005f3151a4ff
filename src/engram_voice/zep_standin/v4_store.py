"""The stand-in's ``/api/v4`` data: users, threads, messages and idempotency keys in SQLite.

It shares the v2 store's database file (own tables, own connection). Every write runs in
one transaction together with its ``Idempotency-Key`` record (see :mod:`.v4_idempotency`),
so a batch and the answer replayed for its key are stored together or not at all.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engram_voice.zep_standin.store import ZepRuleError
from engram_voice.zep_standin.v4_idempotency import IdempotencyKeyReusedError, IdempotencyKeys
from engram_voice.zep_standin.v4_rules import AddMessageIn

__all__ = ["Answer", "V4Store"]

Answer = tuple[int, dict[str, Any], bool]
"""An answer to a write: status, body, and whether it was replayed for a repeated key."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS v4_users (
    uuid TEXT PRIMARY KEY, user_id TEXT UNIQUE, graph_uuid TEXT NOT NULL,
    body TEXT NOT NULL, created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS v4_threads (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT NOT NULL UNIQUE,
    user_uuid TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS v4_threads_user ON v4_threads(user_uuid, seq);
CREATE TABLE IF NOT EXISTS v4_messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, uuid TEXT NOT NULL UNIQUE,
    thread_uuid TEXT NOT NULL, user_uuid TEXT NOT NULL, role TEXT NOT NULL, name TEXT,
    content TEXT NOT NULL, metadata TEXT, reference_time TEXT, created_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS v4_messages_thread ON v4_messages(thread_uuid, seq);
CREATE INDEX IF NOT EXISTS v4_messages_user ON v4_messages(user_uuid, seq);
"""
_USER_FIELDS = (
    "user_id",
    "email",
    "first_name",
    "last_name",
    "metadata",
    "time_zone",
    "disable_default_ontology",
)
_MESSAGE_COLUMNS = (
    "uuid, thread_uuid, role, name, content, metadata, reference_time, created_at, user_uuid"
)


def now() -> str:
    """Return the current UTC time as Zep writes it (RFC 3339, microseconds)."""
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        + f".{time.time_ns() // 1000 % 1_000_000:06d}Z"
    )


def _not_found(kind: str, value: str) -> ZepRuleError:
    return ZepRuleError(404, f"{kind} {value} not found", code="not_found")


class V4Store:
    """Users, threads and messages addressed by server-generated UUIDs."""

    def __init__(self, path: str | Path, *, idempotency_ttl_s: float = 86_400) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self.keys = IdempotencyKeys(self._conn, ttl_s=idempotency_ttl_s)

    def close(self) -> None:
        """Close the database."""
        self._conn.close()

    def write(
        self, key: str | None, fingerprint: str, action: Callable[[], tuple[int, dict[str, Any]]]
    ) -> Answer:
        """Run ``action`` and record its answer under ``key``, in one transaction.

        A key already recorded with the same fingerprint returns the recorded answer and
        runs nothing; with another fingerprint it is refused (see :mod:`.v4_idempotency`).
        A rule broken inside ``action`` rolls everything back and records nothing.
        """
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                recorded = self.keys.find(key, fingerprint)
                if recorded is not None:
                    self._conn.execute("ROLLBACK")
                    return (*recorded, True)
                status, body = action()
                self.keys.record(key, fingerprint, status, body)
            except IdempotencyKeyReusedError:
                self._conn.execute("ROLLBACK")
                raise ZepRuleError(
                    422,
                    "this Idempotency-Key was used for a different request",
                    code="idempotency_key_reused",
                    param="Idempotency-Key",
                ) from None
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return status, body, False

    # -- users ---------------------------------------------------------------------------
    def create_user(self, fields: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Insert a user with a new UUID (inside :meth:`write`); 409 for a taken user_id."""
        user_uuid, graph_uuid, created = str(uuid.uuid4()), str(uuid.uuid4()), now()
        body = {name: fields.get(name) for name in _USER_FIELDS}
        try:
            self._conn.execute(
                "INSERT INTO v4_users(uuid, user_id, graph_uuid, body, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (user_uuid, fields.get("user_id"), graph_uuid, json.dumps(body), created),
            )
        except sqlite3.IntegrityError:
            raise ZepRuleError(
                409,
                f"a user with user_id {fields.get('user_id')!r} already exists",
                code="already_exists",
                param="user_id",
            ) from None
        return 201, {**body, "uuid": user_uuid, "graph_uuid": graph_uuid, "created_at": created}

    def _user_row(self, where: str, value: str) -> dict[str, Any] | None:
        row = self._conn.execute(
            f"SELECT uuid, graph_uuid, body, created_at FROM v4_users WHERE {where}=?",  # noqa: S608
            (value,),
        ).fetchone()
        if row is None:
            return None
        return {**json.loads(row[2]), "uuid": row[0], "graph_uuid": row[1], "created_at": row[3]}

    def get_user(self, user_uuid: str) -> dict[str, Any]:
        """Return a user by UUID or raise 404."""
        user = self._user_row("uuid", user_uuid)
        if user is None:
            raise _not_found("user", user_uuid)
        return user

    def lookup_user(self, user_id: str) -> dict[str, Any]:
        """Return the user with this developer ``user_id`` or raise 404."""
        user = self._user_row("user_id", user_id)
        if user is None:
            raise _not_found("user with user_id", user_id)
        return user

    def delete_user(self, user_uuid: str) -> tuple[int, dict[str, Any]]:
        """Delete a user with its threads and messages (inside :meth:`write`); 404 if unknown."""
        self.get_user(user_uuid)
        for table in ("v4_messages", "v4_threads"):
            self._conn.execute(f"DELETE FROM {table} WHERE user_uuid=?", (user_uuid,))  # noqa: S608
        self._conn.execute("DELETE FROM v4_users WHERE uuid=?", (user_uuid,))
        return 202, {"task": _task("user.delete")}

    # -- threads -------------------------------------------------------------------------
    def create_thread(self, user_uuid: str) -> tuple[int, dict[str, Any]]:
        """Insert a thread with a new UUID for a known user (inside :meth:`write`)."""
        user = self.get_user(user_uuid)
        thread_uuid, created = str(uuid.uuid4()), now()
        self._conn.execute(
            "INSERT INTO v4_threads(uuid, user_uuid, created_at, updated_at) VALUES (?, ?, ?, ?)",
            (thread_uuid, user_uuid, created, created),
        )
        return 201, _thread((thread_uuid, user_uuid, created, created), user["graph_uuid"])

    def get_thread(self, thread_uuid: str) -> dict[str, Any]:
        """Return a thread by UUID or raise 404."""
        row = self._conn.execute(
            "SELECT t.uuid, t.user_uuid, t.created_at, t.updated_at, u.graph_uuid "
            "FROM v4_threads t JOIN v4_users u ON u.uuid = t.user_uuid WHERE t.uuid=?",
            (thread_uuid,),
        ).fetchone()
        if row is None:
            raise _not_found("thread", thread_uuid)
        return _thread(row[:4], row[4])

    def list_threads(
        self, user_uuid: str | None, *, after: int, limit: int, descending: bool
    ) -> tuple[list[dict[str, Any]], int | None, int]:
        """Return a page of threads (oldest first unless ``descending``), next cursor, total."""
        where, args = ("WHERE t.user_uuid=?", [user_uuid]) if user_uuid else ("", [])
        total = self._conn.execute(
            f"SELECT COUNT(*) FROM v4_threads t {where}",  # noqa: S608
            args,
        ).fetchone()[0]
        rows = self._conn.execute(
            "SELECT t.seq, t.uuid, t.user_uuid, t.created_at, t.updated_at, u.graph_uuid "  # noqa: S608
            f"FROM v4_threads t JOIN v4_users u ON u.uuid = t.user_uuid {where} "
            f"ORDER BY t.seq {'DESC' if descending else 'ASC'} LIMIT ? OFFSET ?",
            [*args, limit + 1, after],
        ).fetchall()
        more = len(rows) > limit
        items = [_thread(row[1:5], row[5]) for row in rows[:limit]]
        return items, (after + limit if more else None), total

    def delete_thread(self, thread_uuid: str) -> tuple[int, dict[str, Any]]:
        """Delete a thread and its messages (inside :meth:`write`); 404 if unknown."""
        self.get_thread(thread_uuid)
        self._conn.execute("DELETE FROM v4_messages WHERE thread_uuid=?", (thread_uuid,))
        self._conn.execute("DELETE FROM v4_threads WHERE uuid=?", (thread_uuid,))
        return 202, {"task": _task("thread.delete")}

    # -- messages ------------------------------------------------------------------------
    def add_messages(
        self, thread_uuid: str, messages: list[AddMessageIn]
    ) -> tuple[int, dict[str, Any]]:
        """Append checked messages to a thread (inside :meth:`write`); 404 for an unknown one."""
        thread = self.get_thread(thread_uuid)
        created = now()
        rows = [
            (
                str(uuid.uuid4()),
                thread_uuid,
                message.role or "",
                message.name,
                message.content or "",
                json.dumps(message.metadata or {}),
                message.reference_time or created,
                created,
                thread["user_uuid"],
            )
            for message in messages
        ]
        self._conn.executemany(
            f"INSERT INTO v4_messages({_MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
            rows,
        )
        self._conn.execute(
            "UPDATE v4_threads SET updated_at=? WHERE uuid=?", (created, thread_uuid)
        )
        return 202, {
            "messages": [_message(row) for row in rows],
            "task": _task("thread.add_messages"),
        }

    def list_messages(
        self, thread_uuid: str, *, after: int, limit: int, descending: bool
    ) -> tuple[list[dict[str, Any]], int | None, int]:
        """Return a page of a thread's messages in order, the next cursor and the total."""
        self.get_thread(thread_uuid)
        total = self._conn.execute(
            "SELECT COUNT(*) FROM v4_messages WHERE thread_uuid=?", (thread_uuid,)
        ).fetchone()[0]
        rows = self._conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM v4_messages WHERE thread_uuid=? "  # noqa: S608
            f"ORDER BY seq {'DESC' if descending else 'ASC'} LIMIT ? OFFSET ?",
            (thread_uuid, limit + 1, after),
        ).fetchall()
        more = len(rows) > limit
        return [_message(row) for row in rows[:limit]], (after + limit if more else None), total

    def user_messages(
        self, user_uuid: str, *, roles: frozenset[str], last: int
    ) -> list[dict[str, Any]]:
        """Return the user's newest ``last`` messages with these roles, oldest first."""
        marks = ",".join("?" * len(roles))
        rows = self._conn.execute(
            f"SELECT {_MESSAGE_COLUMNS} FROM v4_messages "  # noqa: S608
            f"WHERE user_uuid=? AND role IN ({marks}) ORDER BY seq DESC LIMIT ?",
            (user_uuid, *sorted(roles), last),
        ).fetchall()
        return [_message(row) for row in reversed(rows)]

    def counts(self) -> dict[str, int]:
        """Return how many v4 users, threads, messages and idempotency keys are stored."""
        counts = {
            f"v4_{table}": self._conn.execute(f"SELECT COUNT(*) FROM v4_{table}").fetchone()[0]  # noqa: S608
            for table in ("users", "threads", "messages")
        }
        return {**counts, "v4_idempotency_keys": self.keys.count()}


def _thread(row: tuple[Any, ...], graph_uuid: str) -> dict[str, Any]:
    thread_uuid, user_uuid, created_at, updated_at = row
    return {
        "uuid": thread_uuid,
        "user_uuid": user_uuid,
        "graph_uuid": graph_uuid,
        "created_at": created_at,
        "updated_at": updated_at,
    }


def _message(row: tuple[Any, ...]) -> dict[str, Any]:
    message_uuid, thread_uuid, role, name, content, metadata, reference_time, created_at, _ = row
    return {
        "uuid": message_uuid,
        "thread_uuid": thread_uuid,
        "role": role,
        "name": name,
        "content": content,
        "metadata": json.loads(metadata or "{}"),
        "reference_time": reference_time,
        "created_at": created_at,
        "processed": True,
    }


def _task(kind: str) -> dict[str, Any]:
    stamp = now()
    return {
        "uuid": str(uuid.uuid4()),
        "type": kind,
        "status": "succeeded",
        "created_at": stamp,
        "completed_at": stamp,
        "updated_at": stamp,
    }
