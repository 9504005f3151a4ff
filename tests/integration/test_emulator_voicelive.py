"""The emulator's Voice Live WebRTC control channel, over real sockets and a real peer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
import msgspec
import pytest

from engram_voice.emulator import EmulatorConfig, create_emulator_app
from engram_voice.emulator.events import VOICE_LIVE_CHANNEL_EVENTS
from tests.support.emulator_harness import TestKeys, emulator_config, wall_clock
from tests.support.polling import async_poll_until
from tests.support.servers import serve_app
from tests.support.voicelive_client import VoiceLiveTestClient, voicelive_url

PREVIEW = "2026-01-01-preview"
ELENA_VOICE = "en-US-Ava:DragonHDLatestNeural"
ELENA_SESSION: dict[str, Any] = {
    "instructions": "You are Elena, one of Engram's agents. You are warm and expressive.",
    "voice": {"type": "azure-standard", "name": ELENA_VOICE, "temperature": 0.8},
    "turn_detection": {"type": "azure_semantic_vad", "silence_duration_ms": 500},
    "input_audio_noise_reduction": {"type": "azure_deep_noise_suppression"},
    "input_audio_echo_cancellation": {"type": "server_echo_cancellation"},
    "input_audio_transcription": {"model": "azure-speech", "language": "en"},
}
GA_TRANSCRIPT_NAMES = (
    "response.output_audio_transcript.delta",
    "response.output_audio_transcript.done",
)


def config_for(keys: TestKeys, **changes: Any) -> EmulatorConfig:
    """Return a fast emulator configuration for ``keys`` with Voice Live ``changes``."""
    return msgspec.structs.replace(emulator_config(keys), **changes)


@pytest.fixture(name="keys")
def fixture_keys() -> TestKeys:
    """Provide fresh keys for one emulator."""
    return TestKeys()


@pytest.fixture(name="base_url")
def fixture_base_url(keys: TestKeys) -> Iterator[str]:
    """Serve a fresh emulator (turns every 0.5 s, no connection quota)."""
    app = create_emulator_app(config_for(keys), clock=wall_clock())
    with serve_app(app, ready_path="/healthz") as url:
        yield url


@pytest.fixture(name="http")
async def fixture_http() -> AsyncIterator[aiohttp.ClientSession]:
    """Provide an aiohttp session for WebSockets and the emulator's controls."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture(name="caller")
async def fixture_caller() -> AsyncIterator[VoiceLiveTestClient]:
    """Provide a Voice Live caller with a tone microphone, closed after the test."""
    client = VoiceLiveTestClient()
    yield client
    await client.close()


async def state_of(base_url: str) -> dict[str, Any]:
    """Return the emulator's ``/_emulator/state``."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        answer: dict[str, Any] = (await client.get("/_emulator/state")).json()
        return answer


async def record_of(base_url: str, index: int = -1) -> dict[str, Any]:
    """Return the emulator's record of one Voice Live connection (the latest by default)."""
    record: dict[str, Any] = (await state_of(base_url))["voicelive_calls"][index]
    return record


def url_for(base_url: str, **query: str) -> str:
    """Return the control channel URL with the preview api-version and model by default."""
    return voicelive_url(base_url, **{"api_version": PREVIEW, "model": "gpt-realtime", **query})


async def refused_status(http: aiohttp.ClientSession, url: str, headers=None) -> int:
    """Return the HTTP status with which the upgrade to ``url`` is refused."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(url, headers=headers or {})
    return refused.value.status


async def set_fault(base_url: str, **fault: Any) -> None:
    """Inject a Voice Live fault through ``POST /_emulator/faults``."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        answer = await client.post("/_emulator/faults", json={"target": "voicelive", **fault})
    assert answer.status_code == 200, answer.text


async def started_call(http, base_url, keys, caller, session=ELENA_SESSION) -> dict[str, Any]:
    """Connect ``caller`` with key 1, set up the call with ``session``; return the answer."""
    await caller.connect(http, url_for(base_url), {"api-key": keys.key1})
    answer = await caller.start(session)
    assert answer["type"] == "rtc.call.sdp.created", answer
    return answer


