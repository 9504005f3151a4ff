"""The memory sink seam: where delivered turns go (Zep v4 or v2), and how it may fail.

The generic delivery code (:mod:`engram_voice.memory.delivery`) turns queued turns into
:class:`SinkMessage` parts and cuts them into batches of at most ``batch_limit``; a sink
owns every rule of its vendor (ids, dedupe, recreating what vanished) behind
:meth:`MemorySink.deliver`, which must be safe to call again with the same batch: a
redelivery after a crash, a timeout or a lost answer never stores a message twice.

A sink raises :class:`SinkUnavailableError` for failures worth retrying (transport
errors, timeouts, 408, 429, 5xx) and :class:`SinkRejectedError` for answers that will
not change by retrying (other 4xx). Nothing else is retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol

import msgspec

__all__ = [
    "CREDENTIAL_REFUSED",
    "Keepalive",
    "MemorySink",
    "SinkError",
    "SinkMessage",
    "SinkRejectedError",
    "SinkSession",
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


class SinkSession(msgspec.Struct, frozen=True):
    """Our ids of the conversation a batch belongs to."""

    session_id: str
    user_id: str
    agent: str


class SinkMessage(msgspec.Struct, frozen=True):
    """One message as a sink receives it: a whole turn, or one part of a long turn."""

    message_id: str
    """Our turn id (unique within the session)."""
    part: int
    """0-based index of this part within the turn."""
    parts: int
    role: Literal["user", "assistant"]
    name: str
    """Who spoke: ``user`` or the agent's name."""
    content: str
    at: str | None
    """When the turn was spoken (ISO 8601, as the browser or the server said), if known."""
    accepted_at: float
    """When we stored the turn (Unix seconds)."""

    @property
    def key(self) -> tuple[str, int]:
        """Return (turn id, part): what identifies the message within its session."""
        return (self.message_id, self.part)


Keepalive = Callable[[], Awaitable[None]]
"""Awaited by a sink before each extra call; raises once the worker lost the session."""


class MemorySink(Protocol):
    """Long-term memory that accepts ordered messages for a user's conversation."""

    kind: str
    batch_limit: int
    """The most messages one :meth:`deliver` call may carry."""
    max_chars: int
    """The longest content of one message (longer turns arrive as ordered parts)."""

    async def deliver(
        self, session: SinkSession, messages: Sequence[SinkMessage], keepalive: Keepalive
    ) -> int:
        """Store the messages in order, exactly once; return how many were there already.

        Creates whatever the sink needs first (user, session or thread). Calling it again
        with the same messages (after a crash, a timeout or a lost answer) stores nothing
        twice.
        """

    def describe(self) -> dict[str, Any]:
        """Describe the sink for ``/status`` (never a secret)."""

    async def aclose(self) -> None:
        """Close the sink's connections."""
