"""Stand-ins for an :class:`~engram_voice.realtime.calls.upstream.OpenedCall` in registry tests."""

from __future__ import annotations

import asyncio


class StandInCall:
    """An ``OpenedCall`` whose upstream end the test triggers; counts hang-ups."""

    def __init__(self, *, stuck: bool = False) -> None:
        self.sdp_answer = "v=0\r\n"
        self.upstream_call_id = "up_1"
        self.hangups: list[str] = []
        self._closed = asyncio.Event()
        self._reason = ""
        self._stuck = stuck

    async def hangup(self, reason: str) -> None:
        """Record the hang-up (once), or hang forever when ``stuck``."""
        if self._stuck:
            await asyncio.Event().wait()
        if not self._closed.is_set():
            self.hangups.append(reason)
            self.end_upstream(reason)

    def end_upstream(self, reason: str) -> None:
        """End the call from the upstream's side."""
        if not self._closed.is_set():
            self._reason = reason
            self._closed.set()

    async def wait_closed(self) -> str:
        """Return the reason once ended."""
        await self._closed.wait()
        return self._reason


class HeldHangupCall(StandInCall):
    """An ``OpenedCall`` whose ``hangup`` waits until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.hanging = asyncio.Event()
        """Set once the registry's hang-up is under way (and blocked)."""
        self.released = asyncio.Event()

    async def hangup(self, reason: str) -> None:
        """Record the hang-up, then wait until the test releases it."""
        self.hangups.append(reason)
        self.hanging.set()
        await self.released.wait()
        self.end_upstream(reason)
