"""Wire types of ``POST /realtime/calls``: the browser's offer in, the answer and grant out."""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from engram_voice.errors import ValidationError
from engram_voice.realtime.schemas import AgentId, AgentInfo, ConversationId

__all__ = [
    "MAX_CALL_BODY_BYTES",
    "MAX_SDP_CHARS",
    "CallCreated",
    "CreateCallRequest",
    "check_offer",
]

MAX_SDP_CHARS = 65536
"""Longest accepted SDP offer (a browser's audio offer with gathered ICE is 2-6 KB)."""
MAX_CALL_BODY_BYTES = 4 * MAX_SDP_CHARS
"""Largest accepted body: the longest offer with every line break JSON-escaped, and more."""

SdpOffer = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_SDP_CHARS,
        pattern=r"^v=0",
        description="The browser's complete SDP offer (ICE gathered, no trickle), raw text",
    ),
]
_MEDIA_LINE = re.compile(r"[\r\n]m=")


class CreateCallRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A call with one agent from this SDP offer; unknown fields are refused."""

    agent: AgentId
    sdp_offer: SdpOffer
    conversation_id: ConversationId | None = None


def check_offer(_: bytes, request: CreateCallRequest) -> None:
    """Refuse an offer without a media section before any upstream work is spent on it."""
    if not _MEDIA_LINE.search(request.sdp_offer):
        message = "is not an SDP offer with a media section (no m= line)"
        raise ValidationError(
            f"Invalid request: sdp_offer: {message}",
            extra={"errors": [{"field": "sdp_offer", "message": message}]},
        )


class CallCreated(msgspec.Struct, frozen=True):
    """The answer to apply, the ids to keep, and the memory grant for the transcript."""

    call_id: str
    session_id: str
    conversation_id: str
    agent: AgentInfo
    upstream: str
    sdp_answer: str
    expires_at: int
    memory: dict[str, Any] | None = None
