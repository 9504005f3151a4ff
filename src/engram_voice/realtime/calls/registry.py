"""The live calls the service owns: limits, the maximum duration, hang-ups and the drain.

Every call set up through the service is held here from its answer to its end, by
call id, user, agent and upstream. A call ends in exactly one of four ways, each once:
the browser hangs up (``client_hangup``), its maximum duration passes (``max_duration``,
a loop timer per call: no task sleeps for it), the upstream ends it (the reason
``OpenedCall.wait_closed`` returns), or the app shuts down (``shutdown``, every live call
hung up within the drain bound).
Each end hangs the call up upstream (idempotent), updates the metrics and logs
``realtime.call_ended``. While its hang-up is under way (bounded; for Azure OpenAI it
includes the capture's flush of the last turns) the call is *ending*: no longer active,
its user's slot already free, not yet ended. At every instant each call added here is
counted exactly once: active, ending, or ended (by reason), also when the drain abandons
a hang-up that outlasts its bound. Every task the registry starts is referenced until it ends;
a live call holds one (its watcher), so 500 held calls are 500 tasks, not 1,000.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from engram_voice.errors import TooManyCallsError, UpstreamUnavailableError
from engram_voice.realtime.calls.metrics import (
    CALL_DURATION,
    CALLS_ACTIVE,
    CALLS_ENDED,
    CALLS_ENDING,
)
from engram_voice.realtime.calls.upstream import UPSTREAM_CAPS_SECONDS, OpenedCall
from engram_voice.realtime.settings import RealtimeSettings
from engram_voice.usage import UsageMeter

__all__ = ["CallLimits", "CallRegistry", "LiveCall"]

_logger = structlog.get_logger("engram_voice.realtime.calls")
_RETRY_AFTER_CAP = 60
HANGUP_GUARD_SECONDS = 15.0
"""Outer bound on one upstream hang-up (each upstream bounds its own, this is the backstop)."""


class Timer(Protocol):
    """A pending timer (``asyncio.TimerHandle``): it can be cancelled."""

    def cancel(self) -> None:
        """Keep its callback from running."""


CallLater = Callable[..., Timer]
"""``loop.call_later(seconds, callback, *args)`` or a test clock's stand-in."""


@dataclass(frozen=True)
class CallLimits:
    """How long a call may last, how many one user may hold, how long the drain may take."""

    max_seconds: float = 1800.0
    max_per_user: int = 2
    drain_seconds: float = 10.0

    @classmethod
    def from_settings(cls, realtime: RealtimeSettings) -> CallLimits:
        """Read CALL_MAX_SECONDS and CALL_MAX_CONCURRENT_PER_USER (the drain keeps its default)."""
        return cls(
            max_seconds=realtime.call_max_seconds,
            max_per_user=realtime.call_max_concurrent_per_user,
        )


@dataclass(eq=False)
class LiveCall:
    """One live call: who holds it, where, since when, and the tasks that watch it."""

    call_id: str
    user_id: str
    agent_id: str
    upstream: str
    session_id: str
    opened: OpenedCall
    started: float
    expires_at: int
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    timer: Timer | None = None
    """The maximum duration's timer (cancelled when the call ends another way)."""

    def __repr__(self) -> str:
        return f"LiveCall({self.call_id!r}, agent={self.agent_id!r}, upstream={self.upstream!r})"


