"""Wire types of ``POST /realtime/sessions``."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

__all__ = [
    "MAX_BODY_BYTES",
    "AgentId",
    "AgentInfo",
    "ClientSecret",
    "ConversationId",
    "CreateSessionRequest",
    "SessionCreated",
]

MAX_BODY_BYTES = 64 * 1024
"""Largest accepted mint request body."""

AgentId = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$", description="Agent id"),
]
ConversationId = Annotated[
    str,
    msgspec.Meta(
        min_length=8,
        max_length=128,
        pattern=r"^cv_[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
        description="A conversation id returned earlier to the same user",
    ),
]


class CreateSessionRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A session with one agent, maybe continuing a conversation; unknown fields are refused."""

    agent: AgentId
    conversation_id: ConversationId | None = None


class AgentInfo(msgspec.Struct, frozen=True):
    """The agent the session talks to."""

    id: str
    name: str
    voice: str


class ClientSecret(msgspec.Struct, frozen=True):
    """The single-use ephemeral key; connect with it right away."""

    value: str
    expires_at: int


class SessionCreated(msgspec.Struct, frozen=True):
    """Everything the browser needs to connect to Azure and to post transcripts."""

    session_id: str
    conversation_id: str
    agent: AgentInfo
    client_secret: ClientSecret
    webrtc_url: str
    deployment: str
    memory: dict[str, Any] | None = None