# -- transport and auth ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("form", "expected"),
    [
        ("header api-key", "key1"),
        ("query api-key", "key2"),
        ("header bearer", "bearer"),
        ("query Authorization", "bearer"),
        ("query authorization", "bearer"),
    ],
)
async def test_every_credential_form_opens_the_channel(http, keys, base_url, form, expected):
    """Each documented credential form upgrades; the record names the slot, never the value."""
    headers: dict[str, str] = {}
    query: dict[str, str] = {}
    if form == "header api-key":
        headers["api-key"] = keys.key1
    elif form == "query api-key":
        query["api_key"] = keys.key2
    elif form == "header bearer":
        headers["Authorization"] = f"Bearer {keys.bearer}"
    else:
        query[form.split()[1]] = f"Bearer {keys.bearer}"
    caller = VoiceLiveTestClient()
    try:
        await caller.connect(http, url_for(base_url, **query), headers)
        await caller.send({"type": "rtc.call.sdp.create"})
        await caller.wait_control("rtc.call.error")
    finally:
        await caller.close()

    record = await record_of(base_url)
    assert record["auth"] == expected
    text = str(await state_of(base_url))
    assert keys.key1 not in text
    assert keys.key2 not in text
    assert keys.bearer not in text


@pytest.mark.parametrize(
    "headers_and_query",
    [
        ({"api-key": "0" * 32}, {}),
        ({}, {"api_key": "0" * 32}),
        ({"Authorization": "Bearer not-a-known-token"}, {}),
        ({}, {"Authorization": "Bearer not-a-known-token"}),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, {}),
        ({}, {}),
    ],
    ids=[
        "wrong-header-key",
        "wrong-query-key",
        "wrong-bearer",
        "wrong-query-bearer",
        "basic",
        "none",
    ],
)
async def test_a_wrong_or_missing_credential_is_refused_with_401(
    http, keys, base_url, headers_and_query
):
    """A wrong, foreign-scheme or missing credential gets HTTP 401 at the upgrade."""
    headers, query = headers_and_query

    status = await refused_status(http, url_for(base_url, **query), headers)

    assert status == 401
    assert (await state_of(base_url))["counters"]["voicelive"] == {"401": 1}


@pytest.mark.parametrize(
    ("api_version", "status"),
    [(None, 400), ("2026-07-15", 404), ("v1", 404), ("2025-10-01", 400), ("", 400)],
)
async def test_api_versions_without_calls_are_refused(http, keys, base_url, api_version, status):
    """/calls needs a preview api-version: the GA one and v1 answer 404, others 400."""
    if api_version is None:
        url = voicelive_url(base_url, model="gpt-realtime")
    else:
        url = url_for(base_url, api_version=api_version)

    assert await refused_status(http, url, {"api-key": keys.key1}) == status


@pytest.mark.parametrize("api_version", ["2026-01-01-preview", "2026-06-01-preview"])
async def test_preview_api_versions_serve_calls(http, keys, base_url, caller, api_version):
    """Both preview api-versions set up a call; the record keeps the version."""
    await caller.connect(http, url_for(base_url, api_version=api_version), {"api-key": keys.key1})
    answer = await caller.start(ELENA_SESSION)

    assert answer["type"] == "rtc.call.sdp.created"
    assert (await record_of(base_url))["api_version"] == api_version


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"model": ""}, 400),
        ({"model": "", "agent_name": "elena"}, 400),
        ({"model": "", "agent_name": "elena", "agent_project_name": "engram"}, 101),
    ],
    ids=["no-model", "agent-without-project", "agent-mode"],
)
async def test_a_model_or_an_agent_is_required(http, keys, base_url, query, status):
    """Without model= (or agent-name + agent-project-name) the upgrade is refused with 400."""
    url = url_for(base_url, **query)
    if status != 101:
        assert await refused_status(http, url, {"api-key": keys.key1}) == status
        return
    ws = await http.ws_connect(url, headers={"api-key": keys.key1})
    await ws.close()
    assert (await record_of(base_url))["agent"] == "elena"


