"""The per-user daily limits: when a user is over one, the 429 they get and its Retry-After."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from engram_voice.errors import UsageLimitReachedError
from engram_voice.usage.metrics import USAGE_LIMITED
from engram_voice.usage.settings import UsageSettings

__all__ = ["refuse_over_limit", "seconds_until_utc_midnight"]


def seconds_until_utc_midnight(now: float) -> int:
    """Return the whole seconds from ``now`` until the next UTC midnight (at least 1)."""
    moment = datetime.fromtimestamp(now, UTC)
    midnight = (moment + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1, math.ceil(midnight.timestamp() - now))


def refuse_over_limit(limits: UsageSettings, *, calls: int, seconds: float, now: float) -> None:
    """Raise 429 ``usage_limit_reached`` when ``calls`` or ``seconds`` today reach a limit."""
    retry_after = seconds_until_utc_midnight(now)
    if limits.max_calls_per_day and calls >= limits.max_calls_per_day:
        USAGE_LIMITED.labels("calls").inc()
        raise UsageLimitReachedError(
            f"You reached today's limit of {limits.max_calls_per_day} call(s); "
            "it resets at midnight UTC.",
            retry_after=retry_after,
            extra={"limit": "calls"},
        )
    if limits.max_minutes_per_day and seconds >= limits.max_minutes_per_day * 60:
        USAGE_LIMITED.labels("minutes").inc()
        raise UsageLimitReachedError(
            f"You reached today's limit of {limits.max_minutes_per_day} minute(s) of calls; "
            "it resets at midnight UTC.",
            retry_after=retry_after,
            extra={"limit": "minutes"},
        )