class CallRegistry:
    """Holds live calls and ends each one exactly once."""

    def __init__(
        self,
        limits: CallLimits,
        *,
        call_later: CallLater | None = None,
        meter: UsageMeter | None = None,
    ) -> None:
        self.limits = limits
        self.meter = meter
        """Told when each call starts and ends (usage metering); None meters nothing."""
        self._call_later = call_later
        """Schedules the duration timers; None: the running loop's ``call_later``."""
        self._calls: dict[str, LiveCall] = {}
        self._ending: dict[str, LiveCall] = {}  # ended one way, their hang-up under way
        self._held: Counter[str] = Counter()  # per user: calls being set up plus live ones
        self._tasks: set[asyncio.Task[None]] = set()
        self._ended: Counter[str] = Counter()
        self._closing = False

    def max_seconds(self, upstream: str) -> float:
        """Return the maximum call length on ``upstream``: the limit, never above its cap."""
        return min(self.limits.max_seconds, UPSTREAM_CAPS_SECONDS.get(upstream, math.inf))

    def reserve(self, user_id: str) -> None:
        """Hold one call slot for ``user_id`` or raise 429 ``too_many_calls``."""
        if self._held[user_id] >= self.limits.max_per_user:
            raise TooManyCallsError(
                f"You already hold {self.limits.max_per_user} live call(s), the most one user "
                "may; hang one up (DELETE /realtime/calls/{call_id}) and try again.",
                retry_after=self._retry_after(user_id),
            )
        self._held[user_id] += 1

    def release(self, user_id: str) -> None:
        """Give back a slot taken by :meth:`reserve` for a call that did not open."""
        self._held[user_id] -= 1
        if self._held[user_id] <= 0:
            del self._held[user_id]

    async def add(
        self, *, user_id: str, agent_id: str, upstream: str, session_id: str, opened: OpenedCall
    ) -> LiveCall:
        """Hold an opened call (its slot reserved) and start its duration timer and watcher."""
        if self._closing:
            await self._hang_up(opened, "shutdown")
            self.release(user_id)
            raise UpstreamUnavailableError(
                "The service is shutting down; call again.", retry_after=1
            )
        seconds = self.max_seconds(upstream)
        live = LiveCall(
            call_id=f"rc_{secrets.token_hex(16)}",
            user_id=user_id,
            agent_id=agent_id,
            upstream=upstream,
            session_id=session_id,
            opened=opened,
            started=time.monotonic(),
            expires_at=int(time.time() + seconds),
        )
        self._calls[live.call_id] = live
        CALLS_ACTIVE.labels(upstream).inc()
        if self.meter is not None:
            self.meter.call_started(
                live.call_id, user_id, agent_id, upstream, session_id=session_id
            )
        call_later = self._call_later or asyncio.get_running_loop().call_later
        live.timer = call_later(seconds, self._expire, live)
        live.tasks = [self._spawn(self._watch(live), f"call-watch-{live.call_id}")]
        return live

    async def end(self, call_id: str, *, user_id: str, reason: str) -> bool:
        """End ``user_id``'s call ``call_id``; False when unknown, ended or someone else's."""
        live = self._calls.get(call_id)
        if live is None or live.user_id != user_id:
            return False
        await self._finish(live, reason)
        return True

    def get(self, call_id: str) -> LiveCall | None:
        """Return the live call ``call_id``, or None."""
        return self._calls.get(call_id)

    def active(self) -> int:
        """Return how many calls are live (not being hung up)."""
        return len(self._calls)

    def ending(self) -> int:
        """Return how many calls are being hung up (ended, their hang-up not yet done)."""
        return len(self._ending)

    async def close(self) -> None:
        """Refuse new calls and hang up every live one within ``drain_seconds`` (shutdown)."""
        self._closing = True
        deadline = time.monotonic() + self.limits.drain_seconds
        live = list(self._calls.values())
        if live:
            ending = [self._spawn(self._finish(c, "shutdown"), "call-drain") for c in live]
            done, pending = await asyncio.wait(ending, timeout=self.limits.drain_seconds)
            _logger.info("realtime.calls_drained", ended=len(done), abandoned=len(pending))
        if self._tasks:  # ends already under way (a timer, a watcher): the rest of the bound
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - time.monotonic()))
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=1.0)

    def describe(self) -> dict[str, Any]:
        """Return the ``calls`` section of ``/status`` (no user ids, no upstream ids)."""
        by_upstream = Counter(live.upstream for live in self._calls.values())
        ending_by_upstream = Counter(live.upstream for live in self._ending.values())
        return {
            "active": self.active(),
            "active_by_upstream": dict(by_upstream),
            "ending": self.ending(),
            "ending_by_upstream": dict(ending_by_upstream),
            "limits": {
                "max_seconds": {name: self.max_seconds(name) for name in UPSTREAM_CAPS_SECONDS},
                "max_concurrent_per_user": self.limits.max_per_user,
                "drain_seconds": self.limits.drain_seconds,
            },
            "ended_by_reason": dict(self._ended),
            "accepting": not self._closing,
        }

    # -- internals ------------------------------------------------------------------------

    def _retry_after(self, user_id: str) -> int:
        remaining = [
            live.expires_at - time.time()
            for live in self._calls.values()
            if live.user_id == user_id
        ]
        soonest = min(remaining, default=1.0)
        return max(1, min(_RETRY_AFTER_CAP, math.ceil(soonest)))

    def _spawn(self, coroutine: Any, name: str) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _expire(self, live: LiveCall) -> None:
        if live.call_id in self._calls:
            self._spawn(self._finish(live, "max_duration"), f"call-expiry-{live.call_id}")

    async def _watch(self, live: LiveCall) -> None:
        reason = await live.opened.wait_closed()
        await self._finish(live, reason)

    async def _finish(self, live: LiveCall, reason: str) -> None:
        """End ``live`` once: active -> ending (the hang-up) -> ended, with no gap between."""
        if self._calls.pop(live.call_id, None) is None:
            return  # ended already, by another of the four ways
        self._ending[live.call_id] = live  # in the same step: never neither active nor ending
        self.release(live.user_id)  # a call being hung up holds no slot of its user
        CALLS_ACTIVE.labels(live.upstream).dec()
        CALLS_ENDING.labels(live.upstream).inc()
        if live.timer is not None:
            live.timer.cancel()
        current = asyncio.current_task()
        for task in live.tasks:
            if task is not current:
                task.cancel()
        hangup = "abandoned"
        try:
            hangup = await self._hang_up(live.opened, reason)
        finally:  # also when the drain cancels a hang-up past its bound: counted, not lost
            self._count_end(live, reason, hangup)

    def _count_end(self, live: LiveCall, reason: str, hangup: str) -> None:
        del self._ending[live.call_id]
        self._ended[reason] += 1  # in the same step as leaving ``ending``
        CALLS_ENDING.labels(live.upstream).dec()
        CALLS_ENDED.labels(live.upstream, reason).inc()
        duration = time.monotonic() - live.started
        CALL_DURATION.labels(live.upstream).observe(duration)
        if self.meter is not None:
            self.meter.call_ended(live.call_id, duration, reason)
        _logger.info(
            "realtime.call_ended",
            call_id=live.call_id,
            session_id=live.session_id,
            agent=live.agent_id,
            upstream=live.upstream,
            reason=reason,
            duration_s=round(duration, 3),
            hangup=hangup,
        )

    @staticmethod
    async def _hang_up(opened: OpenedCall, reason: str) -> str:
        """Hang ``opened`` up within the guard; return ``done``, ``timeout`` or ``error``."""
        try:
            async with asyncio.timeout(HANGUP_GUARD_SECONDS):
                await opened.hangup(reason)
        except TimeoutError:
            _logger.warning("realtime.call_hangup_timeout", reason=reason)
            return "timeout"
        except Exception:  # the seam says hangup never raises; one that does is logged
            _logger.exception("realtime.call_hangup_error", reason=reason)
            return "error"
        return "done"
