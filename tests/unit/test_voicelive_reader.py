"""The Voice Live control reader decodes only capture's events and errors, as json would."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from engram_voice.realtime.calls import voicelive_events
from engram_voice.realtime.calls.capture import CAPTURED_EVENTS, TurnCapture
from engram_voice.realtime.calls.voicelive import VoiceLiveCall

_TYPES = [*sorted(CAPTURED_EVENTS), "error", "response.audio_transcript.delta", "session.updated"]
_IDS = st.sampled_from(["item_a", "item_b", "item_c", "item_d"])
_TEXT = st.text(max_size=12)


@st.composite
def _message(draw: st.DrawFn) -> str:
    """Draw one control message: an event capture reads, an error, another event or junk."""
    kind = draw(st.sampled_from(_TYPES))
    event: dict[str, Any] = {"type": kind, "event_id": "ev_1"}
    item_id = draw(_IDS)
    if kind.startswith("conversation.item.") and "transcription" not in kind:
        role = draw(st.sampled_from(["user", "assistant", "system"]))
        event["item"] = {"id": item_id, "type": "message", "role": role}
        event["previous_item_id"] = draw(st.none() | _IDS)
    elif kind == "response.done":
        event["response"] = {"usage": {"input_tokens": draw(st.integers(0, 99))}}
    elif kind == "error":
        event["error"] = {"type": draw(_TEXT), "code": draw(st.none() | _TEXT)}
    else:
        event["item_id"], event["transcript"] = item_id, draw(_TEXT)
    text = json.dumps(event, ensure_ascii=draw(st.booleans()))
    return draw(st.sampled_from([text, text, text[:-1], "[1, 2]", '"error"', "NaN"]))


class _IdleSocket:
    """A control socket that never delivers (the test feeds the reader's hook directly)."""

    close_code = None

    async def receive(self) -> Any:
        """Wait until cancelled."""
        await asyncio.Event().wait()

    async def close(self) -> None:
        """Nothing to close."""


def _capture(usage: list[tuple[str, Any]]) -> TurnCapture:
    return TurnCapture(
        upstream="voice-live",
        call_id="rtc_1",
        session_id="vs_1",
        on_usage=lambda call, used: usage.append((call, used)),
    )


def _state(capture: TurnCapture) -> list[tuple[str, str]]:
    capture._release(final=True)
    return [(turn.id, turn.text) for turn in capture._ready]


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(_message(), max_size=25))
def test_the_reader_captures_and_logs_exactly_as_decoding_every_message_did(
    messages: list[str],
) -> None:
    """Any run of control messages yields the same turns, usage and error logs as json.loads."""

    async def run() -> tuple[Any, ...]:
        old_usage: list[tuple[str, Any]] = []
        old = _capture(old_usage)
        with capture_logs() as old_logs:
            for data in messages:  # the reader before: every message parsed and fed
                event = voicelive_events.parse_event(data)
                if '"error"' in data and event.get("type") == "error":
                    voicelive_events.log_control_error(event, "rtc_1")
                old.feed(event)
        new_usage: list[tuple[str, Any]] = []
        new = _capture(new_usage)
        ws = cast("aiohttp.ClientWebSocketResponse", _IdleSocket())
        call = VoiceLiveCall(
            ws=ws, sdp_answer="v=0", upstream_call_id="rtc_1", session_id="vs_1", capture=new
        )
        with capture_logs() as new_logs:
            for data in messages:
                call._deliver(data)
        call._reader.cancel()
        return _state(old), old_usage, old_logs, _state(new), new_usage, new_logs

    old_turns, old_usage, old_logs, new_turns, new_usage, new_logs = asyncio.run(run())
    assert new_turns == old_turns
    assert new_usage == old_usage
    errors = [log for log in new_logs if log["event"] == "realtime.voicelive_call_error"]
    assert errors == [log for log in old_logs if log["event"] == "realtime.voicelive_call_error"]
