"""POST/DELETE /realtime/calls over real HTTP, the emulator upstream and a real WebRTC peer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiortc import RTCSessionDescription

from engram_voice.realtime.calls import CallLimits
from engram_voice.services import Overrides
from tests.conftest import Emulator, ServiceFactory, service_env
from tests.support.calls import (
    HeaderUsers,
    calls_over,
    delete_call,
    emulator_call,
    emulator_call_ids,
    post_call,
)
from tests.support.polling import async_poll_until
from tests.support.realtime_client import RealtimeTestClient


@pytest.fixture(name="browser")
async def fixture_browser() -> AsyncIterator[RealtimeTestClient]:
    """Provide an aiortc peer that behaves like the browser (tone microphone, events channel)."""
    client = RealtimeTestClient()
    yield client
    await client.close()


def overrides(limits: CallLimits | None = None) -> Overrides:
    """Return overrides with the per-user test authenticator and ``limits``."""
    return Overrides(authenticator=HeaderUsers(), call_limits=limits or CallLimits())


async def open_call(
    url: str, emulator: Emulator, browser: RealtimeTestClient, **kw: Any
) -> tuple[dict[str, Any], str]:
    """Set up a call through the service, apply its answer; return the body and Azure's id."""
    before = emulator_call_ids(emulator)
    response = await post_call(url, await browser.offer(), **kw)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    await browser.pc.setRemoteDescription(
        RTCSessionDescription(sdp=body["sdp_answer"], type="answer")
    )
    (upstream_id,) = emulator_call_ids(emulator) - before
    return body, upstream_id


def status_calls(url: str) -> dict[str, Any]:
    """Return the ``calls`` section of the service's /status."""
    calls: dict[str, Any] = httpx.get(f"{url}/status", timeout=10).json()["calls"]
    return calls


async def ended_at_emulator(emulator: Emulator, upstream_id: str) -> dict[str, Any]:
    """Wait (bounded) until the emulator's call ended; return its record."""
    return await async_poll_until(
        lambda: (c := emulator_call(emulator, upstream_id)) and not c["active"] and c,
        timeout=10,
        what=f"the emulator's call {upstream_id} ending",
    )


@pytest.mark.parametrize(
    ("agent", "name", "voice"),
    [("elena", "Elena", "marin"), ("marcus", "Marcus", "cedar"), ("sage", "Sage", "marin")],
)
async def test_a_call_through_the_service_answers_and_audio_flows(
    emulator: Emulator,
    make_service: ServiceFactory,
    *,
    browser: RealtimeTestClient,
    agent: str,
    name: str,
    voice: str,
) -> None:
    """201 with the answer and ids; audio flows both ways; the upstream got the agent's voice."""
    with make_service(service_env(emulator), overrides()) as url:
        before = emulator_call_ids(emulator)
        response = await post_call(url, await browser.offer(), agent=agent)
        assert response.status_code == 201, response.text
        body = response.json()
        await browser.pc.setRemoteDescription(
            RTCSessionDescription(sdp=body["sdp_answer"], type="answer")
        )
        (upstream_id,) = emulator_call_ids(emulator) - before
        await browser.wait_connected()
        await async_poll_until(lambda: browser.frames_received > 10, what="audio from the agent")
        await async_poll_until(
            lambda: emulator_call(emulator, upstream_id)["audio_frames_received"] > 10,
            what="the microphone's audio at the emulator",
        )
        assert status_calls(url)["active_by_upstream"] == {"azure-openai": 1}
    assert response.headers["location"] == f"/realtime/calls/{body['call_id']}"
    assert response.headers["cache-control"] == "no-store"
    assert body["call_id"].startswith("rc_")
    assert body["session_id"].startswith("vs_")
    assert body["conversation_id"].startswith("cv_")
    assert body["agent"] == {"id": agent, "name": name, "voice": voice}
    assert body["upstream"] == "azure-openai"
    assert body["sdp_answer"].startswith("v=0")
    assert body["memory"]["token"]
    recorded = emulator_call(emulator, upstream_id)
    assert recorded["voice"] == voice
    assert recorded["filtered"] is True
    for secret in (*emulator.keys, emulator.bearer, "ek_", "api-key"):
        assert secret not in response.text


