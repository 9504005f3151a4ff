"""The emulator's Azure OpenAI sideband WebSocket, over real sockets and a real peer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
import pytest

from engram_voice.emulator import create_emulator_app
from tests.support.emulator_client import call_id_of, mint, read_until, sideband_url
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
    """Serve a fresh emulator taking a turn every 0.5 s (enough turns for a late joiner)."""
    app = create_emulator_app(emulator_config(keys, max_turns=50), clock=wall_clock())
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


@pytest.fixture(name="caller")
async def fixture_caller() -> AsyncIterator[RealtimeTestClient]:
    """Provide a WebRTC caller with a tone microphone, closed after the test."""
    client = RealtimeTestClient()
    yield client
    await client.close()


async def start_call(http: httpx.AsyncClient, keys: TestKeys, caller: RealtimeTestClient) -> str:
    """Create a filtered call from ``caller`` and return its call id once connected."""
    answer = await caller.call(http, await mint(http, keys))
    assert answer.status_code == 201, answer.text
    await caller.wait_connected()
    return call_id_of(answer)


async def set_fault(http: httpx.AsyncClient, mode: str) -> None:
    """Inject the sideband fault ``mode`` for the next connection."""
    fault = await http.post(
        "/_emulator/faults", json={"target": "sideband", "mode": mode, "count": 1}
    )
    assert fault.status_code == 200, fault.text


async def sidebands(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Return the emulator's records of sideband connections."""
    records: list[dict[str, Any]] = (await http.get("/_emulator/state")).json()["sidebands"]
    return records


@pytest.mark.parametrize("credential", ["key1", "key2", "bearer"])
async def test_the_sideband_carries_the_full_event_stream(
    http, ws, keys, caller, base_url, *, credential
):
    """A resource key or Entra token joins the call; every event arrives and is SDK-valid."""
    call_id = await start_call(http, keys, caller)
    headers = (
        {"Authorization": f"Bearer {keys.bearer}"}
        if credential == "bearer"
        else {"api-key": getattr(keys, credential)}
    )
    async with ws.ws_connect(sideband_url(base_url, call_id), headers=headers) as socket:
        events = await read_until(socket, "response.done", count=2)

    types = [e["type"] for e in events]
    for event in events:
        validate_server_event(event, allow_extra=SESSION_EXTRAS)
    assert "session.created" not in types
    for expected in (
        "response.created",
        "conversation.item.input_audio_transcription.completed",
        "response.output_audio_transcript.done",
        "input_audio_buffer.committed",
    ):
        assert expected in types
    done = [e for e in events if e["type"] == "response.done"]
    for event in done:
        usage = event["response"]["usage"]
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert set(usage["input_token_details"]) == {"text_tokens", "audio_tokens", "cached_tokens"}
        assert set(usage["output_token_details"]) == {"text_tokens", "audio_tokens"}
    added = [e for e in events if e["type"] == "conversation.item.added"]
    assert all("previous_item_id" in e for e in added)
    assert (await sidebands(http))[-1]["auth"] == credential


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ("ephemeral", 401),
        ({"api-key": "0" * 32}, 401),
        ({"Authorization": "Bearer entra-unknown"}, 401),
        ({}, 401),
    ],
)
async def test_the_sideband_refuses_other_credentials(
    http, ws, keys, caller, base_url, *, headers, status
):
    """An ephemeral key, a wrong key or token, or none at all is refused with 401."""
    call_id = await start_call(http, keys, caller)
    spare_key = await mint(http, keys)
    sent = {"Authorization": f"Bearer {spare_key}"} if headers == "ephemeral" else headers
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await ws.ws_connect(sideband_url(base_url, call_id), headers=sent)
    assert refused.value.status == status


@pytest.mark.parametrize("call_id", ["rtc_unknown", "", "x" * 300])
async def test_an_unknown_call_is_not_found(ws, keys, base_url, call_id):
    """A call id the emulator never created (or none) answers 404."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await ws.ws_connect(sideband_url(base_url, call_id), headers={"api-key": keys.key1})
    assert refused.value.status == 404


async def test_session_update_is_answered_on_the_sideband(http, ws, keys, caller, base_url):
    """A server's session.update over the sideband gets session.updated with the change."""
    call_id = await start_call(http, keys, caller)
    async with ws.ws_connect(
        sideband_url(base_url, call_id), headers={"api-key": keys.key1}
    ) as socket:
        await socket.send_str(
            json.dumps(
                {
                    "type": "session.update",
                    "session": {"type": "realtime", "instructions": "You are Marcus."},
                }
            )
        )
        events = await read_until(socket, "session.updated")
    updated = next(e for e in events if e["type"] == "session.updated")
    validate_server_event(updated, allow_extra=SESSION_EXTRAS)
    assert updated["session"]["instructions"] == "You are Marcus."


async def test_hangup_closes_the_sideband(http, ws, keys, caller, base_url):
    """Hanging up ends the peer and closes the sideband; the record says why."""
    call_id = await start_call(http, keys, caller)
    async with ws.ws_connect(
        sideband_url(base_url, call_id), headers={"api-key": keys.key1}
    ) as socket:
        hangup = await http.post(f"{CALLS}/{call_id}/hangup", headers={"api-key": keys.key1})
        assert hangup.status_code == 200
        async with asyncio.timeout(20):
            while (await socket.receive()).type == aiohttp.WSMsgType.TEXT:
                pass
        assert socket.closed
    records = await sidebands(http)
    assert records[-1]["close_reason"] == "call_ended"


async def test_faults_refuse_and_drop_the_sideband(http, ws, keys, caller, base_url):
    """A refuse fault answers 401 once; a drop fault closes the socket while the call goes on."""
    call_id = await start_call(http, keys, caller)
    url, headers = sideband_url(base_url, call_id), {"api-key": keys.key1}
    await set_fault(http, "refuse")
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await ws.ws_connect(url, headers=headers)
    assert refused.value.status == 401

    await set_fault(http, "drop")
    async with ws.ws_connect(url, headers=headers) as socket:
        async with asyncio.timeout(20):
            while (await socket.receive()).type == aiohttp.WSMsgType.TEXT:
                pass
    assert (await sidebands(http))[-1]["close_reason"] == "dropped"
    calls = (await http.get("/_emulator/state")).json()["calls"]
    assert next(c for c in calls if c["call_id"] == call_id)["active"] is True

    async with ws.ws_connect(url, headers=headers) as again:
        events = await read_until(again, "response.output_audio_transcript.done")
    assert "response.output_audio_transcript.done" in {e["type"] for e in events}


async def test_a_bad_fault_mode_is_refused(http):
    """The sideband target accepts only its own modes."""
    answer = await http.post(
        "/_emulator/faults", json={"target": "sideband", "mode": "upgrade_401"}
    )
    assert answer.status_code == 400
