import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from engram_voice.emulator import create_emulator_app, emulator_state
from engram_voice.emulator.events import WEBRTC_FILTERED_EVENTS
from tests.support.emulator_client import ELENA, call_id_of, call_state, conversation_of, mint
from tests.support.emulator_harness import TestKeys, emulator_config, wall_clock
from tests.support.openai_contract import validate_server_event
from tests.support.polling import async_poll_until
from tests.support.realtime_client import RealtimeTestClient
from tests.support.servers import serve_app

CALLS = "/openai/v1/realtime/calls"
MARCUS = "You are Marcus, one of Engram's agents. You are clear and professional."
SESSION_EXTRAS = ("session.id", "session.object", "session.expires_at")


@pytest.fixture(name="keys")
def fixture_keys() -> TestKeys:
    """Provide fresh keys for one emulator."""
    return TestKeys()


@pytest.fixture(name="base_url")
def fixture_base_url(keys: TestKeys) -> Iterator[str]:
    """Serve a fresh emulator taking a turn every 0.5 s, at most 3 turns per call."""
    app = create_emulator_app(emulator_config(keys), clock=wall_clock())
    with serve_app(app, ready_path="/healthz") as url:
        yield url


@pytest.fixture(name="http")
async def fixture_http(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """Provide an HTTP client for the emulator with a generous timeout."""
    async with httpx.AsyncClient(base_url=base_url, timeout=20) as client:
        yield client


@pytest.fixture(name="caller")
async def fixture_caller() -> AsyncIterator[RealtimeTestClient]:
    """Provide a WebRTC caller with a tone microphone, closed after the test."""
    client = RealtimeTestClient()
    yield client
    await client.close()


def check_responses(events: list[dict[str, Any]]) -> None:
    """Check that each response's deltas add up to its transcript inside started/stopped."""
    for done in (e for e in events if e["type"] == "response.output_audio_transcript.done"):
        response_id = done["response_id"]
        mine = [e for e in events if e.get("response_id") == response_id]
        kinds = [e["type"] for e in mine]
        assert kinds[0] == "output_audio_buffer.started"
        assert kinds[-1] == "output_audio_buffer.stopped"
        deltas = [e["delta"] for e in mine if e["type"].endswith("transcript.delta")]
        assert "".join(deltas) == done["transcript"]
        assert all(e["item_id"] == done["item_id"] for e in mine if "item_id" in e)


async def test_a_call_exchanges_audio_and_ordered_transcripts(http, keys, caller):
    """A caller connects over loopback, hears audio and receives SDK-valid, ordered turns."""
    answer = await caller.call(http, await mint(http, keys))

    assert answer.status_code == 201
    assert answer.headers["content-type"].startswith("application/sdp")
    assert answer.headers["location"] == f"{CALLS}/{call_id_of(answer)}"
    assert call_id_of(answer).startswith("rtc_")
    await caller.wait_connected()
    await caller.wait_for_events("response.output_audio_transcript.done", count=2)
    await caller.wait_for_events("output_audio_buffer.stopped", count=2)
    await async_poll_until(
        lambda: caller.frames_received >= 50, timeout=20, what="1 s of emulator audio"
    )

    events = list(caller.events)
    for event in events:
        validate_server_event(event)
    assert set(caller.types()) <= WEBRTC_FILTERED_EVENTS
    assert len({e["event_id"] for e in events}) == len(events)
    conversation = conversation_of(events)
    assert [role for role, _, _ in conversation][:4] == ["user", "assistant", "user", "assistant"]
    assert conversation[0][2] == "Hi Elena, can you hear me?"
    assert "Elena" in conversation[1][2]
    check_responses(events)
    first_user = conversation[0][1]
    started, stopped = (
        next(e for e in events if e["type"] == f"input_audio_buffer.speech_{kind}")
        for kind in ("started", "stopped")
    )
    assert started["item_id"] == stopped["item_id"] == first_user
    assert stopped["audio_end_ms"] >= started["audio_start_ms"]
    record = await call_state(http, call_id_of(answer))
    assert record["agent"] == "Elena"
    assert record["connection_state"] == "connected"
    assert record["audio_frames_received"] > 0
    assert record["data_channel"] == {"label": "oai-events", "state": "open"}


async def test_the_same_key_cannot_create_a_second_call(http, keys, caller):
    """After one call, a second offer with the same ek is refused as already used."""
    value = await mint(http, keys)
    first = await caller.call(http, value)
    second_caller = RealtimeTestClient()
    try:
        second = await second_caller.call(http, value)
    finally:
        await second_caller.close()

    assert first.status_code == 201
    assert second.status_code == 401
    assert second.json()["error"]["code"] == "ephemeral_token_already_used"


async def test_hangup_ends_the_call(http, keys, caller):
    """A server-side hangup with a resource key closes the peer; a repeat is harmless."""
    answer = await caller.call(http, await mint(http, keys))
    await caller.wait_connected()
    hangup = f"{CALLS}/{call_id_of(answer)}/hangup"

    first = await http.post(hangup, headers={"api-key": keys.key2})
    again = await http.post(hangup, headers={"Authorization": f"Bearer {keys.bearer}"})

    assert (first.status_code, again.status_code) == (200, 200)
    record = await call_state(http, call_id_of(answer))
    assert record["active"] is False
    assert record["end_reason"] == "hangup"
    snapshot = (await http.get("/_emulator/state")).json()
    assert snapshot["active_calls"] == 0
    assert snapshot["counters"]["hangup"] == {"200": 2}
    assert record["connection_state"] == "closed"
    await async_poll_until(
        lambda: caller.channel.readyState == "closed",
        timeout=20,
        what="the caller's channel to close",
    )


async def test_without_the_filter_every_event_arrives_and_is_valid(http, keys, caller):
    """Without webrtcfilter the caller also gets session, response and commit events."""
    answer = await caller.call(http, await mint(http, keys), filtered=False)
    await caller.wait_for_events("response.done", count=1)

    types = caller.types()
    for event in caller.events:
        validate_server_event(event, allow_extra=SESSION_EXTRAS)
    assert answer.status_code == 201
    assert types[0] == "session.created"
    assert caller.events[0]["session"]["instructions"] == ELENA
    for expected in ("input_audio_buffer.committed", "conversation.item.done", "response.created"):
        assert expected in types
    assert not set(types) <= WEBRTC_FILTERED_EVENTS


async def test_client_events_are_handled(http, keys, caller):
    """session.update renames the agent, response.create answers, bad events get errors."""
    answer = await caller.call(http, await mint(http, keys), filtered=False)
    await caller.wait_for_events("session.created")

    caller.send({"type": "session.update", "session": {"type": "realtime", "instructions": MARCUS}})
    await caller.wait_for_events("session.updated")
    caller.send({"type": "response.create", "event_id": "evt_client_1"})
    caller.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "Remember my sister Anna."}],
            },
        }
    )
    caller.channel.send("this is not json")
    caller.send({"type": "response.dance"})
    await caller.wait_for_events("error", count=2)
    await caller.wait_for_events("response.output_audio_transcript.done", count=1)

    for event in caller.events:
        validate_server_event(event, allow_extra=SESSION_EXTRAS)
    updated = next(e for e in caller.events if e["type"] == "session.updated")
    assert updated["session"]["instructions"] == MARCUS
    greetings = [
        e["transcript"]
        for e in caller.events
        if e["type"] == "response.output_audio_transcript.done"
    ]
    assert any("Marcus" in text for text in greetings)
    created = [
        e["item"]
        for e in caller.events
        if e["type"] == "conversation.item.added" and e["item"]["role"] == "user"
    ]
    assert any(i["content"][0].get("text") == "Remember my sister Anna." for i in created)
    record = await call_state(http, call_id_of(answer))
    assert record["agent"] == "Marcus"
    assert record["active"] is True
    assert record["client_events"]["response.dance"] == 1