async def test_new_connections_per_minute_are_limited_per_key(http, keys):
    """With a quota of 2 per minute, the third connection with one key gets 429."""
    app = create_emulator_app(
        config_for(keys, voicelive_connections_per_minute=2), clock=wall_clock()
    )
    with serve_app(app, ready_path="/healthz") as base_url:
        for _ in range(2):
            ws = await http.ws_connect(url_for(base_url), headers={"api-key": keys.key1})
            await ws.close()
        third = await refused_status(http, url_for(base_url), {"api-key": keys.key1})
        other = await http.ws_connect(url_for(base_url), headers={"api-key": keys.key2})
        await other.close()

    assert third == 429


# -- signalling --------------------------------------------------------------------------


@pytest.mark.parametrize("offer", [None, "", "   "], ids=["absent", "empty", "blank"])
async def test_a_missing_offer_gets_missing_sdp_and_the_socket_stays_open(
    http, keys, base_url, caller, offer
):
    """rtc.call.sdp.create without an offer answers rtc.call.error missing_sdp; retry works."""
    await caller.connect(http, url_for(base_url), {"api-key": keys.key1})
    event: dict[str, Any] = {"type": "rtc.call.sdp.create"}
    if offer is not None:
        event["sdp_offer"] = offer
    await caller.send(event)
    error = await caller.wait_control("rtc.call.error")
    retry = await caller.start(ELENA_SESSION)

    assert error["operation"] == "rtc.call.sdp.create"
    assert error["error"] == {
        "type": "invalid_request_error",
        "code": "missing_sdp",
        "message": "SDP offer is required",
    }
    assert retry["type"] == "rtc.call.sdp.created"


@pytest.mark.parametrize(
    "offer",
    [
        "hello",
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n",
        "v=0\r\nm=audio nonsense\r\n",
        "v=0\r\n" + "x" * 70_000,
        "bT0wCg==",
    ],
    ids=["text", "no-media", "bad-media", "too-large", "base64"],
)
async def test_an_unparseable_offer_gets_invalid_sdp(http, keys, base_url, caller, offer):
    """An offer that is not SDP (or cannot be applied) answers rtc.call.error invalid_sdp."""
    await caller.connect(http, url_for(base_url), {"api-key": keys.key1})
    await caller.send({"type": "rtc.call.sdp.create", "sdp_offer": offer})
    error = await caller.wait_control("rtc.call.error")

    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["code"] == "invalid_sdp"
    assert (await state_of(base_url))["active_calls"] == 0


@pytest.mark.parametrize(
    "voice",
    [
        {"type": "azure-standard"},
        {"type": "azure-standard", "name": ""},
        {"type": "openai", "name": "en-US-GuyNeural"},
        "en-US-GuyNeural",
        {"type": "robot", "name": "r2"},
        {"type": "azure-standard", "name": "en-US-GuyNeural", "temperature": 3},
        {"type": "azure-custom", "name": "mine"},
    ],
    ids=[
        "no-name",
        "empty-name",
        "azure-name-as-openai",
        "plain-azure-name",
        "unknown-type",
        "temperature",
        "custom-without-endpoint",
    ],
)
async def test_a_bad_inline_voice_fails_the_call_setup(http, keys, base_url, caller, voice):
    """A voice Voice Live cannot speak answers rtc.call.error invalid_session, no session."""
    await caller.connect(http, url_for(base_url), {"api-key": keys.key1})
    answer = await caller.start({**ELENA_SESSION, "voice": voice})

    assert answer["type"] == "rtc.call.error"
    assert answer["error"]["code"] == "invalid_session"
    assert "session.created" not in caller.control_types()
    record = await record_of(base_url)
    assert record["session"]["voice"] == voice
    assert record["errors"] == ["invalid_session"]


