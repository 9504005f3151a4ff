"""The recall seam: a :class:`MemoryReader` returns Zep's context about one user.

Two readers implement it: :class:`~engram_voice.memory.recall.zep_v4.ZepV4Reader` (Zep
Cloud, ``zep-cloud`` 4.x: the context block of the user's latest thread) and
:class:`~engram_voice.memory.recall.zep_v2.ZepV2Reader` (self-hosted v2 servers,
``zep-python``: the memory context of the user's latest session). A reader answers None
when Zep knows nothing about the user (no user, no thread, empty context) and raises
:class:`RecallError` when Zep cannot answer (down, slow, refusing the key): the breaker
counts those. Vendor rules stay in each reader; neither returns raw transcript messages.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["MemoryReader", "RecallError"]


class RecallError(Exception):
    """Zep could not answer a recall; ``reason`` is short and safe to log (no text, no key)."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class MemoryReader(Protocol):
    """Reads what long-term memory knows about a user, for the start of a call."""

    kind: str

    async def read(self, user_id: str) -> str | None:
        """Return Zep's context about ``user_id`` (None: it knows nothing); raise RecallError."""
        ...

    def describe(self) -> dict[str, Any]:
        """Describe the reader for ``/status`` (never a secret)."""
        ...

    async def aclose(self) -> None:
        """Close the reader's connections."""
        ...
