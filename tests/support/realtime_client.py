"""A WebRTC caller for the realtime emulator that behaves like the browser client.

It sends a generated 48 kHz tone as its microphone, opens the ``oai-events`` data
channel, posts its SDP offer with an ephemeral key and records every audio frame and
server event it receives. ICE stays on 127.0.0.1; every wait has a deadline.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from aiortc import RTCSessionDescription

from tests.support.browser_peer import BrowserPeer

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


class RealtimeTestClient(BrowserPeer):
    """An aiortc peer that calls the emulator the way the browser does."""

    def __init__(self, *, channel_label: str = "oai-events", microphone: bool = True) -> None:
        super().__init__(channel_label=channel_label, microphone=microphone)

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

    def send(self, event: dict[str, Any]) -> None:
        """Send a client event on the data channel."""
        self.channel.send(json.dumps(event))
