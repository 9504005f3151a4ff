import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from openai.types.realtime import ClientSecretCreateResponse
from structlog.testing import capture_logs

from engram_voice.emulator import create_emulator_app
from engram_voice.emulator.keys import fingerprint
from tests.support.clock import FakeClock
from tests.support.emulator_harness import TestKeys, emulator_config, wall_clock
from tests.support.openai_contract import validate_client_secret_params, validate_model
from tests.support.polling import async_poll_until
from tests.support.realtime_client import RealtimeTestClient, mint_body
from tests.support.servers import serve_app

MINT = "/openai/v1/realtime/client_secrets"
CALLS = "/openai/v1/realtime/calls"


@pytest.fixture(name="keys")
def fixture_keys() -> TestKeys:
    """Provide fresh keys for one emulator."""
    return TestKeys()


@pytest.fixture(name="clock")
def fixture_clock() -> FakeClock:
    """Provide the emulator's clock, moved only by the test."""
    return wall_clock()


@pytest.fixture(name="base_url")
def fixture_base_url(keys: TestKeys, clock: FakeClock) -> Iterator[str]:
    """Serve a fresh emulator on a loopback port."""
    app = create_emulator_app(emulator_config(keys), clock=clock)
    with serve_app(app, ready_path="/healthz") as url:
        yield url


@pytest.fixture(name="http")
async def fixture_http(base_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """Provide an HTTP client for the emulator with a generous timeout."""
    async with httpx.AsyncClient(base_url=base_url, timeout=20) as client:
        yield client


async def mint(http: httpx.AsyncClient, keys: TestKeys, **body_options: Any) -> httpx.Response:
    """Mint an ephemeral key with key 1."""
    return await http.post(MINT, headers={"api-key": keys.key1}, json=mint_body(**body_options))


async def state(http: httpx.AsyncClient) -> dict:
    """Return the emulator's recorded state."""
    response = await http.get("/_emulator/state")
    response.raise_for_status()
    return response.json()


def azure_error(response: httpx.Response) -> dict:
    """Return the Azure error object of ``response``, checking its shape."""
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message", "type", "param"}
    return body["error"]


async def test_each_key_slot_and_the_bearer_token_can_mint(http, keys):
    """Key 1, key 2 and the Entra token mint; the state names each slot but no key value."""
    credentials = [
        {"api-key": keys.key1},
        {"api-key": keys.key2},
        {"Authorization": f"Bearer {keys.bearer}"},
    ]
    answers = [await http.post(MINT, headers=h, json=mint_body()) for h in credentials]

    recorded = await state(http)

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [m["auth"] for m in recorded["mints"]] == ["key1", "key2", "bearer"]
    assert [m["session"] for m in recorded["mints"]] == [mint_body()["session"]] * 3
    assert recorded["counters"]["client_secrets"] == {"200": 3}
    text = json.dumps(recorded)
    for secret in (keys.key1, keys.key2, keys.bearer, *(a.json()["value"] for a in answers)):
        assert secret not in text


async def test_the_log_names_each_minted_key_by_its_fingerprint_only(http, keys):
    """``emulator.mint_accepted`` carries the key's fingerprint, never the key itself."""
    with capture_logs() as logs:
        answers = [await mint(http, keys) for _ in range(3)]

    values = [a.json()["value"] for a in answers]
    accepted = [e for e in logs if e["event"] == "emulator.mint_accepted"]
    assert [e["key"] for e in accepted] == [fingerprint(v) for v in values]
    assert len({e["key"] for e in accepted}) == 3
    text = repr(logs)
    assert not any(v in text for v in values)


async def test_the_answer_matches_the_sdk_model(http, keys):
    """The mint answer is a ClientSecretCreateResponse with an ek_ value and nothing undeclared."""
    body = mint_body(seconds=120)
    validate_client_secret_params(body)

    response = await http.post(MINT, headers={"api-key": keys.key1}, json=body)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    answer = validate_model(ClientSecretCreateResponse, response.json())
    assert answer.value.startswith("ek_")
    assert answer.session.id.startswith("sess_")
    assert answer.session.instructions == body["session"]["instructions"]
    assert answer.expires_at - time.time() == pytest.approx(120, abs=5)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"api-key": "0" * 32},
        {"Authorization": "Bearer entra-not-accepted"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["none", "wrong-key", "unknown-bearer", "basic"],
)
async def test_missing_or_wrong_credentials_are_refused(http, headers):
    """Without an accepted key or token the mint is Azure's 401 JSON error."""
    response = await http.post(MINT, headers=headers, json=mint_body())

    assert response.status_code == 401
    azure_error(response)
    assert (await state(http))["mints"][-1] == {
        "at": pytest.approx(time.time(), abs=3600),
        "status": 401,
        "auth": None,
        "session": None,
        "session_id": None,
    }


