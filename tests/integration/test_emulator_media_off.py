"""``EMULATOR_MEDIA=off``: Azure OpenAI calls without an aiortc peer, heard on the sideband."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx
import msgspec
import pytest
from aiortc.sdp import SessionDescription

from engram_voice.emulator import create_emulator_app
from tests.support.emulator_client import call_id_of, call_state, mint, read_until, sideband_url
from tests.support.emulator_harness import TestKeys, emulator_config, wall_clock
from tests.support.openai_contract import validate_server_event
from tests.support.realtime_client import RealtimeTestClient
from tests.support.servers import serve_app

CALLS = "/openai/v1/realtime/calls"
SESSION_EXTRAS = ("session.id", "session.object", "session.expires_at")


@pytest.fixture(name="keys")
def fixture_keys() -> TestKeys:
    """Provide fresh keys for one emulator."""
    return TestKeys()


@pytest.fixture(name="base_url")
def fixture_base_url(keys: TestKeys) -> Iterator[str]:
    """Serve an emulator with media off, taking a turn every 0.5 s."""
    config = msgspec.structs.replace(emulator_config(keys, max_turns=50), media=False)
    app = create_emulator_app(config, clock=wall_clock())
    with serve_app(app, ready_path="/healthz") as url:
        yield url


@pytest.fixture(name="http")
async def fixture_http(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """Provide an HTTP client for the emulator."""
    async with httpx.AsyncClient(base_url=base_url, timeout=20) as client:
        yield client


@pytest.fixture(name="ws")
async def fixture_ws() -> AsyncIterator[aiohttp.ClientSession]:
    """Provide an aiohttp session for the sideband WebSockets."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture(name="offer")
async def fixture_offer() -> str:
    """Return a browser-like SDP offer (audio and the oai-events channel) made by aiortc."""
    client = RealtimeTestClient()
    try:
        return await client.offer()
    finally:
        await client.close()


async def post_offer(http: httpx.AsyncClient, keys: TestKeys, offer: str) -> httpx.Response:
    """Post ``offer`` to ``/calls`` with a fresh ephemeral key."""
    return await http.post(
        CALLS,
        content=offer,
        headers={
            "Authorization": f"Bearer {await mint(http, keys)}",
            "Content-Type": "application/sdp",
        },
    )


async def test_a_media_off_call_streams_its_conversation_on_the_sideband(
    http, ws, keys, base_url, offer
):
    """The answer is well-formed SDP, no peer connects, and turns reach the sideband."""
    answer = await post_offer(http, keys, offer)
    assert answer.status_code == 201, answer.text
    parsed = SessionDescription.parse(answer.text)
    assert [m.kind for m in parsed.media] == [m.kind for m in SessionDescription.parse(offer).media]
    call_id = call_id_of(answer)
    async with ws.ws_connect(
        sideband_url(base_url, call_id), headers={"api-key": keys.key1}
    ) as socket:
        events = await read_until(socket, "response.output_audio_transcript.done", count=2)
    for event in events:
        validate_server_event(event, allow_extra=SESSION_EXTRAS)
    types = [e["type"] for e in events]
    assert types.count("conversation.item.input_audio_transcription.completed") >= 2
    state = await call_state(http, call_id)
    assert state["media"] is False
    assert state["turns"] >= 2
    assert state["audio_frames_sent"] == 0
    assert state["events_sent"] == {}  # nothing went anywhere but the sideband


async def test_a_media_off_call_ends_on_hangup(http, ws, keys, base_url, offer):
    """Hanging up a media-off call ends it and closes its sideband."""
    call_id = call_id_of(await post_offer(http, keys, offer))
    async with ws.ws_connect(
        sideband_url(base_url, call_id), headers={"api-key": keys.key1}
    ) as socket:
        await read_until(socket, "response.done")
        hangup = await http.post(f"{CALLS}/{call_id}/hangup", headers={"api-key": keys.key1})
        assert hangup.status_code == 200
        async with asyncio.timeout(20):
            while (await socket.receive()).type == aiohttp.WSMsgType.TEXT:
                pass
    state = await call_state(http, call_id)
    assert state["active"] is False
    assert state["end_reason"] == "hangup"
    assert (await http.get("/_emulator/state")).json()["active_calls"] == 0


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(
            lambda sdp: "\r\n".join(x for x in sdp.split("\r\n") if "fingerprint" not in x),
            id="no-fingerprint",
        ),
        pytest.param(
            lambda sdp: "\r\n".join(x for x in sdp.split("\r\n") if "ice-ufrag" not in x),
            id="no-ice-ufrag",
        ),
        pytest.param(lambda sdp: re.sub(r"m=audio \d+ ", "m=audio x ", sdp), id="bad-port"),
        pytest.param(lambda _: "v=0\r\nm=audio\r\n", id="truncated"),
    ],
)
async def test_a_media_off_call_still_refuses_unusable_offers(http, keys, offer, mangle):
    """An offer aiortc could not use is refused with 400 and opens no call."""
    refused = await post_offer(http, keys, mangle(offer))
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "invalid_offer"
    assert (await http.get("/_emulator/state")).json()["active_calls"] == 0
