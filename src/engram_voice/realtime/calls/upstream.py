"""The call seam: how the service opens a call on an upstream and holds it.

A :class:`CallUpstream` turns the browser's SDP offer into an :class:`OpenedCall` (the
SDP answer plus the handle the registry keeps for the call's life). Each upstream
(``"azure-openai"``, ``"voice-live"``) implements both in its own module; vendor rules
stay there, and failures are raised as the backend-neutral errors of
:mod:`engram_voice.errors` (never an upstream body or key).
"""

from __future__ import annotations

from typing import Protocol

from engram_voice.agents import Agent
from engram_voice.realtime.settings import UPSTREAM_CALL_CAP_SECONDS

__all__ = ["UPSTREAM_CAPS_SECONDS", "CallUpstream", "OpenedCall"]

UPSTREAM_CAPS_SECONDS: dict[str, float] = {
    name: float(cap) for name, cap in UPSTREAM_CALL_CAP_SECONDS.items()
}
"""Each upstream's own maximum call length (one table, in realtime.settings)."""


class OpenedCall(Protocol):
    """One live call on an upstream, owned by the call registry."""

    sdp_answer: str
    upstream_call_id: str

    async def hangup(self, reason: str) -> None:
        """End the call upstream; idempotent, bounded in time, never raises for upstream faults."""
        ...

    async def wait_closed(self) -> str:
        """Return once the call has ended (upstream or :meth:`hangup`), with the reason."""
        ...


class CallUpstream(Protocol):
    """Opens calls on one upstream for the agents it serves."""

    name: str

    async def open(self, *, agent: Agent, sdp_offer: str, session_id: str) -> OpenedCall:
        """Open a call for ``agent`` with the browser's offer; raise an ``AppError`` on failure."""
        ...