async def test_turns_stop_at_the_maximum(http, keys, caller):
    """A call plays at most EMULATOR_MAX_TURNS user turns, then the emulator listens quietly."""
    answer = await caller.call(http, await mint(http, keys))
    call_id = call_id_of(answer)

    async def finished() -> bool:
        return bool((await call_state(http, call_id))["conversation_finished"])

    await async_poll_until(finished, timeout=30, what="the conversation to finish")
    await caller.wait_for_events("output_audio_buffer.stopped", count=3)

    record = await call_state(http, call_id)
    assert record["turns"] == 3
    assert caller.types().count("conversation.item.input_audio_transcription.completed") == 3


async def test_no_turns_are_taken_while_no_audio_arrives(http, keys):
    """A caller without a microphone gets no transcript events; the emulator waits for audio."""
    silent = RealtimeTestClient(microphone=False)
    try:
        answer = await silent.call(http, await mint(http, keys))
        await silent.wait_connected()

        async def waited_twice() -> bool:
            return int((await call_state(http, call_id_of(answer)))["idle_ticks"]) >= 2

        await async_poll_until(waited_twice, timeout=20, what="two turn intervals without audio")
        record = await call_state(http, call_id_of(answer))
    finally:
        await silent.close()

    assert record["turns"] == 0
    assert record["audio_frames_received"] == 0
    assert silent.events == []


