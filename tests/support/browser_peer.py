"""The browser's side of a WebRTC call in tests: an aiortc peer like the web client's.

It sends a generated tone as its microphone, creates its events data channel before the
offer, gathers ICE completely on 127.0.0.1, and records every data-channel event and the
audio frames it hears. The realtime (Azure OpenAI) and Voice Live callers build on it;
every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from typing import Any

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from engram_voice.emulator import loopback_ice
from engram_voice.emulator.audio import ToneTrack
from tests.support.polling import async_poll_until

__all__ = ["BrowserPeer"]


class BrowserPeer:
    """An aiortc peer connection with a microphone tone and one events data channel."""

    def __init__(self, *, channel_label: str, microphone: bool = True) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.events: list[dict[str, Any]] = []
        self.frames_received = 0
        self.microphone: ToneTrack | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.channel = self.pc.createDataChannel(channel_label)
        self.channel.on("message", self._on_message)
        if microphone:
            self.microphone = ToneTrack()
            self.microphone.speaking = True
            self.pc.addTrack(self.microphone)
        self.pc.on("track", self._on_track)

    async def offer(self) -> str:
        """Create the SDP offer once (ICE gathered on 127.0.0.1) and return it."""
        if self.pc.localDescription is None:
            with loopback_ice():
                await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp: str = self.pc.localDescription.sdp
        return sdp

    async def wait_connected(self, within: float = 20.0) -> None:
        """Wait until the peer connection is ``connected``."""
        await async_poll_until(
            lambda: self.pc.connectionState == "connected", timeout=within, what="connected"
        )

    def types(self) -> list[str]:
        """Return the types of the data channel's events so far, in order."""
        return [event["type"] for event in self.events]

    async def wait_for_events(self, event_type: str, count: int = 1, within: float = 20.0) -> None:
        """Wait until ``count`` data-channel events of ``event_type`` have arrived."""
        await async_poll_until(
            lambda: self.types().count(event_type) >= count,
            timeout=within,
            what=f"{count} x {event_type} (got {self.types()})",
        )

    async def close(self) -> None:
        """Stop the microphone, close the peer connection and the reading tasks (bounded)."""
        if self.microphone is not None:
            self.microphone.stop()
        await asyncio.wait_for(self.pc.close(), 10)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_message(self, message: str | bytes) -> None:
        self.events.append(json.loads(message))

    def _on_track(self, track: Any) -> None:
        self._spawn(self._consume(track))

    async def _consume(self, track: Any) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            self.frames_received += 1
