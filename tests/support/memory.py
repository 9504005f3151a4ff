"""Stand-ins for memory tests: a scriptable in-memory sink."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engram_voice.memory.sink import (
    Keepalive,
    SinkMessage,
    SinkRejectedError,
    SinkSession,
    SinkUnavailableError,
)
from tests.support.clock import FakeClock

__all__ = ["FakeClock", "FakeSink"]  # FakeClock: the one in tests.support.clock


@dataclass
class FakeSink:
    """An in-memory MemorySink that stores each (turn, part) once and fails on request."""

    kind: str = "fake"
    batch_limit: int = 30
    max_chars: int = 4096
    sessions: dict[str, tuple[str, str]] = field(default_factory=dict)
    messages: dict[str, list[SinkMessage]] = field(default_factory=dict)
    failures: list[Exception] = field(default_factory=list)
    """Raised, one per call, by the next deliver calls."""
    calls: int = 0
    gate: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def deliver(
        self, session: SinkSession, messages: Sequence[SinkMessage], keepalive: Keepalive
    ) -> int:
        """Store the batch in order, skipping (turn, part) pairs already stored."""
        del keepalive  # one call per batch: nothing to keep alive between calls
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        owner = self.sessions.setdefault(session.session_id, (session.user_id, session.agent))
        if owner[0] != session.user_id:
            raise SinkRejectedError("session belongs to another user", status=409)
        if len(messages) > self.batch_limit:
            raise SinkRejectedError("too many messages", status=400)
        stored = self.messages.setdefault(session.session_id, [])
        known = {m.key for m in stored}
        fresh = [m for m in messages if m.key not in known]
        stored.extend(fresh)
        return len(messages) - len(fresh)

    def describe(self) -> dict[str, Any]:
        """Describe the fake."""
        return {"kind": self.kind}

    async def aclose(self) -> None:
        """Nothing to close."""

    def texts(self, session_id: str) -> list[str]:
        """Return the stored contents of a session, in order."""
        return [m.content for m in self.messages.get(session_id, [])]

    def message_ids(self, session_id: str) -> list[str]:
        """Return the stored turn ids of a session, in order (one per part)."""
        return [m.message_id for m in self.messages.get(session_id, [])]

    @staticmethod
    def down(retry_after: float | None = None) -> SinkUnavailableError:
        """Return a transient failure as a down or throttling Zep causes."""
        return SinkUnavailableError("zep unreachable (ConnectError)", retry_after=retry_after)
