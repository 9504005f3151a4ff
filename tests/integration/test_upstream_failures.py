"""Failover across endpoints and the mapping of upstream failures to problem+json."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import Emulator, ServiceFactory, service_env


def _mint(url: str) -> httpx.Response:
    return httpx.post(f"{url}/realtime/sessions", json={"agent": "elena"}, timeout=30)


def _two_regions(primary: Emulator, secondary: Emulator, **extra: str) -> dict[str, str]:
    return service_env(primary, AZURE_OPENAI_ENDPOINTS=f"{primary.url},{secondary.url}", **extra)


@pytest.mark.parametrize(
    "fault",
    [{"status": 500}, {"status": 503}, {"status": 429, "retry_after": 7}, {"hang": True}],
    ids=["500", "503", "429", "hang"],
)
def test_a_failing_first_endpoint_fails_over_to_the_second(
    emulator: Emulator,
    second_emulator: Emulator,
    make_service: ServiceFactory,
    fault: dict[str, object],
) -> None:
    """When the first region errors, throttles or hangs, the key comes from the second."""
    emulator.fault(**fault)
    env = _two_regions(emulator, second_emulator, UPSTREAM_TIMEOUT_SECONDS="0.5")
    with make_service(env) as url:
        response = _mint(url)
        status = httpx.get(f"{url}/status", timeout=10).json()
    assert response.status_code == 201, response.text
    assert response.json()["webrtc_url"].startswith(second_emulator.url)
    first, second = status["realtime"]["endpoints"]
    assert first["failures"] == 1
    assert second["successes"] == 1


def test_an_endpoint_that_keeps_failing_is_skipped_for_a_while(
    emulator: Emulator, second_emulator: Emulator, make_service: ServiceFactory
) -> None:
    """After ENDPOINT_FAILURE_THRESHOLD failures the first endpoint is not tried at all."""
    emulator.fault(status=500)
    env = _two_regions(emulator, second_emulator, ENDPOINT_FAILURE_THRESHOLD="2")
    with make_service(env) as url:
        for _ in range(4):
            assert _mint(url).status_code == 201
        endpoints = httpx.get(f"{url}/status", timeout=10).json()["realtime"]["endpoints"]
    assert endpoints[0]["failures"] == 2
    assert endpoints[0]["healthy"] is False
    assert endpoints[1]["successes"] == 4


def test_timeouts_everywhere_map_to_504_within_the_configured_bound(
    emulator: Emulator, second_emulator: Emulator, make_service: ServiceFactory
) -> None:
    """Hanging upstreams give 504 upstream_timeout, bounded by the per-attempt timeout."""
    emulator.fault(hang=True)
    second_emulator.fault(hang=True)
    env = _two_regions(emulator, second_emulator, UPSTREAM_TIMEOUT_SECONDS="0.5")
    with make_service(env) as url:
        started = time.monotonic()
        response = _mint(url)
        elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["code"] == "upstream_timeout"
    assert elapsed < 0.5 * 2 + 5  # two attempts of 0.5 s, plus generous scheduling slack


def test_throttling_everywhere_maps_to_503_with_retry_after(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """429 from every endpoint gives 503 upstream_throttled with Azure's Retry-After."""
    emulator.fault(status=429, retry_after=9)
    with make_service(service_env(emulator)) as url:
        response = _mint(url)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "9"
    assert response.json()["code"] == "upstream_throttled"


def test_upstream_401_maps_to_502_without_leaking(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """A wrong key gives 502 upstream_auth with our own words, not Azure's body or the key."""
    wrong_key = "wrong-key-0123456789abcdef"
    with make_service(service_env(emulator, AZURE_OPENAI_API_KEY=wrong_key)) as url:
        response = _mint(url)
    assert response.status_code == 502
    problem = response.json()
    assert problem["code"] == "upstream_auth"
    assert wrong_key not in response.text
    assert "Access denied" not in response.text


def test_unknown_deployment_maps_to_502_upstream_rejected(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """A deployment Azure does not know is reported as upstream_rejected, not retried forever."""
    with make_service(service_env(emulator, AZURE_OPENAI_DEPLOYMENT="no-such-model")) as url:
        response = _mint(url)
    assert response.status_code == 502
    assert response.json()["code"] == "upstream_rejected"
    assert "deployment" in response.json()["detail"]
