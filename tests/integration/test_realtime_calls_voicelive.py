"""Voice Live calls through POST /realtime/calls: real HTTP, real WebSockets, a real peer.

The service holds the emulator's Voice Live control channel for each call; the browser is
an aiortc peer with the ``voice-live-events`` data channel. This module runs its own
emulator process (no new-connections quota, so many calls may be set up in a minute).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiortc import RTCSessionDescription
from azure.identity.aio import get_bearer_token_provider

from engram_voice.credentials import AI_FOUNDRY_SCOPE, EntraTokenSource
from engram_voice.realtime.calls import CallLimits
from engram_voice.services import Overrides
from tests.conftest import Emulator, ServiceFactory, service_env
from tests.support.calls import HeaderUsers, calls_over, delete_call, post_call
from tests.support.entra import FakeTokenCredential
from tests.support.key_rotation import regenerate
from tests.support.keyvault import KeyVaultStandIn
from tests.support.keyvault_fixtures import SourceFactory
from tests.support.polling import async_poll_until
from tests.support.servers import ServiceProcess
from tests.support.voicelive_client import VoiceLiveTestClient

ELENA_VOICE = "en-US-Ava:DragonHDLatestNeural"
MARCUS_VOICE = "en-US-GuyNeural"
SECRET_NAME = "voicelive-api-key"


def _start(tmp: Path, **extra: str) -> Emulator:
    keys = (secrets.token_hex(16), secrets.token_hex(16))
    bearer = f"entra-{secrets.token_hex(16)}"
    process = ServiceProcess(
        ["emulator"],
        env={
            "EMULATOR_API_KEYS": ",".join(keys),
            "EMULATOR_BEARER_TOKENS": bearer,
            "EMULATOR_TURN_INTERVAL_SECONDS": "1",
            "EMULATOR_VOICELIVE_CONNECTIONS_PER_MINUTE": "0",
            **extra,
        },
        log_path=tmp / "emulator.log",
    ).start()
    return Emulator(process, keys, bearer)


@pytest.fixture(name="emulator", scope="module")
def fixture_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """Run this module's emulator (Voice Live without a connections-per-minute quota)."""
    emulator = _start(tmp_path_factory.mktemp("voicelive-emulator"))
    try:
        yield emulator
    finally:
        emulator.process.stop()


@pytest.fixture(name="browser")
async def fixture_browser() -> AsyncIterator[VoiceLiveTestClient]:
    """Provide the browser's peer: tone microphone, ``voice-live-events`` channel."""
    client = VoiceLiveTestClient()
    yield client
    await client.close()


def voicelive_env(emulator: Emulator, **extra: str) -> dict[str, str]:
    """Return a service env with Voice Live (api-key) on ``emulator`` as the default upstream."""
    voicelive = {
        "AZURE_VOICELIVE_ENDPOINT": emulator.url,
        "AZURE_VOICELIVE_KEY": emulator.keys[0],
        "REALTIME_DEFAULT_UPSTREAM": "voice-live",
    }
    return service_env(emulator, **{**voicelive, **extra})


def overrides(limits: CallLimits | None = None, **changes: Any) -> Overrides:
    """Return overrides with the per-user test authenticator and ``limits``."""
    return Overrides(authenticator=HeaderUsers(), call_limits=limits or CallLimits(), **changes)


async def fresh_offer() -> str:
    """Return a real offer (ICE gathered) from a peer that is closed right after."""
    client = VoiceLiveTestClient(microphone=False)
    try:
        return await client.offer()
    finally:
        await client.close()


def records(emulator: Emulator) -> list[dict[str, Any]]:
    """Return the emulator's records of Voice Live control channels, oldest first."""
    found = emulator.state()["voicelive_calls"]
    assert isinstance(found, list)
    return found


def metrics_text(url: str) -> str:
    """Return the service's /metrics exposition."""
    return httpx.get(f"{url}/metrics", timeout=10).text


def status_calls(url: str) -> dict[str, Any]:
    """Return the ``calls`` section of the service's /status."""
    calls: dict[str, Any] = httpx.get(f"{url}/status", timeout=10).json()["calls"]
    return calls


async def open_call(
    url: str, emulator: Emulator, browser: VoiceLiveTestClient, **kw: Any
) -> tuple[dict[str, Any], int]:
    """Set up a call through the service and apply its answer; return the body and record index."""
    before = len(records(emulator))
    response = await post_call(url, await browser.offer(), **kw)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    await browser.pc.setRemoteDescription(
        RTCSessionDescription(sdp=body["sdp_answer"], type="answer")
    )
    assert len(records(emulator)) == before + 1
    return body, before


