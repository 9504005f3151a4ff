"""A scriptable :class:`~engram_voice.memory.recall.MemoryReader` and a live-session stand-in."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from engram_voice.memory.recall import RecallError

__all__ = ["FakeReader", "FakeSession"]


@dataclass
class FakeReader:
    """Answers each user's context from ``contexts``; can hold answers or fail on request."""

    kind: str = "fake"
    contexts: dict[str, str] = field(default_factory=dict)
    failures: list[RecallError] = field(default_factory=list)
    """Raised, one per read, by the next reads."""
    gate: asyncio.Event | None = None
    """When set, every read waits for it (a slow Zep)."""
    reads: list[str] = field(default_factory=list)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    async def read(self, user_id: str) -> str | None:
        """Return the user's scripted context (None when there is none)."""
        self.reads.append(user_id)
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        return self.contexts.get(user_id)

    def describe(self) -> dict[str, Any]:
        """Describe the fake."""
        return {"kind": self.kind}

    async def aclose(self) -> None:
        """Remember the close."""
        self.closed = True


@dataclass
class FakeSession:
    """A call whose instructions can change after it connected (records each update)."""

    updates: list[str] = field(default_factory=list)
    updated: asyncio.Event = field(default_factory=asyncio.Event)
    accepts: bool = True

    async def update_instructions(self, instructions: str) -> bool:
        """Record the new instructions."""
        self.updates.append(instructions)
        self.updated.set()
        return self.accepts
