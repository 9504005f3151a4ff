"""Upstream and input failures of POST /realtime/calls: mapped answers, nothing left held."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from engram_voice.realtime.calls import CallLimits
from engram_voice.services import Overrides
from tests.conftest import Emulator, ServiceFactory, service_env
from tests.support.calls import MINIMAL_OFFER, HeaderUsers, emulator_call_ids, post_call

FAULTS = [
    # (emulator target, injected status, our status, our code)
    ("client_secrets", 401, 502, "upstream_auth"),
    ("client_secrets", 404, 502, "upstream_rejected"),
    ("client_secrets", 429, 503, "upstream_throttled"),
    ("client_secrets", 500, 502, "upstream_unavailable"),
    ("calls", 401, 502, "upstream_auth"),
    ("calls", 404, 502, "upstream_rejected"),
    ("calls", 429, 503, "upstream_throttled"),
    ("calls", 500, 502, "upstream_unavailable"),
    ("calls", 503, 502, "upstream_unavailable"),
]


def _overrides() -> Overrides:
    # One call per user: a failed setup that kept its slot would refuse the next call.
    return Overrides(authenticator=HeaderUsers(), call_limits=CallLimits(max_per_user=1))


def _status_calls(url: str) -> dict[str, Any]:
    calls: dict[str, Any] = httpx.get(f"{url}/status", timeout=10).json()["calls"]
    return calls


def _assert_problem(response: httpx.Response, status: int, code: str, emulator: Emulator) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code
    for secret in (*emulator.keys, emulator.bearer, "ek_", '"error"'):
        assert secret not in response.text


@pytest.mark.parametrize(("target", "injected", "status", "code"), FAULTS)
async def test_upstream_failures_map_to_problems_and_release_the_slot(
    emulator: Emulator,
    make_service: ServiceFactory,
    *,
    target: str,
    injected: int,
    status: int,
    code: str,
) -> None:
    """Each refused mint or call is the minting path's problem; no call is held afterwards."""
    env = service_env(emulator, ENDPOINT_FAILURE_THRESHOLD="1000")
    with make_service(env, _overrides()) as url:
        before = emulator_call_ids(emulator)
        emulator.fault(target=target, status=injected, count=1000, retry_after=7)
        failed = await post_call(url, MINIMAL_OFFER)
        emulator.clear()
        created = emulator_call_ids(emulator) - before
        calls = _status_calls(url)
        again = await post_call(url, MINIMAL_OFFER)  # the slot was released: a 400, not a 429
    _assert_problem(failed, status, code, emulator)
    if status == 503:
        assert failed.headers["retry-after"] == "7"
    assert calls["active"] == 0
    assert again.status_code == 400
    assert created == set()


@pytest.mark.parametrize("target", ["client_secrets", "calls"])
async def test_an_upstream_that_does_not_answer_in_time_is_a_504(
    emulator: Emulator, make_service: ServiceFactory, target: str
) -> None:
    """A mint or an offer the upstream sits on is answered 504 within the configured bound."""
    env = service_env(emulator, UPSTREAM_TIMEOUT_SECONDS="0.3", UPSTREAM_DEADLINE_SECONDS="0.3")
    with make_service(env, _overrides()) as url:
        emulator.fault(target=target, hang=True)
        try:
            failed = await post_call(url, MINIMAL_OFFER)
        finally:
            emulator.clear()
        calls = _status_calls(url)
    _assert_problem(failed, 504, "upstream_timeout", emulator)
    assert calls["active"] == 0


async def test_an_offer_azure_cannot_use_is_a_400_naming_the_offer(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """An SDP offer of the right shape that the upstream refuses is the caller's 400."""
    with make_service(service_env(emulator), _overrides()) as url:
        refused = await post_call(url, MINIMAL_OFFER)
    _assert_problem(refused, 400, "validation_failed", emulator)
    assert refused.json()["errors"] == [
        {"field": "sdp_offer", "message": "Azure could not use the SDP offer"}
    ]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"agent": "elena"}, 400, "sdp_offer"),
        ({"agent": "elena", "sdp_offer": ""}, 400, "sdp_offer"),
        ({"agent": "elena", "sdp_offer": "hello"}, 400, "sdp_offer"),
        ({"agent": "elena", "sdp_offer": "v=0\r\ns=-\r\n"}, 400, "sdp_offer"),
        ({"agent": "elena", "sdp_offer": "v=0\r\nm=" + "a" * 65536}, 400, "sdp_offer"),
        ({"agent": "elena", "sdp_offer": MINIMAL_OFFER, "key": "x"}, 400, "key"),
        ({"agent": "el ena", "sdp_offer": MINIMAL_OFFER}, 400, "agent"),
        (
            {"agent": "elena", "sdp_offer": MINIMAL_OFFER, "conversation_id": "x"},
            400,
            "conversation_id",
        ),
    ],
)
async def test_bad_bodies_are_400s_naming_the_field_before_any_upstream_work(
    emulator: Emulator, make_service: ServiceFactory, body: dict[str, Any], status: int, field: str
) -> None:
    """Malformed bodies get 400 validation_failed naming the field, and mint nothing."""
    with make_service(service_env(emulator), _overrides()) as url:
        mints = len(emulator.state()["mints"])  # type: ignore[arg-type]
        async with httpx.AsyncClient(timeout=20) as http:
            response = await http.post(
                f"{url}/realtime/calls", json=body, headers={"X-Test-User": "alice"}
            )
        after = len(emulator.state()["mints"])  # type: ignore[arg-type]
    _assert_problem(response, status, "validation_failed", emulator)
    assert [e["field"] for e in response.json()["errors"]] == [field]
    assert after == mints


async def test_unknown_agents_unauthenticated_callers_and_huge_bodies_are_refused(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """404 for an unknown agent, 401 without a caller, 413 over the body limit."""
    with make_service(service_env(emulator), _overrides()) as url:
        unknown = await post_call(url, MINIMAL_OFFER, agent="nobody")
        async with httpx.AsyncClient(timeout=20) as http:
            anonymous = await http.post(
                f"{url}/realtime/calls", json={"agent": "elena", "sdp_offer": MINIMAL_OFFER}
            )
            anonymous_delete = await http.delete(f"{url}/realtime/calls/rc_1")
            huge = await http.post(
                f"{url}/realtime/calls",
                content=b'{"agent": "elena", "sdp_offer": "' + b"v" * 300_000 + b'"}',
                headers={"X-Test-User": "alice", "Content-Type": "application/json"},
            )
    _assert_problem(unknown, 404, "not_found", emulator)
    _assert_problem(anonymous, 401, "unauthenticated", emulator)
    _assert_problem(anonymous_delete, 401, "unauthenticated", emulator)
    _assert_problem(huge, 413, "payload_too_large", emulator)


async def test_an_agent_on_an_upstream_this_deployment_lacks_is_a_503(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """When no implementation serves the agent's upstream the answer is 503, saying so."""
    overrides = Overrides(authenticator=HeaderUsers(), call_upstreams={})
    with make_service(service_env(emulator), overrides) as url:
        refused = await post_call(url, MINIMAL_OFFER)
    _assert_problem(refused, 503, "upstream_not_configured", emulator)
    assert "'azure-openai'" in refused.json()["detail"]
