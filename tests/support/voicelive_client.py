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
from aiortc import RTCSessionDescription

from tests.support.browser_peer import BrowserPeer
from tests.support.polling import async_poll_until

__all__ = ["VOICELIVE_PATH", "VoiceLiveTestClient", "voicelive_url"]

VOICELIVE_PATH = "/voice-live/realtime/calls"
_ANSWERS = frozenset({"rtc.call.sdp.created", "rtc.call.error", "error"})


def voicelive_url(base_url: str, **query: str) -> str:
    """Return the control channel's ws:// URL on ``base_url`` with ``query`` (dashes: ``_``)."""
    params = {name.replace("_", "-"): value for name, value in query.items()}
    return base_url.replace("http://", "ws://", 1) + VOICELIVE_PATH + "?" + urlencode(params)


class VoiceLiveTestClient(BrowserPeer):
    """An aiortc peer and a control WebSocket that set up one Voice Live call."""

    def __init__(self, *, microphone: bool = True, channel_label: str = "voice-live-events"):
        super().__init__(channel_label=channel_label, microphone=microphone)
        self.control_events: list[dict[str, Any]] = []
        self.ws: aiohttp.ClientWebSocketResponse | None = None

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

    def control_types(self) -> list[str]:
        """Return the types of the control channel's events so far, in order."""
        return [event["type"] for event in self.control_events]

    async def close(self) -> None:
        """Close the control socket, then the peer connection, and stop reading."""
        if self.ws is not None and not self.ws.closed:
            await asyncio.wait_for(self.ws.close(), 10)
        await super().close()

    async def _read_control(self) -> None:
        assert self.ws is not None
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.control_events.append(json.loads(message.data))
