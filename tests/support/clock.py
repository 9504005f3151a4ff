"""The one fake clock of the test suite: time that moves only when the test moves it.

Components take their clock as a plain ``Callable[[], float]`` (``time.time`` for unix
seconds, ``time.monotonic`` for intervals); this class stands in for either.
"""

from __future__ import annotations

__all__ = ["FakeClock"]

UNIX_2027 = 1_800_000_000.0
"""The default start: a plausible unix time, so expiry arithmetic reads naturally."""


class FakeClock:
    """A clock that stands still until the test sets ``now`` or calls :meth:`advance`."""

    def __init__(self, now: float = UNIX_2027) -> None:
        self.now = now

    def __call__(self) -> float:
        """Return the current fake time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self.now += seconds