async def test_hanging_up_ends_the_call_upstream_and_forgets_it(
    emulator: Emulator, make_service: ServiceFactory, browser: RealtimeTestClient
) -> None:
    """DELETE answers 204, the emulator records the hang-up, and the id is then unknown (404)."""
    with make_service(service_env(emulator), overrides()) as url:
        body, upstream_id = await open_call(url, emulator, browser)
        await browser.wait_connected()
        hung_up = await delete_call(url, body["call_id"])
        recorded = emulator_call(emulator, upstream_id)  # the 204 waited for the hang-up
        again = await delete_call(url, body["call_id"])
        calls = status_calls(url)
    assert hung_up.status_code == 204
    assert recorded["active"] is False
    assert recorded["end_reason"] == "hangup"
    assert again.status_code == 404
    assert again.json()["code"] == "call_not_found"
    assert calls["active"] == 0
    assert calls["ended_by_reason"] == {"client_hangup": 1}
    assert calls["setups"] == {"opened": 1}
    assert calls["upstreams"] == ["azure-openai"]


async def test_racing_hang_ups_end_the_call_once(
    emulator: Emulator, make_service: ServiceFactory, browser: RealtimeTestClient
) -> None:
    """Several DELETEs at once: one 204, the rest 404, and one hang-up reaches Azure."""
    with make_service(service_env(emulator), overrides()) as url:
        body, _ = await open_call(url, emulator, browser)
        before = dict(emulator.state()["counters"]["hangup"])  # type: ignore[index]
        answers = await asyncio.gather(*(delete_call(url, body["call_id"]) for _ in range(4)))
        after = dict(emulator.state()["counters"]["hangup"])  # type: ignore[index]
    assert sorted(a.status_code for a in answers) == [204, 404, 404, 404]
    assert after.get("200", 0) - before.get("200", 0) == 1


async def test_another_users_call_cannot_be_hung_up(
    emulator: Emulator, make_service: ServiceFactory, browser: RealtimeTestClient
) -> None:
    """DELETE of someone else's call is the same 404 as an unknown one; the call lives on."""
    with make_service(service_env(emulator), overrides()) as url:
        body, upstream_id = await open_call(url, emulator, browser, user="alice")
        theirs = await delete_call(url, body["call_id"], user="mallory")
        unknown = await delete_call(url, "rc_" + "0" * 32, user="mallory")
        still = emulator_call(emulator, upstream_id)
        mine = await delete_call(url, body["call_id"], user="alice")
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json()["detail"] == unknown.json()["detail"]
    assert still["active"] is True
    assert mine.status_code == 204


async def test_the_maximum_duration_ends_the_call(
    emulator: Emulator, make_service: ServiceFactory, browser: RealtimeTestClient
) -> None:
    """A call past its maximum duration is hung up upstream and leaves the registry."""
    with make_service(service_env(emulator), overrides(CallLimits(max_seconds=0.5))) as url:
        body, upstream_id = await open_call(url, emulator, browser)
        recorded = await ended_at_emulator(emulator, upstream_id)
        # active, then ending (its hang-up and the capture's flush), then ended: never neither
        calls = await calls_over(url, started=1)
        late = await delete_call(url, body["call_id"])
    assert recorded["end_reason"] == "hangup"
    assert calls["ended_by_reason"] == {"max_duration": 1}
    assert late.status_code == 404


async def test_the_per_user_call_limit_answers_429_too_many_calls(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """Past CALL_MAX_CONCURRENT_PER_USER a user gets 429 with Retry-After; others still call."""
    first, second, other = RealtimeTestClient(), RealtimeTestClient(), RealtimeTestClient()
    try:
        with make_service(service_env(emulator), overrides(CallLimits(max_per_user=1))) as url:
            await open_call(url, emulator, first, user="alice")
            refused = await post_call(url, await second.offer(), user="alice")
            await open_call(url, emulator, other, user="bob")
            assert status_calls(url)["active"] == 2
    finally:
        for client in (first, second, other):
            await client.close()
    assert refused.status_code == 429
    assert refused.json()["code"] == "too_many_calls"
    assert 1 <= int(refused.headers["retry-after"]) <= 60


async def test_shutdown_hangs_up_every_live_call(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """Stopping the service hangs up its live calls upstream within the drain bound."""
    browsers = [RealtimeTestClient(), RealtimeTestClient()]
    try:
        with make_service(service_env(emulator), overrides()) as url:
            ids = [
                (await open_call(url, emulator, b, user=f"u{i}"))[1] for i, b in enumerate(browsers)
            ]
            assert all(emulator_call(emulator, i)["active"] for i in ids)
        ended = [emulator_call(emulator, i) for i in ids]  # the lifespan waited for the drain
    finally:
        for client in browsers:
            await client.close()
    assert [(c["active"], c["end_reason"]) for c in ended] == [(False, "hangup")] * 2