async def test_an_ephemeral_key_cannot_mint_another(http, keys):
    """An ek_ value authenticates calls only, never client_secrets."""
    value = (await mint(http, keys)).json()["value"]

    response = await http.post(MINT, headers={"Authorization": f"Bearer {value}"}, json=mint_body())

    assert response.status_code == 401


@pytest.mark.parametrize(
    "path", [MINT, CALLS, f"{CALLS}/rtc_x/hangup"], ids=["client_secrets", "calls", "hangup"]
)
async def test_api_version_is_refused_on_v1_paths(http, keys, path):
    """Azure's GA paths answer 401 to an api-version query, even with a valid key."""
    response = await http.post(
        f"{path}?api-version=2025-04-01-preview", headers={"api-key": keys.key1}, json=mint_body()
    )

    assert response.status_code == 401
    assert azure_error(response)["param"] == "api-version"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"audio": {"output": {"voice": "nova"}}}, "session.audio.output.voice"),
        ({"type": "transcription"}, "session.type"),
        ({"temperature": 0.8}, "session.temperature"),
    ],
)
async def test_invalid_sessions_get_400_naming_the_param(http, keys, change, param):
    """Bad voice, session type or an unknown field is a 400 whose ``param`` names it."""
    body = mint_body()
    body["session"].update(change)

    response = await http.post(MINT, headers={"api-key": keys.key1}, json=body)

    assert response.status_code == 400
    assert azure_error(response)["param"] == param


async def test_an_out_of_range_lifetime_gets_400(http, keys):
    """``expires_after.seconds`` outside 10..7200 is refused by name."""
    response = await mint(http, keys, seconds=7201)

    assert response.status_code == 400
    assert azure_error(response)["param"] == "expires_after.seconds"


async def test_an_unknown_deployment_gets_404(http, keys):
    """A model that is not deployed here is Azure's 404 DeploymentNotFound."""
    response = await mint(http, keys, model="gpt-4o-realtime-preview")

    assert response.status_code == 404
    assert azure_error(response)["code"] == "DeploymentNotFound"


async def test_injected_500_twice_then_success(http, keys):
    """``{"status": 500, "count": 2}`` fails the next two mints Azure-style, then they work."""
    set_fault = await http.post("/_emulator/faults", json={"status": 500, "count": 2})

    statuses = [(await mint(http, keys)).status_code for _ in range(3)]

    assert set_fault.status_code == 200
    assert statuses == [500, 500, 200]
    counters = (await state(http))["counters"]["client_secrets"]
    assert counters == {"500": 2, "200": 1}


async def test_injected_throttling_carries_retry_after(http, keys):
    """An injected 429 answers with Retry-After, as Azure's throttling does."""
    await http.post("/_emulator/faults", json={"status": 429, "count": 1, "retry_after": 3})

    response = await mint(http, keys)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert azure_error(response)["code"] == "429"


async def test_faults_can_target_calls(http, keys):
    """A fault on ``calls`` fails the SDP exchange but not the mint."""
    await http.post("/_emulator/faults", json={"target": "calls", "status": 503, "count": 1})
    value = (await mint(http, keys)).json()["value"]

    response = await http.post(
        CALLS,
        content="v=0\r\n",
        headers={"Authorization": f"Bearer {value}", "Content-Type": "application/sdp"},
    )

    assert response.status_code == 503


async def test_injected_latency_delays_the_answer(http, keys):
    """With 300 ms latency injected, a mint takes at least that long."""
    await http.post("/_emulator/faults", json={"latency_ms": 300})

    started = time.monotonic()
    response = await mint(http, keys)

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.3


async def test_a_hang_is_observable_with_a_client_timeout(http, base_url, keys):
    """A hung mint times the client out; clearing the faults releases it and mints work again."""
    await http.post("/_emulator/faults", json={"hang": True})

    async with httpx.AsyncClient(base_url=base_url, timeout=0.5) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await mint(impatient, keys)
    assert (await state(http))["faults"]["hung_requests"] == 1
    await http.post("/_emulator/faults", json={"clear": True})

    async def released() -> bool:
        return (await state(http))["faults"]["hung_requests"] == 0

    await async_poll_until(released, timeout=20, what="the hung mint to be released")
    assert (await mint(http, keys)).status_code == 200


