"""Fault injection for the Zep stand-in: down, 500, 429 + Retry-After, reject, slow.

A fault applies to ``/api/v2`` calls, for the next ``count`` calls or until cleared.
``reject`` answers 400 to memory writes only (a batch Zep refuses); the others apply to
every call. ``latency_ms`` delays every call (a slow Zep), with or without a fault.
"""

from __future__ import annotations

from typing import Literal

import msgspec

__all__ = ["FaultPlan", "Faults", "Injected"]

FaultMode = Literal["none", "down", "error", "throttle", "reject"]


class FaultPlan(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """What to inject (the body of ``POST /_standin/faults``)."""

    mode: FaultMode = "none"
    count: int | None = None
    retry_after: int = 1
    latency_ms: int | None = None
    clear: bool = False


class Injected(msgspec.Struct, frozen=True):
    """An answer to send instead of doing the call."""

    status: int
    message: str
    retry_after: int | None = None


class Faults:
    """The current fault plan and how many calls it still applies to."""

    def __init__(self, *, latency_ms: int = 0) -> None:
        self._base_latency = latency_ms
        self.plan = FaultPlan()
        self._remaining: int | None = None
        self.latency_ms = latency_ms
        self.injected = 0

    def set(self, plan: FaultPlan) -> None:
        """Install a plan (``clear`` restores normal service and the base latency)."""
        if plan.clear:
            self.plan, self._remaining, self.latency_ms = FaultPlan(), None, self._base_latency
            return
        self.plan, self._remaining = plan, plan.count
        if plan.latency_ms is not None:
            self.latency_ms = plan.latency_ms

    def take(self, *, memory_write: bool) -> Injected | None:
        """Return the fault for this call, if any, and count it down."""
        mode = self.plan.mode
        if mode == "none" or (mode == "reject" and not memory_write):
            return None
        if self._remaining is not None:
            if self._remaining <= 0:
                return None
            self._remaining -= 1
        self.injected += 1
        if mode == "down":
            return Injected(503, "zep stand-in is down (injected)")
        if mode == "error":
            return Injected(500, "internal error (injected)")
        if mode == "throttle":
            return Injected(429, "rate limited (injected)", retry_after=self.plan.retry_after)
        return Injected(400, "batch rejected (injected)")
