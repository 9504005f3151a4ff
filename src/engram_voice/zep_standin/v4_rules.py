"""Zep v4's request rules, as the stand-in enforces them on the ``/api/v4`` subset.

Sources: the ``zep-cloud`` 4.0.1 SDK's types (``AddMessage``, ``RoleType``, the error
body) and the contract notes (``zep-v4-sideband-queues.md`` section 1.2 and 1.4): users,
threads and messages are addressed by server-generated UUIDs (anything else in a path is
400 ``invalid_identifier``); an ``add_messages`` call carries 1-30 messages; a message has
a role in :data:`V4_ROLES`, content within the limit (4,096 characters by default) and no
client ``uuid``; its metadata has at most 10 keys whose values are scalars or arrays of
scalars; ``reference_time`` is an RFC 3339 time.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import msgspec

from engram_voice.zep_standin.store import ZepRuleError

__all__ = [
    "MAX_METADATA_KEYS",
    "MAX_USER_ID_CHARS",
    "V4_MAX_MESSAGES_PER_CALL",
    "V4_ROLES",
    "AddMessageIn",
    "AddMessagesIn",
    "LookupIn",
    "ThreadIn",
    "UserIn",
    "check_messages",
    "check_uuid",
]

V4_MAX_MESSAGES_PER_CALL = 30
V4_ROLES = frozenset({"user", "assistant", "system", "function", "tool"})
MAX_METADATA_KEYS = 10
MAX_USER_ID_CHARS = 500
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_SCALARS = (str, int, float, bool)


class UserIn(msgspec.Struct, frozen=True):
    """``POST /users`` (unknown fields tolerated, like Zep)."""

    user_id: str | None = None
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    metadata: dict[str, Any] | None = None
    time_zone: str | None = None
    disable_default_ontology: bool | None = None
    content_policy: dict[str, Any] | None = None


class LookupIn(msgspec.Struct, frozen=True):
    """``POST /users/lookup``: exactly one developer id."""

    user_id: str | None = None
    thread_id: str | None = None
    graph_id: str | None = None


class ThreadIn(msgspec.Struct, frozen=True):
    """``POST /threads``: the owner only; the server chooses the thread's UUID."""

    user_uuid: str | None = None


class AddMessageIn(msgspec.Struct, frozen=True):
    """One message of ``add_messages`` as the SDK sends it."""

    content: str | None = None
    role: str | None = None
    name: str | None = None
    metadata: dict[str, Any] | None = None
    reference_time: str | None = None
    uuid: str | None = None


class AddMessagesIn(msgspec.Struct, frozen=True):
    """``POST /threads/{uuid}/messages``."""

    messages: list[AddMessageIn] | None = None
    ignore_roles: list[str] | None = None
    return_context: bool | None = None
    strict_ontology: bool | None = None


def check_uuid(value: str | None, param: str) -> str:
    """Return ``value`` as a lower-case UUID; 400 ``invalid_identifier`` when it is not one."""
    if value is None or not _UUID.match(value):
        raise ZepRuleError(
            400,
            f"{param} must be a UUID that Zep generated (v4 addresses by uuid)",
            code="invalid_identifier",
            param=param,
        )
    return value.lower()


def _bad(message: str, param: str) -> ZepRuleError:
    return ZepRuleError(400, message, code="invalid_request", param=param)


def _check_metadata(metadata: dict[str, Any] | None, param: str) -> None:
    if metadata is None:
        return
    if len(metadata) > MAX_METADATA_KEYS:
        raise _bad(f"{param} has {len(metadata)} keys; at most {MAX_METADATA_KEYS}", param)
    for key, value in metadata.items():
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, _SCALARS) for item in items):
            raise _bad(
                f"{param}.{key} must be a string, number, boolean or an array of them",
                f"{param}.{key}",
            )


def _check_time(value: str | None, param: str) -> None:
    if value is None:
        return
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise _bad(f"{param} must be an RFC 3339 time", param) from None


def check_messages(messages: list[AddMessageIn] | None, *, max_content_chars: int) -> None:
    """Raise 400 for the first broken rule of an ``add_messages`` batch (all or nothing)."""
    if not messages:
        raise _bad("messages must not be empty", "messages")
    if len(messages) > V4_MAX_MESSAGES_PER_CALL:
        raise _bad(
            f"{len(messages)} messages; at most {V4_MAX_MESSAGES_PER_CALL} per call", "messages"
        )
    for index, message in enumerate(messages):
        at = f"messages[{index}]"
        if message.role not in V4_ROLES:
            raise _bad(f"{at}.role must be one of {sorted(V4_ROLES)}", f"{at}.role")
        if not message.content:
            raise _bad(f"{at}.content is required", f"{at}.content")
        if len(message.content) > max_content_chars:
            raise _bad(
                f"A thread message's content must be <= {max_content_chars} characters",
                f"{at}.content",
            )
        if "\x00" in message.content or "\x00" in (message.name or ""):
            raise _bad(f"{at}: invalid byte sequence for encoding UTF8: 0x00", at)
        if message.uuid is not None:
            raise _bad(f"{at}.uuid is reserved: message ids are server-assigned", f"{at}.uuid")
        _check_metadata(message.metadata, f"{at}.metadata")
        _check_time(message.reference_time, f"{at}.reference_time")
