"""Readiness and ``/status`` with one or two realtime upstreams (Azure OpenAI, Voice Live)."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from pathlib import Path

import httpx
import pytest

from engram_voice.credentials import EntraTokenSource
from engram_voice.services import Overrides
from tests.conftest import ServiceFactory

VOICELIVE_KEY = secrets.token_hex(16)
OPENAI_KEY = secrets.token_hex(16)


def env_for(*, azure_openai: bool, voice_live: bool) -> dict[str, str]:
    """Return a local environment configuring the chosen upstreams (never contacted here)."""
    env = {
        "APP_ENV": "local",
        "LOG_FORMAT": "json",
        "AUTH_MODE": "none",
        "MEMORY_TOKEN_KEYS": f"k1:{'a' * 64}",
        "SERVE_WEB": "false",
        "MEMORY_SQLITE_PATH": str(Path(tempfile.mkdtemp(prefix="engram-queue-")) / "q.db"),
    }
    if azure_openai:
        env["AZURE_OPENAI_ENDPOINTS"] = "http://127.0.0.1:9"
        env["AZURE_OPENAI_API_KEY"] = OPENAI_KEY
    if voice_live:
        env["AZURE_VOICELIVE_ENDPOINT"] = "http://127.0.0.1:9"
        env["AZURE_VOICELIVE_KEY"] = VOICELIVE_KEY
    return env


async def _hang() -> str:
    await asyncio.Event().wait()
    raise AssertionError("never")


async def _refuse() -> str:
    raise RuntimeError("identity refused")


def broken_source(kind: str) -> EntraTokenSource:
    """Return an Entra source whose token request hangs (``timeout``) or fails (``refused``)."""
    provider = _hang if kind == "timeout" else _refuse
    return EntraTokenSource(provider, timeout=0.3, identity="test identity")


def test_voice_live_alone_is_ready_with_its_own_credential(make_service: ServiceFactory) -> None:
    """With only Voice Live configured readiness names its credential, not 'not-configured'."""
    with make_service(env_for(azure_openai=False, voice_live=True)) as url:
        ready = httpx.get(f"{url}/readyz", timeout=10)
        status = httpx.get(f"{url}/status", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json() == {
        "status": "ready",
        "credential": "api-key",
        "upstreams": {"voice-live": "api-key"},
        "memory": {"available": True},
    }
    realtime = status.json()["realtime"]
    assert realtime["default_upstream"] == "voice-live"
    assert realtime["upstreams"] == {
        "voice-live": {
            "host": "127.0.0.1:9",
            "api_version": "2026-01-01-preview",
            "model": "gpt-realtime",
            "credential": {"kind": "api-key", "source": "configuration"},
            "connect_timeout_seconds": 3.0,
            "answer_timeout_seconds": 10.0,
        }
    }
    assert VOICELIVE_KEY not in status.text


def test_both_upstreams_are_ready_and_described(make_service: ServiceFactory) -> None:
    """With both configured readiness lists both and /status describes each, no secret."""
    with make_service(env_for(azure_openai=True, voice_live=True)) as url:
        ready = httpx.get(f"{url}/readyz", timeout=10)
        status = httpx.get(f"{url}/status", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["upstreams"] == {"azure-openai": "api-key", "voice-live": "api-key"}
    upstreams = status.json()["realtime"]["upstreams"]
    assert upstreams["azure-openai"] == {
        "hosts": ["127.0.0.1:9"],
        "api_version": "v1",
        "model": "gpt-realtime",
        "credential": {"kind": "api-key", "source": "configuration"},
    }
    assert upstreams["voice-live"]["api_version"] == "2026-01-01-preview"
    for secret in (VOICELIVE_KEY, OPENAI_KEY):
        assert secret not in status.text
        assert secret not in ready.text


@pytest.mark.parametrize("failing", ["azure-openai", "voice-live"])
@pytest.mark.parametrize(("kind", "code"), [("timeout", 504), ("refused", 503)])
def test_readiness_fails_when_either_upstreams_credential_is_unobtainable(
    make_service: ServiceFactory, failing: str, kind: str, code: int
) -> None:
    """Either upstream's credential failing makes the service unready, naming that upstream."""
    overrides = (
        Overrides(credentials=broken_source(kind))
        if failing == "azure-openai"
        else Overrides(voicelive_credentials=broken_source(kind))
    )
    with make_service(env_for(azure_openai=True, voice_live=True), overrides) as url:
        ready = httpx.get(f"{url}/readyz", timeout=10)
        alive = httpx.get(f"{url}/healthz", timeout=10)
    assert ready.status_code == code, ready.text
    label = "Azure OpenAI" if failing == "azure-openai" else "Azure AI Voice Live"
    assert ready.json()["detail"].startswith(f"{label}: ")
    assert alive.status_code == 200


@pytest.mark.parametrize("kind", ["timeout", "refused"])
def test_voice_live_alone_is_unready_when_its_credential_fails(
    make_service: ServiceFactory, kind: str
) -> None:
    """With only Voice Live configured its credential alone decides readiness."""
    overrides = Overrides(voicelive_credentials=broken_source(kind))
    with make_service(env_for(azure_openai=False, voice_live=True), overrides) as url:
        ready = httpx.get(f"{url}/readyz", timeout=10)
    assert ready.status_code in {503, 504}, ready.text
    assert "Voice Live" in ready.json()["detail"]
