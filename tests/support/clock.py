"""The one fake clock of the test suite: time that moves only when the test moves it.

Components take their clock as a plain ``Callable[[], float]`` (``time.time`` for unix
seconds, ``time.monotonic`` for intervals); this class stands in for either, and its
:meth:`FakeClock.sleep` stands in for ``asyncio.sleep`` where a component takes one.
"""

from __future__ import annotations

import asyncio

__all__ = ["UNIX_2027", "FakeClock"]

UNIX_2027 = 1_800_000_000.0
"""The default start: a plausible unix time, so expiry arithmetic reads naturally."""


class FakeClock:
    """A clock that stands still until the test sets ``now`` or calls :meth:`advance`."""

    def __init__(self, now: float = UNIX_2027) -> None:
        self.now = now
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        """Return the current fake time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` and wake every sleeper whose time has come."""
        self.now += seconds
        due = [future for at, future in self._sleepers if at <= self.now]
        self._sleepers = [(at, future) for at, future in self._sleepers if at > self.now]
        for future in due:
            if not future.done():
                future.set_result(None)

    async def sleep(self, seconds: float) -> None:
        """Wait until the fake time has moved ``seconds`` on (an ``asyncio.sleep`` stand-in)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        await future
