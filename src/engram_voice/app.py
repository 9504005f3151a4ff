"""The app factory: every route, dependency, error handler and the lifespan on one screen."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from litestar import Litestar, Request
from litestar.config.response_cache import ResponseCacheConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from engram_voice import __version__
from engram_voice.apidocs import OPENAPI_PATH, ShippedScalarRenderPlugin
from engram_voice.auth import cors_config
from engram_voice.errors import exception_handlers
from engram_voice.gcfreeze import freeze_startup_objects
from engram_voice.health import healthz, readyz, status
from engram_voice.logs import configure_logging
from engram_voice.memory import memory_router
from engram_voice.metrics_route import MetricsController
from engram_voice.realtime.calls.routes import create_call, end_call
from engram_voice.realtime.routes import create_session
from engram_voice.services import Overrides, Services, open_services
from engram_voice.settings import Settings
from engram_voice.web import web_routes

__all__ = ["create_app", "create_app_from_env"]

_logger = structlog.get_logger("engram_voice.app")


_REQUEST_ID_HEADERS = frozenset({b"x-request-id", b"x-ms-request-id"})


def _services(state: State) -> Services:
    services: Services = state.services
    return services


async def _bind_request_context(request: Request[Any, Any, Any]) -> None:
    # The raw scope, not request.url/headers: this runs on every request of the hot paths.
    ids = {name: value for name, value in request.scope["headers"] if name in _REQUEST_ID_HEADERS}
    raw = ids.get(b"x-request-id") or ids.get(b"x-ms-request-id")
    request_id = raw[:64].decode("latin-1") if raw else None
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(path=request.scope["path"], request_id=request_id)


def create_app(settings: Settings, *, overrides: Overrides | None = None) -> Litestar:
    """Build the engram-voice ASGI app for ``settings`` (tests pass ``overrides``)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with open_services(settings, overrides or Overrides()) as services:
            app.state.services = services
            app.state.memory = services.memory
            freeze_startup_objects()  # full GC passes were 15-50 ms stalls in the p99
            _logger.info(
                "app.started",
                environment=settings.server.environment,
                auth_mode=settings.auth.mode,
                credential_kind=services.credentials.kind,
                endpoints=[e["host"] for e in services.pool.describe()],
                deployment=settings.realtime.deployment,
            )
            yield
            _logger.info("app.stopping")

    # /metrics is Litestar's PrometheusController over prometheus_client's registry, declared
    # as the Prometheus text it serves (metrics_route). The
    # two API routes count their own answers and latency (engram_realtime_session_*,
    # engram_memory_enrich_*); the generic per-request middleware is not installed: even
    # with those paths excluded it cost ~10 us, 8 % of enrich's CPU, for /status alone.
    route_handlers: list[Any] = [
        healthz,
        readyz,
        status,
        create_session,
        create_call,
        end_call,
        MetricsController,
    ]
    if settings.memory.enabled:
        route_handlers.append(memory_router())
    if settings.server.serve_web:
        route_handlers.extend(web_routes())
    return Litestar(
        route_handlers=route_handlers,
        dependencies={"services": Provide(_services, sync_to_thread=False)},
        exception_handlers=exception_handlers(),
        lifespan=[lifespan],
        before_request=_bind_request_context,
        cors_config=cors_config(settings.auth),
        response_cache_config=ResponseCacheConfig(),
        openapi_config=OpenAPIConfig(
            title="engram-voice",
            version=__version__,
            description=(
                "Realtime credential vending for Engram agents (Elena, Marcus, Sage) and "
                "durable memory enrichment."
            ),
            path=OPENAPI_PATH,
            render_plugins=[ShippedScalarRenderPlugin()],  # assets shipped, nothing from a CDN
        ),
        request_max_body_size=64 * 1024,
        debug=False,
        logging_config=None,  # logs.configure_logging owns logging (structlog, redaction)
    )


def create_app_from_env() -> Litestar:
    """Read settings from the process environment, configure logging, and build the app."""
    settings = Settings.from_env(os.environ)
    configure_logging(level=settings.server.log_level, json=settings.server.log_json)
    return create_app(settings)
