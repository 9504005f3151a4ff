"""``/healthz`` (alive), ``/readyz`` (upstream credentials usable; never memory), ``/status``."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

from litestar import get
from litestar.di import NamedDependency

from engram_voice import __version__
from engram_voice.agents.upstreams import AZURE_OPENAI, VOICE_LIVE, upstream_label
from engram_voice.credentials import CredentialSource
from engram_voice.errors import AppError
from engram_voice.problem_docs import problem_responses
from engram_voice.services import Services

__all__ = ["healthz", "readyz", "status"]

AZURE_OPENAI_API_VERSION = "v1"
"""Azure OpenAI is spoken on its GA ``/openai/v1/realtime/...`` paths (no dated api-version)."""


@get("/healthz", summary="Liveness: the process answers", tags=["health"])
async def healthz() -> dict[str, str]:
    """Answer 200 while the process is alive."""
    return {"status": "ok"}


def _configured_sources(services: Services) -> dict[str, CredentialSource]:
    """Return the credential source of each configured upstream, by upstream name."""
    sources: dict[str, CredentialSource] = {}
    if services.settings.realtime.azure_openai_configured:
        sources[AZURE_OPENAI] = services.credentials
    if services.voicelive is not None:
        sources[VOICE_LIVE] = services.voicelive.credentials
    return sources


async def _check(upstream: str, source: CredentialSource) -> None:
    """Check one source, naming its upstream in the error (the class and status are kept)."""
    try:
        await source.check()
    except AppError as exc:
        raise type(exc)(
            f"{upstream_label(upstream)}: {exc.detail}",
            retry_after=exc.retry_after,
            extra=exc.extra,
        ) from exc


@get(
    "/readyz",
    summary="Readiness: every configured upstream's credential is usable (independent of memory)",
    tags=["health"],
    responses=problem_responses(503, 504),
)
async def readyz(services: NamedDependency[Services]) -> dict[str, Any]:
    """Answer 200 when every configured upstream's credential can be obtained now.

    ``memory`` says whether memory storage is available and why not; it never fails
    readiness (a database outage must not take call set-up out of rotation).

    The checks run concurrently (each bounded by CREDENTIAL_TIMEOUT_SECONDS); the first
    failing upstream, in the order Azure OpenAI then Voice Live, answers the 503/504.
    """
    sources = _configured_sources(services)
    results = await asyncio.gather(
        *(_check(name, source) for name, source in sources.items()), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result
    default = services.settings.realtime.default_upstream
    kinds = {name: source.kind for name, source in sources.items()}
    return {
        "status": "ready",
        "credential": kinds.get(default, services.credentials.kind),
        "upstreams": kinds,
        # Shown, never decisive: calls are set up while memory storage is down.
        "memory": await services.memory.readiness() if services.memory else {"enabled": False},
    }


def _upstreams(services: Services) -> dict[str, Any]:
    """Describe each configured upstream: host, credential, api-version, model (no secret)."""
    realtime = services.settings.realtime
    described: dict[str, Any] = {}
    if realtime.azure_openai_configured:
        described[AZURE_OPENAI] = {
            "hosts": [urlsplit(url).netloc for url in realtime.endpoints],
            "api_version": AZURE_OPENAI_API_VERSION,
            "model": realtime.deployment,
            "credential": services.credentials.describe(),
        }
    if services.voicelive is not None:
        voicelive = services.voicelive.settings
        described[VOICE_LIVE] = {
            "host": urlsplit(voicelive.endpoint).netloc,
            "api_version": voicelive.api_version,
            "model": voicelive.model,
            "credential": services.voicelive.credentials.describe(),
            "connect_timeout_seconds": voicelive.connect_timeout,
            "answer_timeout_seconds": voicelive.answer_timeout,
        }
    return described


@get("/status", summary="What is configured and how it is doing (no secrets)", tags=["health"])
async def status(services: NamedDependency[Services]) -> dict[str, Any]:
    """Describe realtime configuration, endpoint health, agents and counters."""
    settings = services.settings
    realtime = settings.realtime
    memory = await services.memory.status() if services.memory else {"enabled": False}
    return {
        "service": "engram-voice",
        "version": __version__,
        "environment": settings.server.environment,
        "uptime_seconds": round(time.time() - services.started_at, 1),
        "realtime": {
            "configured": True,
            "default_upstream": realtime.default_upstream,
            "upstreams": _upstreams(services),
            "deployment": realtime.deployment,
            "endpoints": services.pool.describe(),
            "healthy_endpoints": services.pool.healthy_count(),
            "credential": services.credentials.describe(),
            "key_ttl_seconds": realtime.key_ttl_seconds,
            "webrtc_filter": realtime.webrtc_filter,
            "counters": dict(services.sessions.outcomes),
        },
        "calls": {**services.calls.describe(), "capture": _capture(services)},
        "auth": {"mode": settings.auth.mode},
        "agents": [
            {
                "id": a.id,
                "name": a.name,
                "upstream": a.upstream,
                "voice": a.voice,
                "style": a.style,
                "memory_recall": a.memory_recall and services.recall is not None,
            }
            for a in services.catalog.all()
        ],
        "memory": memory,
        "recall": services.recall.describe() if services.recall else {"enabled": False},
        "usage": await services.usage.describe() if services.usage else {"enabled": False},
    }


def _capture(services: Services) -> dict[str, object]:
    """Where Azure OpenAI sidebands are held: the capture process, or the service itself."""
    if services.capture_process is not None:
        return services.capture_process.describe()
    return {"mode": "inprocess"}
