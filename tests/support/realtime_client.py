"""A WebRTC caller for the realtime emulator that behaves like the browser client.

It sends a generated 48 kHz tone as its microphone, opens the ``oai-events`` data
channel, posts its SDP offer with an ephemeral key and records every audio frame and
server event it receives. ICE stays on 127.0.0.1; every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from engram_voice.emulator import loopback_ice
from engram_voice.emulator.audio import ToneTrack
from tests.support.polling import async_poll_until

__all__ = ["RealtimeTestClient", "mint_body"]

CALLS_PATH = "/openai/v1/realtime/calls"


def mint_body(
    *,
    instructions: str = "You are Elena, one of Engram's agents. You are warm.",
    voice: str = "marin",
    model: str = "gpt-realtime",
    seconds: int = 60,
) -> dict[str, Any]:
    """Return a GA ``client_secrets`` body like the one the service sends."""
    return {
        "expires_after": {"anchor": "created_at", "seconds": seconds},
        "session": {
            "type": "realtime",
            "model": model,
            "instructions": instructions,
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
                    "turn_detection": {
                        "type": "server_vad",
                        "threshold": 0.5,
                        "prefix_padding_ms": 300,
                        "silence_duration_ms": 500,
                        "create_response": True,
                        "interrupt_response": True,
                    },
                },
                "output": {"voice": voice},
            },
        },
    }


class RealtimeTestClient:
    """An aiortc peer that calls the emulator the way the browser does."""

    def __init__(self, *, channel_label: str = "oai-events", microphone: bool = True) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.events: list[dict[str, Any]] = []
        self.frames_received = 0
        self.microphone: ToneTrack | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._offered = False
        self.channel = self.pc.createDataChannel(channel_label)
        self.channel.on("message", self._on_message)
        if microphone:
            self.microphone = ToneTrack()
            self.microphone.speaking = True
            self.pc.addTrack(self.microphone)
        self.pc.on("track", self._on_track)

    async def offer(self) -> str:
        """Create the SDP offer (gathering a 127.0.0.1 candidate) and return it."""
        if not self._offered:
            with loopback_ice():
                await self.pc.setLocalDescription(await self.pc.createOffer())
            self._offered = True
        sdp: str = self.pc.localDescription.sdp
        return sdp

    async def call(
        self, http: httpx.AsyncClient, ephemeral_key: str, *, filtered: bool = True
    ) -> httpx.Response:
        """Post the offer to ``/calls``; on 201 apply the SDP answer."""
        query = "?webrtcfilter=on" if filtered else ""
        response = await http.post(
            CALLS_PATH + query,
            content=await self.offer(),
            headers={"Authorization": f"Bearer {ephemeral_key}", "Content-Type": "application/sdp"},
        )
        if response.status_code == 201:
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=response.text, type="answer")
            )
        return response

    async def wait_connected(self, within: float = 20.0) -> None:
        """Wait until the peer connection is ``connected``."""
        await async_poll_until(
            lambda: self.pc.connectionState == "connected", timeout=within, what="connected"
        )

    def types(self) -> list[str]:
        """Return the types of the server events received so far, in order."""
        return [event["type"] for event in self.events]

    async def wait_for_events(self, event_type: str, count: int = 1, within: float = 20.0) -> None:
        """Wait until ``count`` events of ``event_type`` have arrived."""
        await async_poll_until(
            lambda: self.types().count(event_type) >= count,
            timeout=within,
            what=f"{count} x {event_type} (got {self.types()})",
        )

    def send(self, event: dict[str, Any]) -> None:
        """Send a client event on the data channel."""
        self.channel.send(json.dumps(event))

    async def close(self) -> None:
        """Close the peer connection and stop reading audio."""
        if self.microphone is not None:
            self.microphone.stop()
        await asyncio.wait_for(self.pc.close(), 10)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)

    def _on_message(self, message: str | bytes) -> None:
        self.events.append(json.loads(message))

    def _on_track(self, track: Any) -> None:
        task = asyncio.create_task(self._consume(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _consume(self, track: Any) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            self.frames_received += 1