async def test_a_call_is_set_up_in_order_and_speaks_voice_live_events(http, keys, base_url, caller):
    """session.created, session.updated, rtc.call.sdp.created; then audio and beta events."""
    answer = await started_call(http, base_url, keys, caller)
    await caller.wait_connected()
    await caller.wait_for_events("response.audio_transcript.done", count=2)
    await async_poll_until(
        lambda: caller.frames_received >= 50, timeout=20, what="1 s of emulator audio"
    )

    assert caller.control_types() == ["session.created", "session.updated", "rtc.call.sdp.created"]
    created, updated, _ = caller.control_events
    assert created["session"]["id"].startswith("sess_")
    assert created["session"]["model"] == "gpt-realtime"
    assert updated["session"]["voice"]["name"] == ELENA_VOICE
    assert updated["session"]["turn_detection"]["type"] == "azure_semantic_vad"
    assert answer["rtc_call_id"].startswith("rtc_")
    assert answer["sdp_answer"].startswith("v=0")
    assert "webrtc-datachannel" in answer["sdp_answer"]
    every = caller.events + caller.control_events
    assert len({e["event_id"] for e in every}) == len(every)
    assert set(caller.types()) <= VOICE_LIVE_CHANNEL_EVENTS
    assert not set(caller.types()) & set(GA_TRANSCRIPT_NAMES)
    done = [e for e in caller.events if e["type"] == "response.audio_transcript.done"]
    assert "Elena" in done[0]["transcript"]
    heard = [
        e["transcript"]
        for e in caller.events
        if e["type"] == "conversation.item.input_audio_transcription.completed"
    ]
    assert heard[0] == "Hi Elena, can you hear me?"
    record = await record_of(base_url)
    assert record["rtc_call_id"] == answer["rtc_call_id"]
    assert record["model"] == "gpt-realtime"
    assert record["auth"] == "key1"
    assert record["session"]["voice"] == ELENA_SESSION["voice"]
    assert record["state"] == "answered"
    peer = record["peer"]
    assert peer["voice"] == ELENA_VOICE
    assert peer["agent"] == "Elena"
    assert peer["data_channel"] == {"label": "voice-live-events", "state": "open"}
    assert peer["audio_frames_received"] > 0
    assert peer["audio_frames_sent"] > 0


async def test_session_update_after_negotiation(http, keys, base_url, caller):
    """session.update answers session.updated; a bad or provider-switching voice gets error."""
    await started_call(http, base_url, keys, caller)
    seen = len(caller.control_events)
    guy = {"type": "azure-standard", "name": "en-US-GuyNeural"}

    await caller.send({"type": "session.update", "session": {"voice": guy}})
    updated = await caller.wait_control("session.updated", after=seen)
    await caller.send({"type": "session.update", "event_id": "c1", "session": {"voice": "marin"}})
    switched = await caller.wait_control("error", after=seen)
    await caller.send(
        {
            "type": "session.update",
            "event_id": "c2",
            "session": {"voice": {"type": "azure-standard"}},
        }
    )
    await async_poll_until(
        lambda: caller.control_types().count("error") >= 2, timeout=20, what="two errors"
    )

    assert updated["session"]["voice"] == guy
    assert switched["error"]["event_id"] == "c1"
    assert "Cannot update voice from AzureVoice to OpenAIVoice" in switched["error"]["message"]
    record = await record_of(base_url)
    assert record["voice"] == guy
    assert record["peer"]["voice"] == "en-US-GuyNeural"
    assert record["session_updates"][0] == {"voice": guy}


async def test_an_openai_voice_is_accepted(http, keys, base_url, caller):
    """An openai voice from the catalog's one voice list sets up the call."""
    await started_call(http, base_url, keys, caller, {"voice": {"type": "openai", "name": "marin"}})

    assert (await record_of(base_url))["peer"]["voice"] == "marin"


async def test_events_before_the_offer_get_an_error(http, keys, base_url, caller):
    """Client events before rtc.call.sdp.create are answered with error call_not_started."""
    await caller.connect(http, url_for(base_url), {"api-key": keys.key1})
    await caller.send({"type": "session.update", "session": {"voice": "marin"}})

    error = await caller.wait_control("error")

    assert error["error"]["code"] == "call_not_started"


# -- lifecycle ---------------------------------------------------------------------------


