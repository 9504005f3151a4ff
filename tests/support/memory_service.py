"""Memory processes for integration tests and benchmarks: the service and a no-op baseline.

The service is the real ``engram-voice serve`` process, so it can be stopped with SIGTERM,
killed with SIGKILL and restarted on its SQLite queue file like a production replica.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get, post

from engram_voice.memory.schemas import EnrichRequest
from tests.support.servers import ServiceProcess

__all__ = [
    "create_noop_app",
    "memory_service",
    "noop_service",
]


@get("/healthz")
async def _healthz() -> dict[str, str]:
    """Answer 200 while the process runs."""
    return {"status": "ok"}


_noop_decoder = msgspec.json.Decoder(EnrichRequest)


@post("/memory/enrich", status_code=202)
async def _noop_enrich(request: Request[Any, Any, Any]) -> Response[dict[str, int]]:
    """Decode the body like the real route, store nothing, answer 202 (benchmark baseline)."""
    payload = _noop_decoder.decode(await request.body())
    return Response({"accepted": len(payload.messages), "duplicates": 0}, status_code=202)


def create_noop_app() -> Litestar:
    """Build the no-op baseline app for the enrich benchmark."""
    return Litestar(route_handlers=[_noop_enrich, _healthz], openapi_config=None)


def memory_service(
    env: Mapping[str, str], log_path: Path, port: int | None = None
) -> ServiceProcess:
    """Return (unstarted) the real service (``engram-voice serve``) for ``env``.

    ``env`` carries the memory settings and the realtime ones (an emulator to mint from);
    the service is the production process, so SIGTERM and SIGKILL hit the real lifespan.
    """
    process = ServiceProcess(["serve"], {"APP_ENV": "local", **env}, log_path=log_path)
    if port is not None:
        process.port = port
    return process


def noop_service(log_path: Path) -> ServiceProcess:
    """Return (unstarted) the no-op baseline process."""
    args = ["--factory", "tests.support.memory_service:create_noop_app"]
    args += ["--host", "127.0.0.1", "--port", "{port}", "--no-access-log"]
    return ServiceProcess(args, {}, log_path=log_path, module="uvicorn")
