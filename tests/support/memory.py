"""Stand-ins for memory tests: a scriptable in-memory sink."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engram_voice.memory.sink import SinkMessage, SinkRejectedError, SinkUnavailableError
from tests.support.clock import FakeClock

__all__ = ["FakeClock", "FakeSink"]  # FakeClock: the one in tests.support.clock


@dataclass
class FakeSink:
    """An in-memory MemorySink that enforces Zep's uuid rule and fails on request."""

    kind: str = "fake"
    sessions: dict[str, tuple[str, str]] = field(default_factory=dict)
    messages: dict[str, list[SinkMessage]] = field(default_factory=dict)
    failures: list[Exception] = field(default_factory=list)
    """Raised, one per call, by the next add_messages calls."""
    calls: int = 0
    gate: asyncio.Event | None = None
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def ensure_session(self, *, user_id: str, session_id: str, agent: str) -> None:
        """Create the session for the user, refusing another user's session."""
        owner = self.sessions.setdefault(session_id, (user_id, agent))
        if owner[0] != user_id:
            raise SinkRejectedError("session belongs to another user", status=409)

    async def add_messages(self, session_id: str, messages: Sequence[SinkMessage]) -> None:
        """Append atomically; an existing uuid rejects the whole call with 400."""
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        stored = self.messages.setdefault(session_id, [])
        known = {m.uuid for m in stored}
        if any(m.uuid in known for m in messages):
            raise SinkRejectedError("zep answered 400: message uuid already exists", status=400)
        if len(messages) > 30:
            raise SinkRejectedError("zep answered 400: too many messages", status=400)
        stored.extend(messages)

    async def message_exists(self, session_id: str, uuid: str) -> bool:
        """Tell whether the uuid is stored in the session."""
        return any(m.uuid == uuid for m in self.messages.get(session_id, []))

    def forget_session(self, session_id: str) -> None:
        """Nothing is cached here."""

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
        return [str(m.metadata["message_id"]) for m in self.messages.get(session_id, [])]

    @staticmethod
    def down(retry_after: float | None = None) -> SinkUnavailableError:
        """Return a transient failure as a down or throttling Zep causes."""
        return SinkUnavailableError("zep unreachable (ConnectError)", retry_after=retry_after)