async def test_closing_the_socket_ends_the_peer(http, keys, base_url, caller):
    """When the control socket closes, the emulator closes the peer connection."""
    await started_call(http, base_url, keys, caller)
    await caller.wait_connected()
    assert caller.ws is not None

    await caller.ws.close()

    async def ended() -> bool:
        return (await record_of(base_url))["state"] == "ended"

    await async_poll_until(ended, timeout=20, what="the connection to end")
    await async_poll_until(
        lambda: caller.channel.readyState == "closed", timeout=20, what="the data channel to close"
    )
    record = await record_of(base_url)
    assert record["ended_reason"] == "control_closed"
    assert record["peer"]["active"] is False
    assert (await state_of(base_url))["active_calls"] == 0


async def test_the_peer_closing_first_closes_the_socket(http, keys, base_url, caller):
    """When the browser's peer connection goes away, the emulator closes the control socket."""
    await started_call(http, base_url, keys, caller)
    await caller.wait_connected()

    await caller.pc.close()
    code = await caller.wait_closed(within=60)

    assert code == 1000
    record = await record_of(base_url)
    assert record["ended_reason"].startswith("peer_connection_")
    assert record["peer"]["active"] is False


async def test_the_maximum_connection_length_closes_socket_and_peer(http, keys, caller):
    """With a short cap, the emulator closes the socket and the peer on its own."""
    app = create_emulator_app(config_for(keys, voicelive_max_seconds=1.5), clock=wall_clock())
    with serve_app(app, ready_path="/healthz") as base_url:
        await started_call(http, base_url, keys, caller)
        code = await caller.wait_closed()
        record = await record_of(base_url)

    assert code == 1000
    assert record["ended_reason"] == "max_duration"
    assert record["peer"]["active"] is False


# -- faults ------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "status"), [("upgrade_401", 401), ("upgrade_404", 404)])
async def test_upgrade_faults_refuse_once(http, keys, base_url, mode, status):
    """An injected upgrade fault refuses the next connection (count 1), then connections work."""
    await set_fault(base_url, mode=mode, count=1)

    refused = await refused_status(http, url_for(base_url), {"api-key": keys.key1})
    ws = await http.ws_connect(url_for(base_url), headers={"api-key": keys.key1})
    await ws.close()

    assert refused == status


@pytest.mark.parametrize("code", [None, "allocate_client_error"])
async def test_rtc_call_error_fault(http, keys, base_url, caller, code):
    """rtc_call_error answers rtc.call.error (agent_initialization_failed unless given)."""
    await set_fault(base_url, mode="rtc_call_error", count=1, code=code)
    await caller.connect(http, url_for(base_url), {"api-key": keys.key1})

    answer = await caller.start(ELENA_SESSION)

    assert answer["type"] == "rtc.call.error"
    assert answer["error"]["code"] == (code or "agent_initialization_failed")
    assert answer["error"]["type"] == "server_error"
    assert (await state_of(base_url))["active_calls"] == 0


async def test_error_event_fault_replaces_the_answer(http, keys, base_url, caller):
    """error_event sends session.created then a generic error instead of the answer."""
    await set_fault(base_url, mode="error_event", code="conversation_already_has_active_response")
    await caller.connect(http, url_for(base_url), {"api-key": keys.key1})

    answer = await caller.start()

    assert answer["type"] == "error"
    assert answer["error"]["code"] == "conversation_already_has_active_response"
    assert caller.control_types() == ["session.created", "error"]
    assert (await record_of(base_url))["state"] == "failed"


async def test_drop_mid_call_closes_the_socket_after_the_answer(http, keys, base_url, caller):
    """drop_mid_call answers, then closes the socket with 1011 and ends the peer."""
    await set_fault(base_url, mode="drop_mid_call", latency_ms=200)
    answer = await started_call(http, base_url, keys, caller)

    code = await caller.wait_closed()

    assert answer["type"] == "rtc.call.sdp.created"
    assert code == 1011
    record = await record_of(base_url)
    assert record["ended_reason"] == "dropped"
    assert record["peer"]["active"] is False


