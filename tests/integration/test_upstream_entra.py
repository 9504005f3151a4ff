"""Upstream auth with Microsoft Entra ID bearer tokens through azure-identity's provider."""

from __future__ import annotations

import httpx
from azure.identity.aio import get_bearer_token_provider

from engram_voice.credentials import COGNITIVE_SERVICES_SCOPE, EntraTokenSource
from engram_voice.services import Overrides
from tests.conftest import Emulator, ServiceFactory, service_env
from tests.support.entra import FakeTokenCredential


def _entra_source(credential: FakeTokenCredential, timeout: float = 2.0) -> EntraTokenSource:
    provider = get_bearer_token_provider(credential, COGNITIVE_SERVICES_SCOPE)  # type: ignore[arg-type]
    return EntraTokenSource(provider, timeout=timeout, identity="test identity")


def _entra_env(emulator: Emulator) -> dict[str, str]:
    env = service_env(emulator, AZURE_OPENAI_AUTH="entra")
    del env["AZURE_OPENAI_API_KEY"]
    return env


def test_entra_bearer_token_authenticates_the_mint(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """With AZURE_OPENAI_AUTH=entra the mint carries a Cognitive Services bearer token."""
    credential = FakeTokenCredential(emulator.bearer)
    overrides = Overrides(credentials=_entra_source(credential))
    with make_service(_entra_env(emulator), overrides) as url:
        response = httpx.post(f"{url}/realtime/sessions", json={"agent": "marcus"}, timeout=20)
        status = httpx.get(f"{url}/status", timeout=10).json()
    assert response.status_code == 201, response.text
    assert credential.scopes[0] == (COGNITIVE_SERVICES_SCOPE,)
    assert emulator.state()["mints"][-1]["auth"] == "bearer"  # type: ignore[index]
    assert status["realtime"]["credential"]["kind"] == "entra"
    assert emulator.bearer not in str(status)


def test_a_hanging_token_provider_is_cut_off_with_504_and_not_ready(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """A managed identity that never answers gives 504 credential_timeout and readiness fails."""
    overrides = Overrides(credentials=_entra_source(FakeTokenCredential("x", hang=True), 0.3))
    with make_service(_entra_env(emulator), overrides) as url:
        minted = httpx.post(f"{url}/realtime/sessions", json={"agent": "elena"}, timeout=20)
        ready = httpx.get(f"{url}/readyz", timeout=20)
        alive = httpx.get(f"{url}/healthz", timeout=20)
    assert minted.status_code == 504
    assert minted.json()["code"] == "credential_timeout"
    assert ready.status_code == 504
    assert alive.status_code == 200


def test_a_rejected_entra_token_maps_to_upstream_auth(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """A token Azure refuses (e.g. missing role) gives 502 upstream_auth without the token."""
    overrides = Overrides(credentials=_entra_source(FakeTokenCredential("not-accepted-token")))
    with make_service(_entra_env(emulator), overrides) as url:
        response = httpx.post(f"{url}/realtime/sessions", json={"agent": "elena"}, timeout=20)
    assert response.status_code == 502
    assert response.json()["code"] == "upstream_auth"
    assert "not-accepted-token" not in response.text
