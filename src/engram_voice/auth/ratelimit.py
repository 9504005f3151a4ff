"""Per-user rate limit on minting realtime credentials (``MINT_RATE_LIMIT``).

A moving window from the ``limits`` library, in process memory: with several replicas
each one enforces the limit on its own, so the effective limit is per replica.
"""

from __future__ import annotations

import math
import time

import structlog
from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from engram_voice.errors import RateLimitedError

__all__ = ["MintRateLimiter"]

_logger = structlog.get_logger("engram_voice.auth")
_NAMESPACE = "mint"


class MintRateLimiter:
    """Allows each user a bounded number of mints per window; ``None`` turns it off."""

    def __init__(self, limit: str | None, *, storage: MemoryStorage | None = None) -> None:
        self._items: list[RateLimitItem] = parse_many(limit) if limit else []
        self._limiter = MovingWindowRateLimiter(storage or MemoryStorage())

    @property
    def enabled(self) -> bool:
        """Return True when a limit is configured."""
        return bool(self._items)

    async def check(self, user_id: str) -> None:
        """Count one mint for ``user_id`` or raise RateLimitedError saying when to retry."""
        exhausted = [
            item for item in self._items if not await self._limiter.test(item, _NAMESPACE, user_id)
        ]
        if not exhausted:
            hits = [await self._limiter.hit(item, _NAMESPACE, user_id) for item in self._items]
            if all(hits):
                return
            exhausted = [item for item, ok in zip(self._items, hits, strict=True) if not ok]
        retry_after = max([await self._retry_after(item, user_id) for item in exhausted])
        _logger.info("auth.mint_rate_limited", user_id=user_id, retry_after=retry_after)
        raise RateLimitedError(
            f"Too many sessions started: the limit is {exhausted[0]}; "
            f"try again in {retry_after} s.",
            retry_after=retry_after,
        )

    async def _retry_after(self, item: RateLimitItem, user_id: str) -> int:
        """Return whole seconds until the oldest counted mint leaves the window (at least 1)."""
        stats = await self._limiter.get_window_stats(item, _NAMESPACE, user_id)
        # the limits library keeps its own wall-clock timestamps, so compare with time.time()
        return max(1, math.ceil(stats.reset_time - time.time()))
