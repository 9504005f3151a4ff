"""A per-session token bucket for ``POST /memory/enrich`` (in memory, bounded)."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from engram_voice.errors import RateLimitedError

__all__ = ["SessionRateLimiter"]

_MAX_TRACKED = 100_000


class SessionRateLimiter:
    """Allows ``per_minute`` requests per session, with a burst of the same size."""

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def check(self, session_id: str) -> None:
        """Take one token for ``session_id`` or raise RateLimitedError (429)."""
        now = self._clock()
        tokens, stamp = self._buckets.pop(session_id, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - stamp) * self._rate)
        if tokens < 1.0:
            self._buckets[session_id] = (tokens, now)
            retry_after = math.ceil((1.0 - tokens) / self._rate)
            raise RateLimitedError(
                "too many transcript posts for this session; slow down",
                retry_after=retry_after,
            )
        self._buckets[session_id] = (tokens - 1.0, now)
        if len(self._buckets) > _MAX_TRACKED:
            self._buckets.popitem(last=False)
