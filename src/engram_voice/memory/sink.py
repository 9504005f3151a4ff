"""The memory sink seam: where delivered turns go (Zep today), and how it may fail.

A sink raises :class:`SinkUnavailableError` for failures worth retrying (transport
errors, timeouts, 408, 429, 5xx) and :class:`SinkRejectedError` for answers that will
not change by retrying (other 4xx). Nothing else is retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

import msgspec

__all__ = [
    "CREDENTIAL_REFUSED",
    "MemorySink",
    "SinkError",
    "SinkMessage",
    "SinkRejectedError",
    "SinkUnavailableError",
]


class SinkError(Exception):
    """A delivery call failed; ``reason`` is safe to log and store (no text, no secrets)."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


CREDENTIAL_REFUSED = frozenset({401, 403})
"""Sink statuses meaning "your API key is refused": a fault of every batch alike, so the
turns wait (durable backoff, circuit) instead of being retried inline or dead-lettered."""


class SinkUnavailableError(SinkError):
    """Transient: the sink is down, slow, throttling or failing; retry later."""

    def __init__(
        self, reason: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(reason, status=status)
        self.retry_after = retry_after


class SinkRejectedError(SinkError):
    """Permanent: the sink refused the request itself; retrying the same call cannot help."""


class SinkMessage(msgspec.Struct, frozen=True):
    """One message as the sink receives it (a turn, or one part of a long turn)."""

    uuid: str
    role_type: Literal["user", "assistant"]
    role: str
    content: str
    metadata: dict[str, Any]


class MemorySink(Protocol):
    """Long-term memory that accepts ordered messages for a user's session."""

    kind: str

    async def ensure_session(self, *, user_id: str, session_id: str, agent: str) -> None:
        """Make sure the user and the session exist (creating them when missing)."""

    async def add_messages(self, session_id: str, messages: Sequence[SinkMessage]) -> None:
        """Append messages to the session, in order (at most the sink's batch limit)."""

    async def message_exists(self, session_id: str, uuid: str) -> bool:
        """Tell whether a message with this uuid is already stored in the session."""

    def forget_session(self, session_id: str) -> None:
        """Drop any cached knowledge that the session exists."""

    def describe(self) -> dict[str, Any]:
        """Describe the sink for ``/status`` (never a secret)."""

    async def aclose(self) -> None:
        """Close the sink's connections."""
