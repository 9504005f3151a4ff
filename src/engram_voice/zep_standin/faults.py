"""Fault injection for the Zep stand-in: down, 500, 429, reject, store-then-fail, slow.

A fault applies to the API calls of both subsets (``/api/v2`` and ``/api/v4``), for the
next ``count`` calls or until cleared. ``reject`` answers 400 to memory writes only (a
batch Zep refuses). ``store_then_fail`` and ``store_then_timeout`` also apply to memory
writes only: the batch *is stored*, then the answer is lost, as when Zep commits a batch
and the connection breaks before the reply arrives. ``store_then_fail`` answers 500;
``store_then_timeout`` holds the answer for ``hold_ms`` (the client's read timeout fires
first), then answers 504. The others apply to every call. ``throttle`` answers 429 with
``Retry-After`` (seconds) and, when ``retry_after_ms`` is set, ``retry-after-ms`` (which
the zep-cloud SDK prefers). ``latency_ms`` delays every call (a slow Zep), with or
without a fault. Installing or clearing a plan releases held answers and pending delays
at once (so a test's clean-up is prompt).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Literal

import msgspec

__all__ = ["FaultPlan", "Faults", "Injected"]

FaultMode = Literal[
    "none", "down", "error", "throttle", "reject", "store_then_fail", "store_then_timeout"
]
_STORE_THEN = frozenset({"store_then_fail", "store_then_timeout"})


class FaultPlan(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What to inject (the body of ``POST /_standin/faults``)."""

    mode: FaultMode = "none"
    count: int | None = None
    retry_after: int = 1
    retry_after_ms: int | None = None
    hold_ms: Annotated[int, msgspec.Meta(ge=0, le=120_000)] = 30_000
    latency_ms: int | None = None
    clear: bool = False


class Injected(msgspec.Struct, frozen=True):
    """An answer to send instead of (or, for the store-then modes, after) doing the call."""

    status: int
    message: str
    retry_after: int | None = None
    retry_after_ms: int | None = None
    hold_ms: int = 0


class Faults:
    """The current fault plan and how many calls it still applies to."""

    def __init__(self, *, latency_ms: int = 0) -> None:
        self._base_latency = latency_ms
        self.plan = FaultPlan()
        self._remaining: int | None = None
        self.latency_ms = latency_ms
        self.injected = 0
        self._released = asyncio.Event()

    def set(self, plan: FaultPlan) -> None:
        """Install a plan (``clear`` restores normal service and the base latency)."""
        self._released.set()  # wake answers held by the previous plan
        self._released = asyncio.Event()
        if plan.clear:
            self.plan, self._remaining, self.latency_ms = FaultPlan(), None, self._base_latency
            return
        self.plan, self._remaining = plan, plan.count
        if plan.latency_ms is not None:
            self.latency_ms = plan.latency_ms

    def _consume(self) -> bool:
        if self._remaining is not None:
            if self._remaining <= 0:
                return False
            self._remaining -= 1
        self.injected += 1
        return True

    def take(self, *, memory_write: bool) -> Injected | None:
        """Return the fault to answer instead of this call, if any, and count it down."""
        mode = self.plan.mode
        if mode == "none" or mode in _STORE_THEN or (mode == "reject" and not memory_write):
            return None
        if not self._consume():
            return None
        if mode == "down":
            return Injected(503, "zep stand-in is down (injected)")
        if mode == "error":
            return Injected(500, "internal error (injected)")
        if mode == "throttle":
            return Injected(
                429,
                "rate limited (injected)",
                retry_after=self.plan.retry_after,
                retry_after_ms=self.plan.retry_after_ms,
            )
        return Injected(400, "batch rejected (injected)")

    def after_store(self) -> Injected | None:
        """Return the answer that replaces a stored memory write's reply, if any."""
        mode = self.plan.mode
        if mode not in _STORE_THEN or not self._consume():
            return None
        if mode == "store_then_fail":
            return Injected(500, "stored, then the answer was lost (injected)")
        return Injected(
            504, "stored, then the answer timed out (injected)", hold_ms=self.plan.hold_ms
        )

    async def delay(self) -> None:
        """Wait ``latency_ms`` before a call, or less when the plan changes (a slow Zep)."""
        await self._wait(self.latency_ms)

    async def hold(self, injected: Injected) -> None:
        """Wait ``hold_ms`` before a held answer, or less when the plan changes."""
        await self._wait(injected.hold_ms)

    async def _wait(self, milliseconds: int) -> None:
        if milliseconds:
            released = self._released
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(released.wait(), milliseconds / 1000)
