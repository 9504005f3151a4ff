"""Settings of recall at call start (``MEMORY_RECALL*``): on/off, time budget, size, cache."""

from __future__ import annotations

import msgspec

from engram_voice.envreader import EnvReader

__all__ = ["RecallSettings"]


class RecallSettings(msgspec.Struct, frozen=True):
    """How what Zep knows about a user reaches the agent's session at call start."""

    enabled: bool = True
    """``MEMORY_RECALL``: recall on (agents may still opt out in the catalog)."""
    budget_ms: int = 300
    """``MEMORY_RECALL_BUDGET_MS``: the longest a cold read may delay a mint or a call setup."""
    max_chars: int = 2000
    """``MEMORY_RECALL_MAX_CHARS``: the most characters of memory put into one session."""
    cache_seconds: float = 600.0
    """``MEMORY_RECALL_CACHE_SECONDS``: how long a read is served from the per-user cache."""
    cache_users: int = 10_000
    """``MEMORY_RECALL_CACHE_USERS``: users kept in the cache (least recently used leave)."""

    @classmethod
    def from_env(cls, reader: EnvReader) -> RecallSettings:
        """Read the recall settings (``MEMORY_RECALL*``)."""
        return cls(
            enabled=reader.flag("MEMORY_RECALL", default=True),
            budget_ms=reader.integer("MEMORY_RECALL_BUDGET_MS", 300, minimum=0, maximum=5000),
            max_chars=reader.integer("MEMORY_RECALL_MAX_CHARS", 2000, minimum=200, maximum=20_000),
            cache_seconds=reader.number(
                "MEMORY_RECALL_CACHE_SECONDS", 600.0, minimum=1, maximum=86_400
            ),
            cache_users=reader.integer(
                "MEMORY_RECALL_CACHE_USERS", 10_000, minimum=10, maximum=1_000_000
            ),
        )
