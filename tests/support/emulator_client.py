"""Talking to an emulator in tests: mint, follow a call, read its sideband, order its turns.

Shared by the emulator's own tests and the service's capture tests; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import httpx

from tests.support.emulator_harness import TestKeys
from tests.support.realtime_client import mint_body

__all__ = [
    "ELENA",
    "MINT",
    "call_id_of",
    "call_state",
    "conversation_of",
    "mint",
    "read_until",
    "sideband_url",
]

MINT = "/openai/v1/realtime/client_secrets"
ELENA = "You are Elena, one of Engram's agents. You are warm and expressive."


async def mint(http: httpx.AsyncClient, keys: TestKeys, instructions: str = ELENA) -> str:
    """Mint an ephemeral key for an agent with ``instructions``; return its value."""
    response = await http.post(
        MINT, headers={"api-key": keys.key1}, json=mint_body(instructions=instructions)
    )
    assert response.status_code == 200, response.text
    value: str = response.json()["value"]
    return value


async def call_state(http: httpx.AsyncClient, call_id: str) -> dict[str, Any]:
    """Return the emulator's record of call ``call_id``."""
    calls = (await http.get("/_emulator/state")).json()["calls"]
    return next(c for c in calls if c["call_id"] == call_id)


def call_id_of(response: httpx.Response) -> str:
    """Return the call id from the Location of a 201 answer."""
    return response.headers["location"].rsplit("/", 1)[1]


def conversation_of(events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """Assemble (role, item id, transcript) in conversation order, as the browser client does.

    Items are ordered by following ``previous_item_id`` links; user transcripts come from
    ``conversation.item.input_audio_transcription.completed`` and assistant transcripts from
    ``response.output_audio_transcript.done``, whenever they arrive.
    """
    added = [e for e in events if e["type"] == "conversation.item.added"]
    after = {e["previous_item_id"]: e["item"] for e in added}
    assert len(after) == len(added), "two items claim the same predecessor"
    user = {
        e["item_id"]: e["transcript"]
        for e in events
        if e["type"] == "conversation.item.input_audio_transcription.completed"
    }
    assistant = {
        e["item_id"]: e["transcript"]
        for e in events
        if e["type"] == "response.output_audio_transcript.done"
    }
    ordered, previous = [], None
    while previous in after:
        item = after[previous]
        transcripts = user if item["role"] == "user" else assistant
        ordered.append((item["role"], item["id"], transcripts[item["id"]]))
        previous = item["id"]
    assert len(ordered) == len(added), "the previous_item_id links do not form one chain"
    return ordered


def sideband_url(base_url: str, call_id: str) -> str:
    """Return the sideband URL of ``call_id`` on the emulator."""
    return f"ws{base_url.removeprefix('http')}/openai/v1/realtime?call_id={call_id}"


async def read_until(
    socket: aiohttp.ClientWebSocketResponse, event_type: str, count: int = 1
) -> list[dict[str, Any]]:
    """Read events until ``count`` of ``event_type`` arrived (bounded by the session timeout)."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while sum(e["type"] == event_type for e in events) < count:
            message = await socket.receive()
            assert message.type == aiohttp.WSMsgType.TEXT, message
            events.append(json.loads(message.data))
    return events
