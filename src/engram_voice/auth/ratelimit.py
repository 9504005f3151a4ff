"""Per-user rate limit on minting realtime credentials (``MINT_RATE_LIMIT``).

A moving window per user, in process memory: with several replicas each one enforces the
limit on its own, so the effective limit is per replica. The limit text is parsed by the
``limits`` library ("20/minute;100/hour"); the windows are kept here because its in-memory
async storage rescans every tracked key, one thread hop per key, on each hit — measured at
about 2.4 ms of CPU per mint with a few thousand users, far over the token path's budget.
Here a check costs O(limit) for the caller's own timestamps, and the table of users is
bounded (the least recently seen user is forgotten first).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

import structlog
from limits import RateLimitItem, parse_many

from engram_voice.errors import RateLimitedError

__all__ = ["MintRateLimiter"]

_logger = structlog.get_logger("engram_voice.auth")
_MAX_TRACKED_USERS = 100_000


class MintRateLimiter:
    """Allows each user a bounded number of mints per window; ``None`` turns it off."""

    def __init__(
        self,
        limit: str | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_users: int = _MAX_TRACKED_USERS,
    ) -> None:
        self._items: list[RateLimitItem] = parse_many(limit) if limit else []
        self._windows = [float(item.get_expiry()) for item in self._items]
        self._longest = max(self._windows, default=0.0)
        self._capacity = max((item.amount for item in self._items), default=0)
        self._clock = clock
        self._max_users = max_users
        self._mints: OrderedDict[str, deque[float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        """Return True when a limit is configured."""
        return bool(self._items)

    async def check(self, user_id: str) -> None:
        """Count one mint for ``user_id`` or raise RateLimitedError saying when to retry."""
        if not self._items:
            return
        now = self._clock()
        stamps = self._mints.pop(user_id, None)
        if stamps is None:
            stamps = deque(maxlen=self._capacity)
        while stamps and stamps[0] <= now - self._longest:
            stamps.popleft()
        self._mints[user_id] = stamps  # most recently seen last
        if len(self._mints) > self._max_users:
            self._mints.popitem(last=False)
        waits = [
            self._wait(stamps, item, window, now)
            for item, window in zip(self._items, self._windows, strict=True)
        ]
        exhausted = [(wait, item) for wait, item in zip(waits, self._items, strict=True) if wait]
        if not exhausted:
            stamps.append(now)  # refused attempts are not counted: the wait never grows
            return
        retry_after, item = max(exhausted, key=lambda pair: pair[0])
        _logger.info("auth.mint_rate_limited", user_id=user_id, retry_after=retry_after)
        raise RateLimitedError(
            f"Too many sessions started: the limit is {item}; try again in {retry_after} s.",
            retry_after=retry_after,
        )

    @staticmethod
    def _wait(stamps: deque[float], item: RateLimitItem, window: float, now: float) -> int:
        """Return whole seconds until ``item`` allows one more mint (0 = allowed now)."""
        if len(stamps) < item.amount:
            return 0
        # The mint that must leave the window is the item.amount-th most recent one.
        oldest_counted = stamps[-item.amount]
        if oldest_counted <= now - window:
            return 0
        return max(1, math.ceil(oldest_counted + window - now))