async def test_regenerating_a_key_replaces_that_slot(http, keys):
    """A regenerated key 2 is returned once; the old key 2 fails, the new one and key 1 work."""
    response = await http.post("/_emulator/keys/2/regenerate")
    new_key = response.json()["key"]

    old = await http.post(MINT, headers={"api-key": keys.key2}, json=mint_body())
    new = await http.post(MINT, headers={"api-key": new_key}, json=mint_body())
    other = await mint(http, keys)

    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert (old.status_code, new.status_code, other.status_code) == (401, 200, 200)
    recorded = await state(http)
    assert recorded["mints"][-2]["auth"] == "key2"
    assert recorded["key_regenerations"] == {"1": 0, "2": 1}
    assert new_key not in json.dumps(recorded)


async def test_only_slots_one_and_two_can_be_regenerated(http):
    """Slot 3 does not exist: 400 naming ``slot``."""
    response = await http.post("/_emulator/keys/3/regenerate")

    assert response.status_code == 400
    assert azure_error(response)["param"] == "slot"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"api-key": "KEY1"},
        {"Authorization": "Bearer BEARER"},
        {"Authorization": "Bearer ek_never-minted"},
    ],
    ids=["none", "resource-key", "entra-token", "unknown-ek"],
)
async def test_calls_need_an_ephemeral_key(http, keys, headers):
    """A resource key, an Entra token or an unknown ek cannot create a call."""
    resolved = {
        k: v.replace("KEY1", keys.key1).replace("BEARER", keys.bearer) for k, v in headers.items()
    }

    response = await http.post(
        CALLS, content="v=0\r\n", headers={**resolved, "Content-Type": "application/sdp"}
    )

    assert response.status_code == 401
    azure_error(response)


async def test_an_expired_key_cannot_create_a_call(http, keys, clock):
    """Once the clock passes ``expires_at`` the key is refused as expired."""
    value = (await mint(http, keys, seconds=10)).json()["value"]
    clock.now += 10

    response = await http.post(
        CALLS,
        content="v=0\r\n",
        headers={"Authorization": f"Bearer {value}", "Content-Type": "application/sdp"},
    )

    assert response.status_code == 401
    assert azure_error(response)["code"] == "ephemeral_token_expired"


async def test_a_wrong_content_type_does_not_spend_the_key(http, keys):
    """A JSON or form body is a 415; the same key then still creates the call."""
    value = (await mint(http, keys)).json()["value"]
    client = RealtimeTestClient()
    try:
        offer = await client.offer()
        wrong = await http.post(
            CALLS,
            content=offer,
            headers={"Authorization": f"Bearer {value}", "Content-Type": "application/json"},
        )
        right = await client.call(http, value)
    finally:
        await client.close()

    assert wrong.status_code == 415
    assert azure_error(wrong)["code"] == "unsupported_content_type"
    assert right.status_code == 201


@pytest.mark.parametrize(
    "sdp",
    [
        "hello",
        "",
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n",
        "v=0\r\nm=audio nonsense\r\n",
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video\r\n",
    ],
    ids=["not-sdp", "empty", "no-ice-credentials", "malformed-media-line", "short-media-line"],
)
async def test_a_bad_offer_is_400(http, keys, sdp):
    """A body that is not a usable SDP offer is a 400 naming ``sdp``, and no call stays open."""
    value = (await mint(http, keys)).json()["value"]

    response = await http.post(
        CALLS,
        content=sdp,
        headers={"Authorization": f"Bearer {value}", "Content-Type": "application/sdp"},
    )

    assert response.status_code == 400
    assert azure_error(response)["param"] == "sdp"
    assert (await state(http))["active_calls"] == 0


async def test_hanging_up_an_unknown_call_is_404(http, keys):
    """Hangup of a call id the emulator never issued is a 404 naming ``call_id``."""
    response = await http.post(f"{CALLS}/rtc_unknown/hangup", headers={"api-key": keys.key1})

    assert response.status_code == 404
    assert azure_error(response)["param"] == "call_id"


async def test_hangup_needs_a_resource_credential(http):
    """Hangup without a key is a 401, before the call is even looked up."""
    response = await http.post(f"{CALLS}/rtc_unknown/hangup")

    assert response.status_code == 401


async def test_browsers_may_call_cross_origin(http):
    """The CORS preflight for the browser's SDP post is allowed and Location is readable."""
    response = await http.options(
        CALLS,
        headers={
            "Origin": "http://127.0.0.1:8000",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    simple = await http.get("/healthz", headers={"Origin": "http://127.0.0.1:8000"})

    assert response.status_code in {200, 204}
    assert response.headers["access-control-allow-origin"] == "*"
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed
    assert "content-type" in allowed
    assert "location" in simple.headers["access-control-expose-headers"].lower()


async def test_unknown_paths_answer_like_azure(http):
    """A path Azure does not serve is a 404 in Azure's JSON error shape."""
    response = await http.post("/openai/v1/realtime/sessions", json={})

    assert response.status_code == 404
    azure_error(response)
