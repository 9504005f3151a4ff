"""What the Zep v4 sink sends Zep, derived from our data alone (no I/O, no state).

- the ``user_id`` Zep gets for our user id (:func:`zep_user_id`, at most 500 characters);
- the deterministic ``Idempotency-Key`` of each call that writes
  (:func:`idempotency_key`, :func:`batch_key`), so that Zep answers a repeated call as it
  answered the first;
- one message as the SDK's ``AddMessage`` mapping (:func:`add_message`);
- Zep's error code and message from an error body (:func:`error_detail`).

:mod:`engram_voice.memory.zep_cloud_sink` does the delivery with these.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Sequence
from typing import Any

from engram_voice.memory.sink import SinkMessage, SinkSession

__all__ = ["add_message", "batch_key", "error_detail", "idempotency_key", "zep_user_id"]

_NAMESPACE = uuid.UUID("0b9e7c8e-3f59-5a51-9d0c-4c2f1f6a7e21")
_MAX_USER_ID = 500
_HASHED = "sha256:"


def zep_user_id(user_id: str) -> str:
    """Return the ``user_id`` we give Zep v4 for our user id (injective, ≤ 500 characters).

    Zep v4 takes at most 500 characters; our ids may have 512. Ids that fit (and do not
    start with ``sha256:``) stay as they are; the others become ``sha256:<hex>``.
    """
    if len(user_id) <= _MAX_USER_ID and not user_id.startswith(_HASHED):
        return user_id
    return _HASHED + hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()


def idempotency_key(*parts: object) -> str:
    """Return the deterministic ``Idempotency-Key`` (a UUIDv5) of ``parts``."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(str(p) for p in parts)))


def batch_key(thread: str, session_id: str, messages: Sequence[SinkMessage]) -> str:
    """Return the deterministic ``Idempotency-Key`` of a batch (non-empty) for a thread.

    Derived from the thread, the session, the first and last (turn id, part), the count
    and a digest of the contents: the same batch always gets the same key, and a batch
    cut differently (another content limit) never reuses one.
    """
    first, last = messages[0], messages[-1]
    digest = hashlib.sha256()
    for message in messages:
        digest.update(message.content.encode("utf-8", "surrogatepass") + b"\x1f")
    return idempotency_key(
        "batch",
        thread,
        session_id,
        first.message_id,
        first.part,
        last.message_id,
        last.part,
        len(messages),
        digest.hexdigest(),
    )


def _reference_time(message: SinkMessage) -> str:
    if message.at:
        return message.at
    return dt.datetime.fromtimestamp(message.accepted_at, dt.UTC).isoformat()


def add_message(session: SinkSession, message: SinkMessage) -> dict[str, Any]:
    """Return one ``AddMessage`` as the plain mapping the SDK serialises (its fields only).

    A mapping, not the pydantic model: the SDK encodes it in about 60% of the CPU time,
    and delivery spends most of its CPU there.
    """
    metadata: dict[str, Any] = {
        "message_id": message.message_id,
        "session_id": session.session_id,
        "agent": session.agent,
    }
    if message.parts > 1:
        metadata.update(part=message.part + 1, parts=message.parts)
    return {
        "content": message.content,
        "role": message.role,
        "name": message.name,
        "reference_time": _reference_time(message),
        "metadata": metadata,
    }


def error_detail(body: object) -> tuple[str | None, str | None]:
    """Return Zep's error code and message from an error body (model or mapping)."""
    error = getattr(body, "error", None)
    if error is None and isinstance(body, dict):
        error = body.get("error")
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
    else:
        code, message = getattr(error, "code", None), getattr(error, "message", None)
    return (
        code if isinstance(code, str) and code else None,
        message if isinstance(message, str) and message else None,
    )
