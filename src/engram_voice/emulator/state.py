"""Everything one emulator instance knows: keys, faults, calls, counters and recent mints.

Tests that run the emulator in-process reach this object as ``app.state.emulator``; tests
that run it as a process see the same data through ``GET /_emulator/state``. Recorded
data never includes a key value: a mint or a Voice Live call records which slot
authenticated it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Protocol

import structlog

from engram_voice.emulator.callmode import CallMode
from engram_voice.emulator.config import EmulatorConfig
from engram_voice.emulator.faults import FaultInjector
from engram_voice.emulator.keys import AuthSlot, EphemeralKeyStore, KeyRing
from engram_voice.emulator.peer import CallPacing, RealtimeCall

__all__ = ["MAX_ACTIVE_CALLS", "EmulatorState"]

MAX_ACTIVE_CALLS = 64
"""The default of ``EMULATOR_MAX_CALLS``: open peers (both protocols) before refusing more."""
_RECENT = 50
_RECENT_VOICELIVE = 200
_RATE_WINDOW_SECONDS = 60.0
_logger = structlog.get_logger("engram_voice.emulator")


class Described(Protocol):
    """Anything that reports itself as plain data (a Voice Live control connection)."""

    def describe(self) -> dict[str, Any]:
        """Return the record as plain data."""
        ...


class EmulatorState:
    """The emulator's keys, faults, calls and records; shared by every request handler."""

    def __init__(self, config: EmulatorConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.keys = KeyRing(config.api_keys, config.bearer_tokens)
        self.ephemeral = EphemeralKeyStore(clock)
        self.faults = FaultInjector()
        self.calls: dict[str, RealtimeCall] = {}
        self.ended_calls: deque[RealtimeCall] = deque(maxlen=_RECENT)
        self.counters: dict[str, Counter[str]] = {
            "client_secrets": Counter(),
            "calls": Counter(),
            "hangup": Counter(),
            "voicelive": Counter(),
            "voicelive_outcomes": Counter(),
            "sideband": Counter(),
        }
        self.mints: deque[dict[str, Any]] = deque(maxlen=_RECENT)
        self.voicelive_calls: deque[Described] = deque(maxlen=_RECENT_VOICELIVE)
        self.sidebands: deque[Described] = deque(maxlen=_RECENT_VOICELIVE)
        self._connections: dict[str, deque[float]] = {}
        self.started_at = clock()

    def count(self, operation: str, status: int) -> None:
        """Count one answer of ``operation`` with ``status``."""
        self.counters[operation][str(status)] += 1

    def record_mint(
        self, *, status: int, auth: AuthSlot | None, session: Any, session_id: str | None = None
    ) -> None:
        """Record one ``client_secrets`` request: its status, auth slot and session object."""
        self.count("client_secrets", status)
        self.mints.append(
            {
                "at": self.clock(),
                "status": status,
                "auth": auth,
                "session": session,
                "session_id": session_id,
            }
        )

    def admit_connection(self, credential: str) -> bool:
        """Count a new Voice Live connection by ``credential``; False when over the quota."""
        limit = self.config.voicelive_connections_per_minute
        if limit <= 0:
            return True
        now = time.monotonic()
        recent = self._connections.setdefault(credential, deque())
        while recent and now - recent[0] >= _RATE_WINDOW_SECONDS:
            recent.popleft()
        if len(recent) >= limit:
            return False
        recent.append(now)
        return True

    def open_call(
        self,
        call_id: str,
        session: dict[str, Any],
        *,
        filtered: bool,
        mode: CallMode | None = None,
        control: Callable[[dict[str, Any]], None] | None = None,
        on_closed: Callable[[RealtimeCall], None] | None = None,
        max_seconds: float | None = None,
        media: bool = True,
    ) -> RealtimeCall:
        """Create and register the peer for call ``call_id``, bound to ``session``.

        ``mode`` (default: Azure OpenAI's) says how its events travel, ``control`` receives
        those routed to a control channel, ``on_closed`` runs once the peer has closed;
        ``media=False`` creates no aiortc peer (``EMULATOR_MEDIA=off``).
        """
        pacing = CallPacing(
            turn_interval_seconds=self.config.turn_interval_seconds,
            max_turns=self.config.max_turns,
            filtered=filtered,
        )
        if max_seconds is not None:
            pacing = CallPacing(
                turn_interval_seconds=pacing.turn_interval_seconds,
                max_turns=pacing.max_turns,
                filtered=filtered,
                max_seconds=max_seconds,
            )

        def closed(call: RealtimeCall) -> None:
            self._call_closed(call)
            if on_closed is not None:
                on_closed(call)

        call = RealtimeCall(
            call_id, session, pacing, mode=mode, control=control, on_closed=closed, media=media
        )
        self.calls[call_id] = call
        return call

    def find_call(self, call_id: str) -> RealtimeCall | None:
        """Return the active or recently ended call named ``call_id``."""
        if call := self.calls.get(call_id):
            return call
        return next((c for c in self.ended_calls if c.call_id == call_id), None)

    def active_calls(self) -> int:
        """Return how many calls are open."""
        return len(self.calls)

    def full(self) -> bool:
        """Return True when no further call may open (``EMULATOR_MAX_CALLS`` are open)."""
        return len(self.calls) >= self.config.max_active_calls

    async def close_all(self, *, grace_seconds: float = 10.0) -> None:
        """Release hung requests and close every open call, waiting at most ``grace_seconds``."""
        self.faults.clear()
        calls = list(self.calls.values())
        if not calls:
            return
        closing = [asyncio.create_task(call.close("emulator_shutdown")) for call in calls]
        _, pending = await asyncio.wait(closing, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        _logger.info("emulator.calls_closed", closed=len(calls) - len(pending), stuck=len(pending))

    def snapshot(self) -> dict[str, Any]:
        """Return counters, recent mints, calls and faults as plain data (no secrets)."""
        config = self.config
        return {
            "started_at": self.started_at,
            "config": {
                "deployments": list(config.deployments),
                "latency_ms": config.latency_ms,
                "turn_interval_seconds": config.turn_interval_seconds,
                "max_turns": config.max_turns,
                "bearer_tokens": len(config.bearer_tokens),
                "public_url": config.public_url,
                "max_active_calls": config.max_active_calls,
                "voicelive_max_seconds": config.voicelive_max_seconds,
                "voicelive_connections_per_minute": config.voicelive_connections_per_minute,
                "voicelive_mirror_events": config.voicelive_mirror_events,
                "media": config.media,
            },
            "counters": {op: dict(counts) for op, counts in self.counters.items()},
            "mints": list(self.mints),
            "ephemeral_keys": self.ephemeral.counts(),
            "key_regenerations": {str(s): n for s, n in self.keys.regenerations.items()},
            "active_calls": self.active_calls(),
            "calls": [c.describe() for c in (*self.ended_calls, *self.calls.values())],
            "voicelive_calls": [c.describe() for c in self.voicelive_calls],
            "sidebands": [c.describe() for c in self.sidebands],
            "faults": self.faults.describe(),
        }

    def _call_closed(self, call: RealtimeCall) -> None:
        if self.calls.pop(call.call_id, None) is not None:
            self.ended_calls.append(call)