async def test_slow_answer_still_answers(http, keys, base_url, caller):
    """slow_answer delays rtc.call.sdp.created by latency_ms but still sends it."""
    await set_fault(base_url, mode="slow_answer", latency_ms=300, count=1)

    answer = await started_call(http, base_url, keys, caller)

    assert answer["type"] == "rtc.call.sdp.created"
    faults = (await state_of(base_url))["faults"]["voicelive"]
    assert faults["mode"] is None


async def test_never_answer_withholds_the_answer(http, keys, base_url, caller):
    """never_answer sends session.created but never rtc.call.sdp.created."""
    await set_fault(base_url, mode="never_answer")
    await caller.connect(http, url_for(base_url), {"api-key": keys.key1})
    await caller.send({"type": "rtc.call.sdp.create", "sdp_offer": await caller.offer()})

    async def withheld() -> bool:
        return bool((await record_of(base_url))["answer_withheld"])

    await async_poll_until(withheld, timeout=20, what="the answer to be withheld")
    record = await record_of(base_url)

    assert caller.control_types() == ["session.created"]
    assert "rtc.call.sdp.created" not in record["events_sent"]
    assert record["state"] == "negotiating"


async def test_mirror_events_copies_the_data_channel_onto_the_socket(http, keys, base_url, caller):
    """mirror_events sends each data-channel event on the control socket too (same event_id)."""
    await set_fault(base_url, mode="mirror_events", count=1)
    await started_call(http, base_url, keys, caller)
    await caller.wait_for_events("response.audio_transcript.done")
    await caller.wait_control("response.audio_transcript.done")

    on_channel = {e["event_id"] for e in caller.events}
    mirrored = {
        e["event_id"] for e in caller.control_events if e["type"] in VOICE_LIVE_CHANNEL_EVENTS
    }
    assert on_channel & mirrored
    assert (await record_of(base_url))["mirror_events"] is True


async def test_without_mirroring_transcripts_stay_off_the_socket(http, keys, base_url, caller):
    """By default no data-channel event is sent on the control socket."""
    await started_call(http, base_url, keys, caller)
    await caller.wait_for_events("response.done")

    assert set(caller.control_types()) == {
        "session.created",
        "session.updated",
        "rtc.call.sdp.created",
    }


async def test_client_events_work_on_both_channels(http, keys, base_url, caller):
    """Client events are accepted on the socket and on the data channel alike."""
    await started_call(http, base_url, keys, caller)
    await caller.wait_connected()
    await async_poll_until(
        lambda: caller.channel.readyState == "open", timeout=20, what="the data channel to open"
    )
    seen = len(caller.control_events)

    await caller.send({"type": "response.create", "event_id": "c1"})
    caller.channel.send(
        json.dumps({"type": "session.update", "session": {"instructions": "You are Marcus."}})
    )
    caller.channel.send(json.dumps({"type": "response.dance", "event_id": "c2"}))
    updated = await caller.wait_control("session.updated", after=seen)
    error = await caller.wait_control("error", after=seen)
    await caller.wait_for_events("response.audio_transcript.done")

    assert updated["session"]["instructions"] == "You are Marcus."
    assert error["error"]["event_id"] == "c2"
    record = await record_of(base_url)
    assert record["peer"]["client_events"]["response.create"] == 1
    assert record["peer"]["client_events"]["session.update"] == 1


async def test_a_full_emulator_refuses_the_call_with_rtc_call_error(http, keys, caller):
    """With EMULATOR_MAX_CALLS calls open, a further offer answers rtc.call.error too_many_calls."""
    app = create_emulator_app(config_for(keys, max_active_calls=1), clock=wall_clock())
    second = VoiceLiveTestClient()
    try:
        with serve_app(app, ready_path="/healthz") as base_url:
            await started_call(http, base_url, keys, caller)
            await second.connect(http, url_for(base_url), {"api-key": keys.key2})
            refused = await second.start(ELENA_SESSION)
    finally:
        await second.close()

    assert refused["type"] == "rtc.call.error"
    assert refused["error"]["code"] == "too_many_calls"
    assert refused["error"]["type"] == "server_error"
