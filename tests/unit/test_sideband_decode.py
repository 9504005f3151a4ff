"""The sideband's hot path: only the events capture reads are decoded, exactly as json would."""

from __future__ import annotations

import asyncio
import json
import string
from collections.abc import AsyncIterator, Container
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from engram_voice.credentials import Secret, StaticKeySource
from engram_voice.emulator.events import EventFactory, new_id
from engram_voice.realtime.calls.capture import CAPTURED_EVENTS
from engram_voice.realtime.calls.sideband import Sideband, decode_event
from engram_voice.realtime.endpoints import Endpoint
from tests.support.polling import async_poll_until
from tests.support.servers import free_port

_TYPES = [*sorted(CAPTURED_EVENTS), "response.output_audio_transcript.delta", "session.updated"]
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=string.printable + "é中\U0001f600", max_size=12)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
_KINDS = st.sampled_from(_TYPES) | st.text(max_size=8) | _SCALARS | st.lists(_SCALARS, max_size=2)


def _old_decode(data: str, events: Container[str] | None) -> dict[str, Any] | None:
    """Decode as the sideband did before (json.loads, then capture's own type check)."""
    try:
        event = json.loads(data)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    kind = event.get("type")
    if events is not None and (not isinstance(kind, str) or kind not in events):
        return None
    return event


@st.composite
def _messages(draw: st.DrawFn) -> str:
    """Draw a sideband text message: an event (type anywhere, any spacing) or other JSON."""
    fields = draw(st.dictionaries(st.text(max_size=6), _VALUES, max_size=5))
    if draw(st.booleans()):
        fields["type"] = draw(_KINDS)
    value: Any = fields if draw(st.integers(0, 9)) else draw(_VALUES)
    spacing = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]))
    text = json.dumps(value, separators=spacing, ensure_ascii=draw(st.booleans()))
    return draw(st.sampled_from([text, text[:-1], f" {text}\n", text + "x"]))


@settings(max_examples=400, deadline=None)
@given(data=_messages(), filtered=st.booleans())
def test_decode_event_agrees_with_json_on_every_message(data: str, filtered: bool) -> None:
    """Any message (valid or not, NaN, huge numbers, any key order) decodes as json.loads would."""
    events = CAPTURED_EVENTS if filtered else None
    new, old = decode_event(data, events), _old_decode(data, events)
    assert json.dumps(new) == json.dumps(old)


class _Upstream:
    """A loopback WebSocket server playing one conversation turn to whoever joins."""

    def __init__(self, events: list[dict[str, Any]]) -> None:
        self.events = events
        self.extensions: list[str | None] = []

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """Accept (deflate allowed, as Azure and the emulator may), send the turn, close."""
        self.extensions.append(request.headers.get("Sec-WebSocket-Extensions"))
        ws = web.WebSocketResponse(compress=True)
        await ws.prepare(request)
        for event in self.events:
            await ws.send_str(json.dumps(event))
        await ws.close()
        return ws


def _turn() -> list[dict[str, Any] | None]:
    """Return every event the emulator plays for one turn (None: not in its vocabulary)."""
    events = EventFactory("conv_1")
    user, answer, response = new_id("item"), new_id("item"), new_id("resp")
    done = EventFactory.assistant_item(answer, "Hello there.")
    return [
        events.speech_started(user, 0),
        events.speech_stopped(user, 900),
        events.committed(user, None),
        events.item_added(EventFactory.user_item(user), None),
        events.item_done(EventFactory.user_item(user), None),
        events.response_created(response, "marin"),
        events.item_added(EventFactory.assistant_item(answer), user),
        events.output_audio_started(response),
        events.transcript_delta(response, answer, "Hello "),
        events.transcription_completed(user, "Hi."),
        events.transcript_delta(response, answer, "there."),
        events.transcript_done(response, answer, "Hello there."),
        events.item_done(done, user),
        events.response_done(response, "marin", done),
        events.output_audio_stopped(response),
        {"type": "error", "error": {"message": "not for capture"}},
    ]


@pytest.fixture(name="upstream")
async def fixture_upstream() -> AsyncIterator[tuple[_Upstream, str]]:
    """Serve :class:`_Upstream` on 127.0.0.1 and yield it with its base URL."""
    upstream = _Upstream([e for e in _turn() if e is not None])
    app = web.Application()
    app.router.add_get("/openai/v1/realtime", upstream.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield upstream, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("events", [CAPTURED_EVENTS, frozenset({"response.done"}), None])
async def test_only_the_wanted_event_types_reach_on_event_in_order(
    upstream: tuple[_Upstream, str], events: frozenset[str] | None
) -> None:
    """The sideband hands on exactly the wanted types, in order, and offers no compression."""
    server, url = upstream
    received: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        sideband = Sideband(
            http=http,
            endpoint=Endpoint(url),
            call_id="rtc_1",
            credentials=StaticKeySource(Secret("k" * 32)),
            connect_timeout=5.0,
            on_event=received.append,
            events=events,
            reconnects=0,
        )
        sideband.start()
        try:
            await async_poll_until(lambda: sideband.state == "lost", timeout=10, what="the end")
        finally:
            await asyncio.wait_for(sideband.close(), timeout=10)
    assert received == [e for e in server.events if events is None or e["type"] in events]
    assert server.extensions == [None]  # permessage-deflate is never offered