async def test_only_the_oai_events_channel_is_served(http, keys):
    """A data channel with another label is ignored and never receives events."""
    stranger = RealtimeTestClient(channel_label="my-events")
    try:
        answer = await stranger.call(http, await mint(http, keys))
        await stranger.wait_connected()

        async def ignored() -> bool:
            return (await call_state(http, call_id_of(answer)))["ignored_channels"] == ["my-events"]

        await async_poll_until(
            ignored, timeout=20, what="the foreign channel to be seen and ignored"
        )
        record = await call_state(http, call_id_of(answer))
    finally:
        await stranger.close()

    assert record["data_channel"] is None
    assert record["events_sent"] == {}
    assert stranger.events == []


async def test_concurrent_calls_are_bound_to_their_own_sessions(http, keys):
    """Two simultaneous calls each speak as the agent their own key was minted for."""
    elena, marcus = RealtimeTestClient(), RealtimeTestClient()
    try:
        answers = await asyncio.gather(
            elena.call(http, await mint(http, keys, ELENA)),
            marcus.call(http, await mint(http, keys, MARCUS)),
        )
        await elena.wait_for_events("response.output_audio_transcript.done")
        await marcus.wait_for_events("response.output_audio_transcript.done")
    finally:
        await asyncio.gather(elena.close(), marcus.close())

    assert [a.status_code for a in answers] == [201, 201]
    assert "Elena" in conversation_of(elena.events)[1][2]
    assert "Marcus" in conversation_of(marcus.events)[1][2]
    item_ids = {e["item"]["id"] for e in elena.events + marcus.events if "item" in e}
    assert len(item_ids) == len([e for e in elena.events + marcus.events if "item" in e])


async def test_public_url_makes_the_location_absolute(keys):
    """With EMULATOR_PUBLIC_URL set, Location is an absolute URL like Azure's."""
    app = create_emulator_app(
        emulator_config(keys, public_url="http://127.0.0.1:8600"), clock=wall_clock()
    )
    caller = RealtimeTestClient()
    with serve_app(app, ready_path="/healthz") as url:
        async with httpx.AsyncClient(base_url=url, timeout=20) as http:
            try:
                answer = await caller.call(http, await mint(http, keys))
            finally:
                await caller.close()

    assert answer.status_code == 201
    assert answer.headers["location"].startswith(
        "http://127.0.0.1:8600/openai/v1/realtime/calls/rtc_"
    )


async def test_shutdown_closes_open_calls(keys):
    """Stopping the emulator closes every open peer connection within the lifespan."""
    app = create_emulator_app(emulator_config(keys), clock=wall_clock())
    caller = RealtimeTestClient()
    try:
        with serve_app(app, ready_path="/healthz") as url:
            async with httpx.AsyncClient(base_url=url, timeout=20) as http:
                answer = await caller.call(http, await mint(http, keys))
                await caller.wait_connected()
        state = emulator_state(app)
        call = state.find_call(call_id_of(answer))
    finally:
        await caller.close()

    assert call is not None
    assert call.end_reason == "emulator_shutdown"
    assert state.active_calls() == 0
