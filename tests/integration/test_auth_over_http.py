"""Entra mode over real loopback HTTP: a test tenant's JWKS server and a minting endpoint.

The JWKS is served by a tiny Litestar app; a second tiny app authenticates and rate-limits
like ``POST /realtime/sessions`` does, with the service's one error mapping, so the tests
see the status codes, problem bodies and headers a browser would.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request, get, post
from litestar.datastructures import State

from engram_voice.auth import AuthSettings, MintRateLimiter, build_authenticator
from engram_voice.envreader import EnvReader
from engram_voice.errors import PROBLEM_JSON, exception_handlers
from tests.support.entra import SigningKey, Tenant, jwks
from tests.support.polling import async_poll_until
from tests.support.servers import free_port, serve_app


class JwksServer:
    """A tenant's JWKS URL on loopback that counts requests and can be held or rotated."""

    def __init__(self, *keys: SigningKey) -> None:
        self.document = jwks(*keys)
        self.requests = 0
        self.gate = threading.Event()
        self.gate.set()

    def app(self) -> Litestar:
        """Return the ASGI app serving ``/keys``."""

        @get("/keys")
        async def keys() -> dict[str, Any]:
            self.requests += 1
            await asyncio.to_thread(self.gate.wait, 20)
            return self.document

        return Litestar([keys])


def minting_app(env: dict[str, str]) -> tuple[Litestar, list[int]]:
    """Return an app whose ``POST /mint`` authenticates and rate-limits, and its in-flight count."""
    reader = EnvReader(env)
    settings = AuthSettings.from_env(reader, bind_host="127.0.0.1")
    reader.raise_if_invalid()
    inflight = [0]

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, connect=1.0)) as http:
            app.state.authenticator = build_authenticator(settings, http)
            app.state.limiter = MintRateLimiter(settings.mint_rate_limit)
            yield

    @post("/mint")
    async def mint(request: Request[Any, Any, Any], state: State) -> dict[str, str | None]:
        inflight[0] += 1
        caller = await state.authenticator.authenticate(request.headers)
        await state.limiter.check(caller.user_id)
        return {"user_id": caller.user_id, "display_name": caller.display_name}

    app = Litestar([mint], lifespan=[lifespan], exception_handlers=exception_handlers())
    return app, inflight


Serve = Callable[..., AbstractContextManager[tuple[str, list[int]]]]


@pytest.fixture(name="key", scope="module")
def fixture_key() -> SigningKey:
    """Return the tenant's current signing key."""
    return SigningKey("current")


@pytest.fixture(name="tenant")
def fixture_tenant() -> Tenant:
    """Return a fresh test tenant."""
    return Tenant()


@pytest.fixture(name="jwks_server")
def fixture_jwks_server(key: SigningKey) -> Iterator[tuple[JwksServer, str]]:
    """Serve the tenant's JWKS on loopback; yield the server and its keys URL."""
    server = JwksServer(key)
    with serve_app(server.app()) as base:
        try:
            yield server, f"{base}/keys"
        finally:
            server.gate.set()


@pytest.fixture(name="serve")
def fixture_serve(tenant: Tenant) -> Serve:
    """Return a context manager serving the minting app for a JWKS URL and extra env."""

    @contextmanager
    def serve(jwks_url: str, **env: str) -> Iterator[tuple[str, list[int]]]:
        app, inflight = minting_app(tenant.env(jwks_url, **env))
        with serve_app(app) as base:
            yield base, inflight

    return serve


def bearer(token: str) -> dict[str, str]:
    """Return request headers carrying ``token``."""
    return {"Authorization": f"Bearer {token}"}


def test_valid_token_mints_as_the_oid(
    serve: Serve, jwks_server: tuple[JwksServer, str], tenant: Tenant, key: SigningKey
) -> None:
    """A valid token is accepted over HTTP and the caller is its ``oid``."""
    with serve(jwks_server[1]) as (base, _):
        response = httpx.post(f"{base}/mint", headers=bearer(tenant.token(key)), timeout=10)
    assert response.status_code == 201
    assert response.json() == {
        "user_id": "00000000-0000-0000-0000-0000000000a1",
        "display_name": "Ada Lovelace",
    }