async def ended(emulator: Emulator, index: int) -> dict[str, Any]:
    """Wait (bounded) until the emulator's control channel ``index`` ended; return its record."""

    def done() -> dict[str, Any] | None:
        record = records(emulator)[index]
        finished = record["state"] in {"ended", "failed"} and record["ended_at"] is not None
        return record if finished else None

    record = await async_poll_until(
        done, timeout=15, what=f"the emulator's Voice Live channel {index} to end"
    )
    assert record is not None
    return record


@pytest.mark.parametrize(
    ("agent", "name", "voice"),
    [
        ("elena", "Elena", ELENA_VOICE),
        ("marcus", "Marcus", MARCUS_VOICE),
        ("sage", "Sage", ELENA_VOICE),
    ],
)
async def test_a_voice_live_call_answers_speaks_and_transcribes(
    emulator: Emulator,
    make_service: ServiceFactory,
    *,
    browser: VoiceLiveTestClient,
    agent: str,
    name: str,
    voice: str,
) -> None:
    """201 with Voice Live's answer; audio flows; transcripts arrive; the agent's voice was sent."""
    with make_service(voicelive_env(emulator), overrides()) as url:
        before = len(records(emulator))
        response = await post_call(url, await browser.offer(), agent=agent)
        assert response.status_code == 201, response.text
        body = response.json()
        await browser.pc.setRemoteDescription(
            RTCSessionDescription(sdp=body["sdp_answer"], type="answer")
        )
        await browser.wait_connected()
        await async_poll_until(lambda: browser.frames_received > 10, what="the agent's audio")
        await browser.wait_for_events("response.audio_transcript.done")
        assert status_calls(url)["active_by_upstream"] == {"voice-live": 1}
        (record,) = records(emulator)[before:]
    assert response.headers["location"] == f"/realtime/calls/{body['call_id']}"
    assert response.headers["cache-control"] == "no-store"
    assert body["upstream"] == "voice-live"
    assert body["agent"] == {"id": agent, "name": name, "voice": voice}
    assert body["sdp_answer"].startswith("v=0")
    assert record["voice"]["name"] == voice
    assert record["session"]["voice"] == {**record["session"]["voice"], "type": "azure-standard"}
    assert record["auth"] == "key1"
    assert record["api_version"] == "2026-01-01-preview"
    assert record["model"] == "gpt-realtime"
    for secret in (*emulator.keys, emulator.bearer, "api-key"):
        assert secret not in response.text


async def test_hanging_up_closes_the_control_channel_and_frees_the_registry(
    emulator: Emulator, make_service: ServiceFactory, browser: VoiceLiveTestClient
) -> None:
    """DELETE answers 204 once the control socket is closed; the emulator ends the call."""
    with make_service(voicelive_env(emulator), overrides()) as url:
        body, index = await open_call(url, emulator, browser)
        await browser.wait_connected()
        hung_up = await delete_call(url, body["call_id"])
        record = await ended(emulator, index)
        again = await delete_call(url, body["call_id"])
        calls = status_calls(url)
    assert hung_up.status_code == 204
    assert record["ended_reason"] == "control_closed"
    assert again.status_code == 404
    assert calls["active"] == 0
    assert calls["ended_by_reason"] == {"client_hangup": 1}
    assert "voice-live" in calls["upstreams"]


@pytest.mark.parametrize("latency_ms", [0, 300])
async def test_the_upstream_dropping_the_channel_ends_the_call(
    emulator: Emulator, make_service: ServiceFactory, browser: VoiceLiveTestClient, latency_ms: int
) -> None:
    """Voice Live dropping the socket mid-call ends the call: registry, /status and metrics."""
    with make_service(voicelive_env(emulator), overrides()) as url:
        emulator.fault(target="voicelive", mode="drop_mid_call", latency_ms=latency_ms)
        body, index = await open_call(url, emulator, browser)
        calls = await calls_over(url, started=1)
        metrics = metrics_text(url)
        late = await delete_call(url, body["call_id"])
    assert (await ended(emulator, index))["ended_reason"] == "dropped"
    assert calls["ended_by_reason"] == {"upstream_closed": 1}
    assert 'engram_calls_ended_total{reason="upstream_closed",upstream="voice-live"}' in metrics
    assert late.status_code == 404


