"""Auth settings: modes, the loopback rule for ``none``, Entra defaults, CORS, rate limit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from litestar import Litestar, post
from litestar.testing import TestClient

from engram_voice.auth import (
    AuthSettings,
    EasyAuthAuthenticator,
    EntraAuthenticator,
    NoAuthenticator,
    auth_warning,
    build_authenticator,
    cors_config,
    is_loopback_host,
)
from engram_voice.envreader import EnvReader
from engram_voice.errors import ConfigurationError

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - a bind address the settings judge; nothing binds
ENTRA = {"ENTRA_TENANT_ID": TENANT, "ENTRA_AUDIENCE": "api://engram-voice"}


def read(env: dict[str, str], *, host: str = "127.0.0.1") -> AuthSettings:
    """Read auth settings from ``env`` and raise ConfigurationError listing every problem."""
    reader = EnvReader(env)
    settings = AuthSettings.from_env(reader, bind_host=host)
    reader.raise_if_invalid()
    return settings


def problems(env: dict[str, str], *, host: str = "127.0.0.1") -> str:
    """Return the configuration error message ``env`` produces (fail if it is valid)."""
    with pytest.raises(ConfigurationError) as info:
        read(env, host=host)
    return str(info.value)


@pytest.fixture(name="http")
async def fixture_http() -> AsyncIterator[httpx.AsyncClient]:
    """Return an httpx client that is never used to reach the network."""
    async with httpx.AsyncClient(timeout=1.0) as client:
        yield client


def test_default_mode_is_entra_and_needs_tenant_and_audience() -> None:
    """With nothing set the mode is ``entra``, and both missing settings are named at once."""
    message = problems({})
    assert "ENTRA_TENANT_ID is required when AUTH_MODE=entra" in message
    assert "ENTRA_AUDIENCE is required when AUTH_MODE=entra" in message


def test_entra_defaults_derive_from_the_tenant() -> None:
    """Issuers (v2.0 and v1.0), JWKS URL, leeway and refresh bounds default sensibly."""
    entra = read(ENTRA).entra
    assert entra.issuers == (
        f"https://login.microsoftonline.com/{TENANT}/v2.0",
        f"https://sts.windows.net/{TENANT}/",
    )
    assert entra.jwks_url == f"https://login.microsoftonline.com/{TENANT}/discovery/v2.0/keys"
    assert entra.audiences == ("api://engram-voice",)
    assert entra.leeway_seconds == 60
    assert entra.jwks_min_refetch_seconds == 60.0
    assert entra.jwks_cache_seconds == 3600.0


def test_entra_settings_can_be_overridden() -> None:
    """Audience list, issuer list, JWKS URL and leeway come from the environment."""
    entra = read(
        {
            **ENTRA,
            "ENTRA_AUDIENCE": "api://engram-voice, 6e8b0f0a-client-id",
            "ENTRA_ISSUER": "https://issuer.example/v2.0",
            "ENTRA_JWKS_URL": "http://127.0.0.1:9999/keys",
            "ENTRA_LEEWAY_SECONDS": "5",
        }
    ).entra
    assert entra.audiences == ("api://engram-voice", "6e8b0f0a-client-id")
    assert entra.issuers == ("https://issuer.example/v2.0",)
    assert entra.jwks_url == "http://127.0.0.1:9999/keys"
    assert entra.leeway_seconds == 5


def test_plain_http_jwks_url_is_refused_off_loopback() -> None:
    """Signing keys fetched over plain http from another host would let anyone forge tokens."""
    message = problems({**ENTRA, "ENTRA_JWKS_URL": "http://keys.example.com/keys"})
    assert "ENTRA_JWKS_URL" in message
    assert "https" in message


def test_unknown_mode_is_refused() -> None:
    """An ``AUTH_MODE`` outside entra/easyauth/none stops start-up naming the choices."""
    assert "AUTH_MODE='basic' must be one of entra, easyauth, none" in problems(
        {"AUTH_MODE": "basic"}
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_none_mode_runs_on_loopback(host: str) -> None:
    """``AUTH_MODE=none`` is accepted on a loopback bind and needs no Entra settings."""
    settings = read({"AUTH_MODE": "none"}, host=host)
    assert settings.mode == "none"
    assert not settings.none_on_network


@pytest.mark.parametrize("host", [ALL_INTERFACES, "::", "10.0.0.4", "engram.internal"])
def test_none_mode_refuses_a_network_bind(host: str) -> None:
    """``AUTH_MODE=none`` on a reachable bind stops start-up saying why and how to force it."""
    message = problems({"AUTH_MODE": "none"}, host=host)
    assert f"HOST={host!r}" in message
    assert "AUTH_ALLOW_NONE_ON_NETWORK=true" in message


def test_none_mode_on_the_network_can_be_forced() -> None:
    """``AUTH_ALLOW_NONE_ON_NETWORK=true`` lets ``none`` start on 0.0.0.0, flagged as such."""
    settings = read(
        {"AUTH_MODE": "none", "AUTH_ALLOW_NONE_ON_NETWORK": "true"}, host=ALL_INTERFACES
    )
    assert settings.none_on_network
    warning = auth_warning(settings)
    assert warning is not None
    assert "AUTHENTICATION IS OFF" in warning
    assert "0.0.0.0" in warning  # noqa: S104


def test_only_none_mode_gets_a_startup_warning() -> None:
    """Entra and EasyAuth modes start quietly; ``none`` on loopback still warns."""
    assert auth_warning(read(ENTRA)) is None
    assert auth_warning(read({"AUTH_MODE": "easyauth"}, host=ALL_INTERFACES)) is None
    local = auth_warning(read({"AUTH_MODE": "none", "LOCAL_USER_ID": "dev-ada"}))
    assert local is not None
    assert "dev-ada" in local


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("LOCALHOST", True), (ALL_INTERFACES, False), ("", False)],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    """Only addresses reachable from this machine alone count as loopback."""
    assert is_loopback_host(host) is loopback


async def test_each_mode_builds_its_authenticator(http: httpx.AsyncClient) -> None:
    """``build_authenticator`` returns the implementation that ``AUTH_MODE`` names."""
    assert isinstance(build_authenticator(read(ENTRA), http), EntraAuthenticator)
    easy = read({"AUTH_MODE": "easyauth"}, host=ALL_INTERFACES)
    assert isinstance(build_authenticator(easy, http), EasyAuthAuthenticator)
    local = build_authenticator(read({"AUTH_MODE": "none", "LOCAL_USER_ID": "dev-ada"}), http)
    assert isinstance(local, NoAuthenticator)
    assert (await local.authenticate({})).user_id == "dev-ada"


def test_mint_rate_limit_defaults_and_validation() -> None:
    """The mint limit defaults to 20/minute, accepts several windows and refuses nonsense."""
    assert read(ENTRA).mint_rate_limit == "20/minute"
    assert read({**ENTRA, "MINT_RATE_LIMIT": "5/minute;50/hour"}).mint_rate_limit == (
        "5/minute;50/hour"
    )
    assert read({**ENTRA, "RATE_LIMIT_ENABLED": "false"}).mint_rate_limit is None
    assert "MINT_RATE_LIMIT='lots' is not a rate limit" in problems(
        {**ENTRA, "MINT_RATE_LIMIT": "lots"}
    )


def test_cors_is_same_origin_only_by_default() -> None:
    """Without ``CORS_ALLOW_ORIGINS`` no CORS policy is installed."""
    assert cors_config(read(ENTRA)) is None


@pytest.mark.parametrize("origin", ["*", "https://*.example.com", "https://app.example.com/x"])
def test_cors_entries_must_be_exact_origins(origin: str) -> None:
    """Wildcards and paths in ``CORS_ALLOW_ORIGINS`` stop start-up naming the entry."""
    message = problems({**ENTRA, "CORS_ALLOW_ORIGINS": f"https://ok.example.com,{origin}"})
    assert f"CORS_ALLOW_ORIGINS entry {origin!r}" in message


def test_cors_allows_exactly_the_listed_origins() -> None:
    """A listed origin gets CORS headers on preflight and requests; another origin does not."""
    settings = read(
        {**ENTRA, "CORS_ALLOW_ORIGINS": "https://app.example.com/, http://localhost:5173"}
    )
    assert settings.cors_allow_origins == ("https://app.example.com", "http://localhost:5173")

    @post("/realtime/sessions", sync_to_thread=False)
    def mint() -> dict[str, str]:
        return {"ok": "yes"}

    app = Litestar([mint], cors_config=cors_config(settings))
    with TestClient(app) as client:
        preflight = client.options(
            "/realtime/sessions",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "access-control-allow-credentials" not in preflight.headers
        allowed = client.post("/realtime/sessions", headers={"Origin": "http://localhost:5173"})
        assert allowed.headers["access-control-allow-origin"] == "http://localhost:5173"
        other = client.post("/realtime/sessions", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("user_id", ["dev\x00ada", "dev\x1bada", "x" * 513])
def test_an_unusable_local_user_id_stops_start_up(user_id: str) -> None:
    """``LOCAL_USER_ID`` follows the one user id rule: a bad one is a configuration error."""
    message = problems({"AUTH_MODE": "none", "LOCAL_USER_ID": user_id})
    assert "LOCAL_USER_ID=" in message
    assert "not a usable user id" in message


@pytest.mark.parametrize("user_id", ["a/b", "x?y=1#z", "..", "Zoë"])
def test_a_local_user_id_may_hold_url_reserved_characters(user_id: str) -> None:
    """Reserved characters are fine in ``LOCAL_USER_ID``: the memory sink maps them."""
    assert read({"AUTH_MODE": "none", "LOCAL_USER_ID": user_id}).local_user_id == user_id
