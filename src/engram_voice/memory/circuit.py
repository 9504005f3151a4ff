"""A small circuit breaker so a Zep that is down is probed, not hammered.

Closed: deliveries flow. After ``failures`` consecutive transient failures it opens for
``cooldown`` seconds; then deliveries are probed again (half-open): a success closes
the circuit, a failure opens it again. Time comes from an injected clock.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

__all__ = ["CircuitBreaker", "CircuitState"]

CircuitState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Counts consecutive failures and decides whether a delivery may be attempted."""

    def __init__(
        self, *, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._threshold = failures
        self._cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None

    @property
    def state(self) -> CircuitState:
        """Return closed, open, or half_open (cooldown over: probe with one session)."""
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self._cooldown:
            return "half_open"
        return "open"

    def reopens_in(self) -> float:
        """Return seconds until a probe may go (0 when the circuit is not open)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self._cooldown - self._clock())

    def record_success(self) -> None:
        """Close the circuit."""
        self._failures = 0
        self._opened_at = None

    def record_failure(self) -> bool:
        """Count a transient failure; return True when this opened (or re-opened) the circuit."""
        self._failures += 1
        if self._opened_at is not None or self._failures >= self._threshold:
            self._opened_at = self._clock()
            return True
        return False