async def test_the_maximum_duration_closes_the_channel(
    emulator: Emulator, make_service: ServiceFactory, browser: VoiceLiveTestClient
) -> None:
    """A Voice Live call past CALL_MAX_SECONDS has its control channel closed by the service."""
    with make_service(voicelive_env(emulator), overrides(CallLimits(max_seconds=0.5))) as url:
        body, index = await open_call(url, emulator, browser)
        record = await ended(emulator, index)
        calls = await calls_over(url, started=1)
        late = await delete_call(url, body["call_id"])
    assert record["ended_reason"] == "control_closed"
    assert calls["ended_by_reason"] == {"max_duration": 1}
    assert late.status_code == 404


async def test_the_per_user_call_limit_holds_for_voice_live(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """Past the per-user limit a user gets 429 too_many_calls; another user still calls."""
    first, second, other = VoiceLiveTestClient(), VoiceLiveTestClient(), VoiceLiveTestClient()
    try:
        with make_service(voicelive_env(emulator), overrides(CallLimits(max_per_user=1))) as url:
            await open_call(url, emulator, first, user="alice")
            refused = await post_call(url, await second.offer(), user="alice")
            await open_call(url, emulator, other, user="bob")
            assert status_calls(url)["active_by_upstream"] == {"voice-live": 2}
    finally:
        for client in (first, second, other):
            await client.close()
    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_calls"


FAULTS = [
    pytest.param({"mode": "upgrade_401"}, 502, "upstream_auth", id="upgrade_401"),
    pytest.param({"mode": "upgrade_404"}, 502, "upstream_rejected", id="upgrade_404"),
    pytest.param({"mode": "rtc_call_error"}, 502, "upstream_unavailable", id="rtc_call_error"),
    pytest.param(
        {"mode": "rtc_call_error", "code": "invalid_request"},
        502,
        "upstream_unavailable",
        id="rtc_call_error_code",
    ),
    pytest.param({"mode": "error_event"}, 502, "upstream_rejected", id="error_event"),
    pytest.param(
        {"mode": "slow_answer", "latency_ms": 5000}, 504, "upstream_timeout", id="slow_answer"
    ),
    pytest.param({"mode": "never_answer"}, 504, "upstream_timeout", id="never_answer"),
]


@pytest.mark.parametrize(("fault", "status", "code"), FAULTS)
async def test_each_voice_live_failure_is_mapped_and_the_channel_closed(
    emulator: Emulator,
    make_service: ServiceFactory,
    *,
    browser: VoiceLiveTestClient,
    fault: dict[str, Any],
    status: int,
    code: str,
) -> None:
    """Each upgrade or signalling failure is one problem+json; the socket and the slot are freed."""
    env = voicelive_env(emulator, VOICELIVE_ANSWER_TIMEOUT_SECONDS="1")
    with make_service(env, overrides(CallLimits(max_per_user=1))) as url:
        before = len(records(emulator))
        emulator.fault(target="voicelive", **fault)
        response = await post_call(url, await browser.offer())
        opened = records(emulator)[before:]
        closed = [await ended(emulator, before + i) for i in range(len(opened))]
        emulator.clear()
        retry = await post_call(url, await fresh_offer())
        calls = status_calls(url)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == code
    assert all(r["ended_reason"] in {"control_closed", None} for r in closed), closed
    assert retry.status_code == 201, retry.text  # the failed setup gave its slot back
    assert calls["setups"][code] == 1
    for secret in (*emulator.keys, emulator.bearer, "Injected"):
        assert secret not in response.text
    if fault["mode"] == "upgrade_404":
        assert "AZURE_VOICELIVE_API_VERSION" in response.json()["detail"]


@pytest.mark.parametrize(
    "offer", ["v=0\r\ns=-\r\nt=0 0\r\n", "v=0\r\n" + "a=x\r\n" * 10], ids=["no-media", "garbage"]
)
async def test_an_offer_voice_live_cannot_use_is_a_400_naming_sdp_offer(
    emulator: Emulator, make_service: ServiceFactory, offer: str
) -> None:
    """``rtc.call.error`` invalid_request_error about the SDP is the caller's 400 on sdp_offer."""
    with make_service(voicelive_env(emulator), overrides()) as url:
        response = await post_call(url, offer)
        calls = status_calls(url)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "validation_failed"
    assert response.json()["errors"][0]["field"] == "sdp_offer"
    assert calls["active"] == 0


async def test_a_connect_that_hangs_is_answered_504_within_the_bound(
    make_service: ServiceFactory, emulator: Emulator
) -> None:
    """A port that accepts TCP but never answers the upgrade gives 504 after the connect bound."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # never answer the upgrade

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = voicelive_env(
        emulator,
        VOICELIVE_CONNECT_TIMEOUT_SECONDS="0.5",
        AZURE_VOICELIVE_ENDPOINT=f"http://127.0.0.1:{port}",
    )
    try:
        with make_service(env, overrides()) as url:
            response = await post_call(url, await fresh_offer())
            calls = status_calls(url)
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
    assert held, "the service never connected"
    assert response.status_code == 504, response.text
    assert response.json()["code"] == "upstream_timeout"
    assert calls["active"] == 0


async def test_an_unreachable_voice_live_is_upstream_unavailable(
    make_service: ServiceFactory, emulator: Emulator
) -> None:
    """Nothing listening at the Voice Live endpoint: 502 upstream_unavailable."""
    server = await asyncio.start_server(lambda *_: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    env = voicelive_env(emulator, AZURE_VOICELIVE_ENDPOINT=f"http://127.0.0.1:{port}")
    with make_service(env, overrides()) as url:
        response = await post_call(url, await fresh_offer())
    assert response.status_code == 502, response.text
    assert response.json()["code"] == "upstream_unavailable"


UPGRADE_ANSWERS = [
    pytest.param(400, "", 502, "upstream_rejected", id="400"),
    pytest.param(401, "", 502, "upstream_auth", id="401"),
    pytest.param(403, "", 502, "upstream_auth", id="403"),
    pytest.param(404, "", 502, "upstream_rejected", id="404"),
    pytest.param(429, "Retry-After: 7\r\n", 503, "upstream_throttled", id="429"),
    pytest.param(500, "", 502, "upstream_unavailable", id="500"),
    pytest.param(502, "", 502, "upstream_unavailable", id="502"),
    pytest.param(503, "", 502, "upstream_unavailable", id="503"),
]


@pytest.mark.parametrize(("status", "headers", "expected", "code"), UPGRADE_ANSWERS)
async def test_every_refused_upgrade_status_is_mapped_without_the_body(
    make_service: ServiceFactory,
    emulator: Emulator,
    *,
    status: int,
    headers: str,
    expected: int,
    code: str,
) -> None:
    """An HTTP answer instead of the upgrade maps by status; Voice Live's body never leaks."""
    body = b'{"error": {"message": "UPSTREAM-BODY-TEXT"}}'
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        head = f"HTTP/1.1 {status} Refused\r\n{headers}Content-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"Content-Type: application/json\r\n\r\n" + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    env = voicelive_env(emulator, AZURE_VOICELIVE_ENDPOINT=f"http://127.0.0.1:{port}")
    try:
        with make_service(env, overrides()) as url:
            response = await post_call(url, await fresh_offer())
    finally:
        server.close()
        await server.wait_closed()
    assert response.status_code == expected, response.text
    assert response.json()["code"] == code
    assert "UPSTREAM-BODY-TEXT" not in response.text
    assert seen[0].startswith(b"GET /voice-live/realtime/calls?api-version=2026-01-01-preview")
    assert emulator.keys[0].encode() in seen[0]  # the api-key header, never echoed back
    assert emulator.keys[0] not in response.text
    if status == 429:
        assert response.headers["retry-after"] == "7"


async def test_an_entra_token_authenticates_the_control_channel(
    emulator: Emulator, make_service: ServiceFactory, browser: VoiceLiveTestClient
) -> None:
    """With AZURE_VOICELIVE_AUTH=entra the channel carries a bearer for the ai.azure.com scope."""
    credential = FakeTokenCredential(emulator.bearer)
    provider = get_bearer_token_provider(credential, AI_FOUNDRY_SCOPE)  # type: ignore[arg-type]
    source = EntraTokenSource(provider, timeout=2.0, identity="test identity")
    env = voicelive_env(emulator, AZURE_VOICELIVE_AUTH="entra")
    del env["AZURE_VOICELIVE_KEY"]
    with make_service(env, overrides(voicelive_credentials=source)) as url:
        _, index = await open_call(url, emulator, browser)
        record = records(emulator)[index]
    assert record["auth"] == "bearer"
    assert credential.scopes == [(AI_FOUNDRY_SCOPE,)]


async def test_a_rejected_entra_token_is_502_upstream_auth(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """A bearer Voice Live refuses maps to upstream_auth (a token cannot be re-read)."""
    provider = get_bearer_token_provider(FakeTokenCredential("not-accepted"), AI_FOUNDRY_SCOPE)  # type: ignore[arg-type]
    source = EntraTokenSource(provider, timeout=2.0, identity="test identity")
    env = voicelive_env(emulator, AZURE_VOICELIVE_AUTH="entra")
    del env["AZURE_VOICELIVE_KEY"]
    with make_service(env, overrides(voicelive_credentials=source)) as url:
        response = await post_call(url, await fresh_offer())
    assert response.status_code == 502
    assert response.json()["code"] == "upstream_auth"
    assert "not-accepted" not in response.text


async def test_a_wrong_key_is_502_upstream_auth(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """A configured Voice Live key the resource refuses: 502 upstream_auth, key never echoed."""
    env = voicelive_env(emulator, AZURE_VOICELIVE_KEY="wrong-key-0123456789abcdef")
    with make_service(env, overrides()) as url:
        response = await post_call(url, await fresh_offer())
    assert response.status_code == 502
    assert response.json()["code"] == "upstream_auth"
    assert "wrong-key" not in response.text


@pytest.fixture(name="rotating")
def fixture_rotating(tmp_path: Path) -> Iterator[Emulator]:
    """Run an emulator whose keys this test regenerates."""
    emulator = _start(tmp_path)
    try:
        yield emulator
    finally:
        emulator.process.stop()


async def test_a_key_rotated_in_key_vault_during_calls(
    rotating: Emulator,
    vault: KeyVaultStandIn,
    vault_sources: SourceFactory,
    make_service: ServiceFactory,
) -> None:
    """A live call survives the rotation; the next call gets 401, re-reads Key Vault, and opens."""
    vault.set_secret(SECRET_NAME, rotating.keys[0])
    source = vault_sources(secret_name=SECRET_NAME, refresh_seconds=3600, upstream="Voice Live")
    env = voicelive_env(rotating, AZURE_VOICELIVE_AUTH="key-vault", KEY_VAULT_URL=vault.url)
    del env["AZURE_VOICELIVE_KEY"]
    first, second = VoiceLiveTestClient(), VoiceLiveTestClient()
    try:
        with make_service(env, overrides(voicelive_credentials=source)) as url:
            body, index = await open_call(url, rotating, first)
            vault.set_secret(SECRET_NAME, regenerate(rotating, 1))  # key 1 retired
            later, later_index = await open_call(url, rotating, second)
            live = records(rotating)[index]
            hung_up = await delete_call(url, body["call_id"])
            calls = status_calls(url)
    finally:
        await first.close()
        await second.close()
    assert live["state"] == "answered"
    assert later["upstream"] == "voice-live"
    assert records(rotating)[later_index]["auth"] == "key1"
    assert rotating.state()["counters"]["voicelive"]["401"] == 1  # type: ignore[index]
    assert hung_up.status_code == 204
    assert calls["setups"] == {"opened": 2}


async def test_no_secret_reaches_the_logs_of_voice_live_calls(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A Voice Live call set up, hung up and refused (401) logs its life but no key or SDP."""
    log = tmp_path / "service.log"
    env = voicelive_env(emulator, LOG_LEVEL="debug")
    service = ServiceProcess(["serve"], env=env, log_path=log).start()
    browser = VoiceLiveTestClient()
    try:
        async with httpx.AsyncClient(base_url=service.base_url, timeout=20) as http:
            created = await http.post(
                "/realtime/calls", json={"agent": "marcus", "sdp_offer": await browser.offer()}
            )
            assert created.status_code == 201, created.text
            hung_up = await http.delete(f"/realtime/calls/{created.json()['call_id']}")
            assert hung_up.status_code == 204
            emulator.fault(target="voicelive", mode="upgrade_401")
            refused = await http.post(
                "/realtime/calls", json={"agent": "sage", "sdp_offer": await browser.offer()}
            )
            assert refused.status_code == 502
    finally:
        await browser.close()
        service.stop()
    text = log.read_text()
    events = [json.loads(line)["event"] for line in text.splitlines() if line.strip()]
    assert "realtime.call_started" in events
    assert "realtime.voicelive_session" in events
    assert "realtime.voicelive_refused" in events
    assert "a=fingerprint" not in text, "an SDP reached the service log"
    assert "You are" not in text, "instructions reached the service log"
    for secret in (*emulator.keys, emulator.bearer, created.json()["memory"]["token"]):
        assert secret not in text, "a secret reached the service log"
        assert secret not in refused.text


def test_the_module_uses_its_own_emulator(emulator: Emulator) -> None:
    """This module's emulator has no Voice Live connections-per-minute quota."""
    config = emulator.state()["config"]
    assert isinstance(config, dict)
    assert config["voicelive_connections_per_minute"] == 0
