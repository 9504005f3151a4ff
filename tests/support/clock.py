"""The one fake clock of the test suite: time that moves only when the test moves it.

Components take their clock as a plain ``Callable[[], float]`` (``time.time`` for unix
seconds, ``time.monotonic`` for intervals); this class stands in for either, and its
:meth:`FakeClock.sleep` stands in for ``asyncio.sleep`` where a component takes one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["UNIX_2027", "FakeClock", "FakeTimer"]

UNIX_2027 = 1_800_000_000.0
"""The default start: a plausible unix time, so expiry arithmetic reads naturally."""


class FakeClock:
    """A clock that stands still until the test sets ``now`` or calls :meth:`advance`."""

    def __init__(self, now: float = UNIX_2027) -> None:
        self.now = now
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._timers: list[FakeTimer] = []

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
        timers = [t for t in self._timers if t.at <= self.now]
        self._timers = [t for t in self._timers if t.at > self.now]
        for timer in timers:
            if not timer.cancelled:
                timer.callback(*timer.args)

    async def sleep(self, seconds: float) -> None:
        """Wait until the fake time has moved ``seconds`` on (an ``asyncio.sleep`` stand-in)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        await future

    def call_later(self, seconds: float, callback: Callable[..., Any], *args: Any) -> FakeTimer:
        """Run ``callback(*args)`` once the fake time has moved ``seconds`` on (``call_later``)."""
        timer = FakeTimer(self.now + seconds, callback, args)
        self._timers.append(timer)
        return timer


class FakeTimer:
    """A timer of :class:`FakeClock`: an ``asyncio.TimerHandle`` stand-in."""

    def __init__(self, at: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.at, self.callback, self.args = at, callback, args
        self.cancelled = False

    def cancel(self) -> None:
        """Keep the callback from running."""
        self.cancelled = True
