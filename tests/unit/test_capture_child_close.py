"""The capture process's close of a call always flushes its capture and forgets the call."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest

from engram_voice.memory.schemas import EnrichMessage
from engram_voice.realtime.calls.capture import TurnCapture
from engram_voice.realtime.calls.capture_child import CaptureChild, _Held
from engram_voice.realtime.calls.capture_wire import Channel, Request


class FailingSideband:
    """A sideband stand-in whose close fails as a broken socket's may."""

    state = "connected"

    def __init__(self, failure: BaseException) -> None:
        self.failure = failure

    async def close(self) -> None:
        """Fail."""
        raise self.failure


class Stored:
    """What a store returns."""

    def __init__(self, accepted: int) -> None:
        self.accepted = accepted
        self.duplicates = 0


@pytest.mark.parametrize("failure", [OSError("reset"), RuntimeError("closing"), ValueError("x")])
async def test_a_failing_sideband_close_still_flushes_the_capture_and_forgets_the_call(
    failure: Exception,
) -> None:
    """Turns held at the hang-up are stored and the call dropped though the socket's close fails."""
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    channel = Channel(reader, writer)
    stored: list[str] = []

    async def store(messages: Sequence[EnrichMessage]) -> Stored:
        stored.extend(m.id for m in messages)
        return Stored(len(messages))

    async with aiohttp.ClientSession() as http:
        child = CaptureChild(channel, http)
        capture = TurnCapture(upstream="azure-openai", call_id="rtc_x", session_id="vs_x")
        events: list[dict[str, Any]] = [
            {"type": "conversation.item.added", "previous_item_id": None,
             "item": {"id": "item_a", "type": "message", "role": "user"}},
            {"type": "conversation.item.added", "previous_item_id": "item_a",
             "item": {"id": "item_b", "type": "message", "role": "assistant"}},
            {"type": "response.output_audio_transcript.done", "item_id": "item_b",
             "transcript": "Held behind item_a."},
        ]  # fmt: skip
        for event in events:
            capture.feed(event)
        capture.bind(store)
        child._calls["rtc_x"] = _Held(capture, FailingSideband(failure))  # type: ignore[arg-type]
        child.handle(Request(id=1, op="close", call="rtc_x"))
        await asyncio.wait_for(asyncio.gather(*child._tasks), timeout=10)
        assert "item_b" in stored
        assert "rtc_x" not in child._calls
    channel.close()
    theirs.close()
