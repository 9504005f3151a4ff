"""A Voice Live WebRTC caller for the emulator: the browser's peer plus the server's socket.

Like a browser behind a relaying backend, it creates the ``voice-live-events`` data
channel before the offer, sends a tone as its microphone and gathers ICE completely (on
127.0.0.1); like the backend, it opens the control WebSocket, sends
``rtc.call.sdp.create`` and applies ``rtc.call.sdp.created``'s answer. It records the
data channel's events, the control socket's events and the audio frames it hears. Every
wait has a deadline.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from engram_voice.emulator import loopback_ice
from engram_voice.emulator.audio import ToneTrack
from tests.support.polling import async_poll_until

__all__ = ["VOICELIVE_PATH", "VoiceLiveTestClient", "voicelive_url"]

VOICELIVE_PATH = "/voice-live/realtime/calls"
_ANSWERS = frozenset({"rtc.call.sdp.created", "rtc.call.error", "error"})


def voicelive_url(base_url: str, **query: str) -> str:
    """Return the control channel's ws:// URL on ``base_url`` with ``query`` (dashes: ``_``)."""
    params = {name.replace("_", "-"): value for name, value in query.items()}
    return base_url.replace("http://", "ws://", 1) + VOICELIVE_PATH + "?" + urlencode(params)


class VoiceLiveTestClient:
    """An aiortc peer and a control WebSocket that set up one Voice Live call."""

    def __init__(self, *, microphone: bool = True, channel_label: str = "voice-live-events"):
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.events: list[dict[str, Any]] = []
        self.control_events: list[dict[str, Any]] = []
        self.frames_received = 0
        self.ws: aiohttp.ClientWebSocketResponse | None = None
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

    async def connect(
        self, http: aiohttp.ClientSession, url: str, headers: Mapping[str, str] | None = None
    ) -> aiohttp.ClientWebSocketResponse:
        """Open the control channel (raises WSServerHandshakeError on a refused upgrade)."""
        self.ws = await http.ws_connect(
            url, headers=dict(headers or {}), timeout=aiohttp.ClientWSTimeout(ws_close=10)
        )
        self._spawn(self._read_control())
        return self.ws

    async def send(self, event: dict[str, Any]) -> None:
        """Send a client event on the control channel."""
        assert self.ws is not None
        await self.ws.send_str(json.dumps(event))

    async def start(
        self, session: dict[str, Any] | None = None, *, within: float = 20.0
    ) -> dict[str, Any]:
        """Send ``rtc.call.sdp.create`` and return the answer (or error) event that follows.

        On ``rtc.call.sdp.created`` the SDP answer is applied to the peer connection.
        """
        seen = len(self.control_events)
        event: dict[str, Any] = {"type": "rtc.call.sdp.create", "sdp_offer": await self.offer()}
        if session is not None:
            event["session"] = session
        await self.send(event)
        answer = await self.wait_control(_ANSWERS, after=seen, within=within)
        if answer["type"] == "rtc.call.sdp.created":
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=answer["sdp_answer"], type="answer")
            )
        return answer

    async def wait_control(
        self, types: str | frozenset[str], *, after: int = 0, within: float = 20.0
    ) -> dict[str, Any]:
        """Wait for the first control event of ``types`` received after index ``after``."""
        wanted = frozenset({types}) if isinstance(types, str) else types

        def found() -> dict[str, Any] | None:
            return next((e for e in self.control_events[after:] if e["type"] in wanted), None)

        event = await async_poll_until(
            found, timeout=within, what=f"control event {sorted(wanted)} ({self.control_types()})"
        )
        assert event is not None
        return event

    async def wait_closed(self, within: float = 20.0) -> int | None:
        """Wait until the control channel is closed; return its close code."""
        assert self.ws is not None
        ws = self.ws
        await async_poll_until(lambda: ws.closed, timeout=within, what="the control to close")
        return ws.close_code

    async def wait_connected(self, within: float = 20.0) -> None:
        """Wait until the peer connection is ``connected``."""
        await async_poll_until(
            lambda: self.pc.connectionState == "connected", timeout=within, what="connected"
        )

    def types(self) -> list[str]:
        """Return the types of the data channel's events so far, in order."""
        return [event["type"] for event in self.events]

    def control_types(self) -> list[str]:
        """Return the types of the control channel's events so far, in order."""
        return [event["type"] for event in self.control_events]

    async def wait_for_events(self, event_type: str, count: int = 1, within: float = 20.0) -> None:
        """Wait until ``count`` data-channel events of ``event_type`` have arrived."""
        await async_poll_until(
            lambda: self.types().count(event_type) >= count,
            timeout=within,
            what=f"{count} x {event_type} (got {self.types()})",
        )

    async def close(self) -> None:
        """Close the socket and the peer connection, and stop reading."""
        if self.ws is not None and not self.ws.closed:
            await asyncio.wait_for(self.ws.close(), 10)
        if self.microphone is not None:
            self.microphone.stop()
        await asyncio.wait_for(self.pc.close(), 10)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)

    async def _read_control(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.control_events.append(json.loads(message.data))

    def _on_message(self, message: str | bytes) -> None:
        self.events.append(json.loads(message))

    def _on_track(self, track: Any) -> None:
        self._spawn(self._consume(track))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _consume(self, track: Any) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            self.frames_received += 1
