"""Caller authentication of POST /realtime/sessions on the real service, in each AUTH_MODE."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar, get

from tests.conftest import Emulator, ServiceFactory, service_env
from tests.support.entra import SigningKey, Tenant, jwks
from tests.support.servers import serve_app


@pytest.fixture(name="signing_key", scope="module")
def fixture_signing_key() -> SigningKey:
    """Return the test tenant's signing key."""
    return SigningKey("tenant-key-1")


@pytest.fixture(name="jwks_url", scope="module")
def fixture_jwks_url(signing_key: SigningKey) -> Iterator[str]:
    """Serve the tenant's JWKS on loopback and yield its URL."""

    @get("/keys", sync_to_thread=False)
    def keys() -> dict[str, Any]:
        return jwks(signing_key)

    with serve_app(Litestar([keys])) as base:
        yield f"{base}/keys"


def _mint(url: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(
        f"{url}/realtime/sessions", json={"agent": "elena"}, headers=headers, timeout=20
    )


def test_entra_mode_accepts_valid_tokens_and_refuses_bad_ones(
    emulator: Emulator, make_service: ServiceFactory, signing_key: SigningKey, jwks_url: str
) -> None:
    """Valid tokens mint; expired, wrong-audience, forged and missing tokens get 401."""
    tenant = Tenant()
    other_key = SigningKey(signing_key.kid)
    env = service_env(emulator, **tenant.env(jwks_url))
    with make_service(env) as url:
        valid = _mint(url, tenant.token(signing_key))
        expired = _mint(url, tenant.token(signing_key, exp=int(time.time()) - 3600))
        wrong_audience = _mint(url, tenant.token(signing_key, aud="api://someone-else"))
        forged = _mint(url, tenant.token(other_key))
        missing = _mint(url, None)
    assert valid.status_code == 201, valid.text
    for refused in (expired, wrong_audience, forged, missing):
        assert refused.status_code == 401
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert refused.json()["code"] == "unauthenticated"
    assert "expired" in expired.json()["detail"].lower()


def test_rate_limit_is_per_user_in_entra_mode(
    emulator: Emulator, make_service: ServiceFactory, signing_key: SigningKey, jwks_url: str
) -> None:
    """One user hitting the mint limit does not limit another user."""
    tenant = Tenant()
    env = service_env(emulator, MINT_RATE_LIMIT="1/minute", **tenant.env(jwks_url))
    alice = tenant.token(signing_key, oid="00000000-0000-0000-0000-00000000a11c")
    bob = tenant.token(signing_key, oid="00000000-0000-0000-0000-0000000000b0")
    with make_service(env) as url:
        assert _mint(url, alice).status_code == 201
        assert _mint(url, alice).status_code == 429
        assert _mint(url, bob).status_code == 201


def test_none_mode_treats_every_caller_as_the_local_user(
    emulator: Emulator, make_service: ServiceFactory
) -> None:
    """Without auth the service mints for anyone on loopback, as the local user."""
    with make_service(service_env(emulator, LOCAL_USER_ID="dev-ada")) as url:
        assert _mint(url, None).status_code == 201


def test_none_mode_refuses_a_network_bind_unless_forced(emulator: Emulator) -> None:
    """AUTH_MODE=none on 0.0.0.0 stops start-up with a message saying how to force it."""
    from engram_voice.errors import ConfigurationError  # noqa: PLC0415
    from engram_voice.settings import Settings  # noqa: PLC0415

    env = service_env(emulator, HOST="0.0.0.0")  # noqa: S104 - validated, never bound
    with pytest.raises(ConfigurationError, match="AUTH_ALLOW_NONE_ON_NETWORK"):
        Settings.from_env(env)
    forced = Settings.from_env({**env, "AUTH_ALLOW_NONE_ON_NETWORK": "true"})
    assert forced.auth.mode == "none"
