"""``/healthz`` (alive), ``/readyz`` (can mint; never depends on memory), ``/status``."""

from __future__ import annotations

import time
from typing import Any

from litestar import get
from litestar.di import NamedDependency

from engram_voice import __version__
from engram_voice.problem_docs import problem_responses
from engram_voice.services import Services

__all__ = ["healthz", "readyz", "status"]


@get("/healthz", summary="Liveness: the process answers", tags=["health"])
async def healthz() -> dict[str, str]:
    """Answer 200 while the process is alive."""
    return {"status": "ok"}


@get(
    "/readyz",
    summary="Readiness: realtime credentials are usable (independent of memory)",
    tags=["health"],
    responses=problem_responses(503, 504),
)
async def readyz(services: NamedDependency[Services]) -> dict[str, Any]:
    """Answer 200 when a realtime credential can be obtained now, else a 503/504 problem."""
    await services.credentials.check()
    return {"status": "ready", "credential": services.credentials.kind}


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
            "deployment": realtime.deployment,
            "endpoints": services.pool.describe(),
            "healthy_endpoints": services.pool.healthy_count(),
            "credential": services.credentials.describe(),
            "key_ttl_seconds": realtime.key_ttl_seconds,
            "webrtc_filter": realtime.webrtc_filter,
            "counters": dict(services.sessions.outcomes),
        },
        "calls": services.calls.describe(),
        "auth": {"mode": settings.auth.mode},
        "agents": [
            {
                "id": a.id,
                "name": a.name,
                "upstream": a.upstream,
                "voice": a.voice,
                "style": a.style,
            }
            for a in services.catalog.all()
        ],
        "memory": memory,
    }
