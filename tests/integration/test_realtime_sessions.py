"""POST /realtime/sessions over real HTTP against the Azure realtime emulator."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import Emulator, ServiceFactory, service_env
from tests.support.realtime_client import RealtimeTestClient


def _mint(url: str, agent: str = "elena", **extra: object) -> httpx.Response:
    return httpx.post(f"{url}/realtime/sessions", json={"agent": agent, **extra}, timeout=20)


@pytest.mark.parametrize("voice_live", [False, True], ids=["azure-openai-only", "with-voice-live"])
@pytest.mark.parametrize(
    ("agent", "name", "voice"),
    [("elena", "Elena", "marin"), ("marcus", "Marcus", "cedar"), ("sage", "Sage", "marin")],
)
def test_each_agents_session_config_reaches_the_upstream_body(
    emulator: Emulator,
    make_service: ServiceFactory,
    agent: str,
    name: str,
    voice: str,
    *,
    voice_live: bool,
) -> None:
    """The mint carries the agent's Azure OpenAI voice, even when its calls go to Voice Live."""
    extra = (
        {"AZURE_VOICELIVE_ENDPOINT": emulator.url, "AZURE_VOICELIVE_KEY": emulator.keys[0]}
        if voice_live
        else {}
    )
    with make_service(service_env(emulator, **extra)) as url:
        response = _mint(url, agent)
        listed = httpx.get(f"{url}/status", timeout=10).json()["agents"]
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["agent"] == {"id": agent, "name": name, "voice": voice}
    recorded = emulator.state()["mints"]
    assert isinstance(recorded, list)
    request = recorded[-1]
    assert request["auth"] == "key1"
    session = request["session"]
    assert session["type"] == "realtime"
    assert session["model"] == "gpt-realtime"
    assert session["instructions"].startswith(f"You are {name}")
    assert session["audio"]["output"]["voice"] == voice
    assert session["audio"]["input"]["transcription"]["model"]
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    lifetime = body["client_secret"]["expires_at"] - time.time()
    assert 30 < lifetime <= 61
    status = next(a for a in listed if a["id"] == agent)
    assert status["upstream"] == ("voice-live" if voice_live else "azure-openai")
    if not voice_live:
        assert status["voice"] == voice


def test_mint_answer_has_everything_the_browser_needs(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """A 201 carries session id, ephemeral key, WebRTC URL, deployment and no-store caching."""
    with make_service(service_env(emulator, REALTIME_KEY_TTL_SECONDS="120")) as url:
        response = _mint(url)
    assert response.status_code == 201
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["session_id"].startswith("vs_")
    assert body["conversation_id"].startswith("cv_")
    assert body["client_secret"]["value"].startswith("ek_")
    assert body["client_secret"]["expires_at"] > 0
    assert body["webrtc_url"] == f"{emulator.url}/openai/v1/realtime/calls?webrtcfilter=on"
    assert body["deployment"] == "gpt-realtime"
    assert 90 < body["client_secret"]["expires_at"] - time.time() <= 121


def test_a_conversation_can_be_continued_by_its_owner(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """Passing back the conversation id keeps it; a forged one is refused with 403."""
    with make_service(service_env(emulator)) as url:
        first = _mint(url).json()
        again = _mint(url, conversation_id=first["conversation_id"])
        forged = _mint(url, conversation_id="cv_abcdefgh.notavalidmac")
    assert again.status_code == 201
    assert again.json()["conversation_id"] == first["conversation_id"]
    assert again.json()["session_id"] != first["session_id"]
    assert forged.status_code == 403
    assert forged.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"agent": "bob"}, 404, None),
        ({}, 400, "agent"),
        ({"agent": "elena", "colour": "red"}, 400, "colour"),
        ({"agent": "e" * 40}, 400, "agent"),
        ({"agent": "elena", "conversation_id": "nope"}, 400, "conversation_id"),
    ],
)
def test_bad_requests_get_problem_json_naming_the_field(
    emulator: Emulator,
    make_service: ServiceFactory,
    body: dict[str, object],
    status: int,
    field: str | None,
) -> None:
    """Unknown agents are 404; missing, unknown or malformed fields are 400 naming the field."""
    with make_service(service_env(emulator)) as url:
        response = httpx.post(f"{url}/realtime/sessions", json=body, timeout=20)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    if field:
        assert field in problem["detail"]


def test_per_user_rate_limit_answers_429_with_retry_after(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """Minting more often than MINT_RATE_LIMIT allows is refused with 429 and Retry-After."""
    with make_service(service_env(emulator, MINT_RATE_LIMIT="2/minute")) as url:
        statuses = [_mint(url).status_code for _ in range(2)]
        limited = _mint(url)
    assert statuses == [201, 201]
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.json()["code"] == "rate_limited"


async def test_minted_key_connects_over_webrtc_once(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """The key from the service opens a WebRTC call at the returned URL; a second use is refused."""
    with make_service(service_env(emulator)) as url:
        async with httpx.AsyncClient(timeout=20) as http:
            minted = (await http.post(f"{url}/realtime/sessions", json={"agent": "elena"})).json()
    key, webrtc_url = minted["client_secret"]["value"], minted["webrtc_url"]
    assert webrtc_url.startswith(emulator.url)
    first, second = RealtimeTestClient(), RealtimeTestClient()
    try:
        async with httpx.AsyncClient(base_url=emulator.url, timeout=20) as http:
            answered = await first.call(http, key)
            assert answered.status_code == 201
            assert answered.text.startswith("v=0")
            assert "/realtime/calls/" in answered.headers["location"]
            await first.wait_connected()
            refused = await second.call(http, key)
        assert refused.status_code in {400, 401}
        assert "ephemeral_token_already_used" in refused.text
    finally:
        await first.close()
        await second.close()


BAD_BODIES = {
    "latin1": b'{"agent":"el\xe9na"}',
    "nan": b'{"agent":NaN}',
    "infinity": b'{"agent":Infinity}',
    "truncated": b'{"agent":"elena"',
    "deep-1000": b'{"agent":' + b"[" * 1000 + b"]" * 1000 + b"}",
    "deep-objects": b'{"a":' * 1000 + b"1" + b"}" * 1000,
    "lone-surrogate": b'{"agent":"\\udc00"}',
}


def test_bodies_that_are_not_json_of_the_right_shape_are_400_with_errors(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """Over real HTTP, each malformed mint body is 400 validation_failed with errors, never 500."""
    with make_service(service_env(emulator)) as url:
        answers = {
            name: httpx.post(
                f"{url}/realtime/sessions",
                content=body,
                headers={"content-type": "application/json"},
                timeout=20,
            )
            for name, body in BAD_BODIES.items()
        }
    for name, answer in answers.items():
        assert answer.status_code == 400, (name, answer.text)
        problem = answer.json()
        assert problem["code"] == "validation_failed", name
        assert problem["errors"], name
        assert all(e["field"] for e in problem["errors"]), name
    assert answers["latin1"].json()["errors"][0]["field"] == "body"
