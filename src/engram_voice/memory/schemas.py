"""Wire types of ``POST /memory/enrich``, with every limit declared on the type."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

from engram_voice.bodies import NO_NUL_PATTERN

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_MESSAGES",
    "MAX_TEXT_CHARS",
    "EnrichAccepted",
    "EnrichMessage",
    "EnrichRequest",
]

MAX_MESSAGES = 100
"""Most turns one request may carry."""
MAX_TEXT_CHARS = 10_000
"""Longest transcript text of one turn (the worker splits it for Zep)."""
MAX_BODY_BYTES = 256 * 1024
"""Largest accepted request body."""

SessionId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="The session_id returned by POST /realtime/sessions",
    ),
]
MessageId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="The turn's stable id (e.g. the realtime item_id); retries reuse it",
    ),
]
Text = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        pattern=NO_NUL_PATTERN,
        description="Transcript text; U+0000 is refused (the memory store cannot keep it)",
    ),
]
Token = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=4096,
        description="The memory token, for sendBeacon callers that cannot set headers",
    ),
]


class EnrichMessage(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """One transcript turn."""

    id: MessageId
    role: Literal["user", "assistant"]
    text: Text
    at: Annotated[dt.datetime, msgspec.Meta(tz=True)] | None = None


class EnrichRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Transcript turns of one session, in conversation order."""

    session_id: SessionId
    messages: Annotated[list[EnrichMessage], msgspec.Meta(min_length=1, max_length=MAX_MESSAGES)]
    token: Token | None = None


class EnrichAccepted(msgspec.Struct, frozen=True):
    """The ``202`` answer: turns newly stored and turns already stored before."""

    accepted: int
    duplicates: int