def test_rejections_are_problem_json_without_the_token(
    serve: Serve, jwks_server: tuple[JwksServer, str], tenant: Tenant, key: SigningKey
) -> None:
    """Missing and expired tokens answer 401 problem+json that never echoes the token."""
    now = int(time.time())
    expired = tenant.token(key, iat=now - 7200, exp=now - 3600)
    with serve(jwks_server[1]) as (base, _):
        missing = httpx.post(f"{base}/mint", timeout=10)
        stale = httpx.post(f"{base}/mint", headers=bearer(expired), timeout=10)
    assert missing.status_code == 401
    assert missing.headers["content-type"].startswith(PROBLEM_JSON)
    assert missing.json()["code"] == "unauthenticated"
    assert stale.status_code == 401
    assert stale.json()["reason"] == "expired"
    assert expired not in stale.text


def test_rate_limit_answers_429_with_retry_after(
    serve: Serve, jwks_server: tuple[JwksServer, str], tenant: Tenant, key: SigningKey
) -> None:
    """The third mint within a minute under ``MINT_RATE_LIMIT=2/minute`` is 429 + Retry-After."""
    token = tenant.token(key)
    with serve(jwks_server[1], MINT_RATE_LIMIT="2/minute") as (base, _):
        statuses = [httpx.post(f"{base}/mint", headers=bearer(token), timeout=10) for _ in range(3)]
    assert [r.status_code for r in statuses] == [201, 201, 429]
    assert statuses[2].json()["code"] == "rate_limited"
    assert 1 <= int(statuses[2].headers["retry-after"]) <= 60


def test_unreachable_jwks_answers_503(serve: Serve, tenant: Tenant, key: SigningKey) -> None:
    """With nothing listening at the JWKS URL the answer is 503 credential_unavailable."""
    with serve(f"http://127.0.0.1:{free_port()}/keys") as (base, _):
        response = httpx.post(f"{base}/mint", headers=bearer(tenant.token(key)), timeout=10)
    assert response.status_code == 503
    assert response.json()["code"] == "credential_unavailable"
    assert "retry-after" in response.headers


def test_hanging_jwks_is_bounded_by_its_timeout(
    serve: Serve, jwks_server: tuple[JwksServer, str], tenant: Tenant, key: SigningKey
) -> None:
    """A JWKS server that never answers yields 503 once ``ENTRA_JWKS_TIMEOUT_SECONDS`` ends."""
    server, url = jwks_server
    server.gate.clear()
    with serve(url, ENTRA_JWKS_TIMEOUT_SECONDS="0.5") as (base, _):
        response = httpx.post(f"{base}/mint", headers=bearer(tenant.token(key)), timeout=15)
    assert response.status_code == 503


async def test_concurrent_requests_share_one_jwks_fetch(
    serve: Serve, jwks_server: tuple[JwksServer, str], tenant: Tenant, key: SigningKey
) -> None:
    """Ten requests arriving during the cold-start fetch cause exactly one JWKS request."""
    server, url = jwks_server
    server.gate.clear()
    token = tenant.token(key)
    with serve(url) as (base, inflight):
        async with httpx.AsyncClient(base_url=base, timeout=20) as client:
            calls = [
                asyncio.create_task(client.post("/mint", headers=bearer(token))) for _ in range(10)
            ]
            await async_poll_until(
                lambda: inflight[0] >= 10 and server.requests >= 1,
                timeout=10,
                what="all ten requests arriving",
            )
            server.gate.set()
            responses = await asyncio.wait_for(asyncio.gather(*calls), timeout=20)
    assert [r.status_code for r in responses] == [201] * 10
    assert server.requests == 1


def test_key_rotation_is_picked_up_without_restart(
    serve: Serve, jwks_server: tuple[JwksServer, str], tenant: Tenant, key: SigningKey
) -> None:
    """A token signed with a newly published key passes after one re-fetch."""
    server, url = jwks_server
    rotated = SigningKey("next")
    with serve(url, ENTRA_JWKS_MIN_REFETCH_SECONDS="0") as (base, _):
        first = httpx.post(f"{base}/mint", headers=bearer(tenant.token(key)), timeout=10)
        server.document = jwks(key, rotated)
        second = httpx.post(f"{base}/mint", headers=bearer(tenant.token(rotated)), timeout=10)
    assert (first.status_code, second.status_code) == (201, 201)
    assert server.requests == 2
