"""Wire types of ``POST /memory/enrich`` (every limit declared on the type) and of progress."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import msgspec

from engram_voice.errors import ValidationError

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_MESSAGES",
    "MAX_TEXT_CHARS",
    "EnrichAccepted",
    "EnrichMessage",
    "EnrichRequest",
    "MemoryProgress",
    "refuse_unstorable_text",
]

MAX_MESSAGES = 100
"""Most turns one request may carry."""
MAX_TEXT_CHARS = 10_000
"""Longest transcript text of one turn (the worker splits it for Zep)."""
MAX_BODY_BYTES = 256 * 1024
"""Largest accepted request body."""
NO_NUL_PATTERN = "^[^\\u0000]*$"
"""What the schema declares for text: no U+0000 (Zep's PostgreSQL text cannot hold it)."""

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
        description="Transcript text; U+0000 is refused (the memory store cannot keep it)",
        # Declared for clients and the OpenAPI; enforced by refuse_unstorable_text, which
        # costs ~0.1 us where msgspec's regex cost ~4 us per 2.5 KB body.
        extra_json_schema={"pattern": NO_NUL_PATTERN},
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


def refuse_unstorable_text(body: bytes, request: EnrichRequest) -> None:
    r"""Refuse a turn whose text the memory store cannot keep (U+0000), naming the turn.

    A decoded U+0000 can only come from the six bytes ``\u0000`` (a raw NUL byte is not
    valid JSON), so a body without them is passed on at the cost of one byte search.
    """
    if b"\\u0000" not in body:
        return
    for index, message in enumerate(request.messages):
        if "\x00" in message.text:
            field = f"messages[{index}].text"
            reason = "must not contain U+0000 (NUL): the memory store cannot keep it"
            raise ValidationError(
                f"Invalid request: {field}: {reason}",
                extra={"errors": [{"field": field, "message": reason}]},
            )


class EnrichAccepted(msgspec.Struct, frozen=True, omit_defaults=True):
    """The ``202`` answer: turns newly stored and turns already stored before.

    For a session captured server-side nothing posted is stored: turns the server stored
    count as ``duplicates``, the others as ``not_heard`` (present only when non-zero).
    """

    accepted: int
    duplicates: int
    not_heard: int = 0


class MemoryProgress(msgspec.Struct, frozen=True):
    """The ``200`` answer of ``GET /memory/sessions/{session_id}/progress``.

    Counts of the session's turns the service holds: ``queued`` (waiting for delivery),
    ``delivered`` (in the memory store), ``dead_lettered`` (refused for good, kept for an
    operator). ``retrying`` is true while a failed delivery waits for ``next_attempt_at``
    (unix seconds; null otherwise).
    """

    session_id: str
    queued: int
    delivered: int
    dead_lettered: int
    retrying: bool
    next_attempt_at: float | None
