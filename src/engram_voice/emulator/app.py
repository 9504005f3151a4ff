"""The emulator's Litestar app and its blocking runner."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import structlog
import uvicorn
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide

from engram_voice.emulator.azure_errors import azure_exception_handlers
from engram_voice.emulator.config import EmulatorConfig
from engram_voice.emulator.routes import ROUTES, provide_emulator
from engram_voice.emulator.state import EmulatorState
from engram_voice.gcfreeze import freeze_startup_objects

__all__ = ["create_emulator_app", "emulator_state", "run_emulator"]

_logger = structlog.get_logger("engram_voice.emulator")
_MAX_BODY_BYTES = 1_000_000
_SHUTDOWN_SECONDS = 10.0
# Browsers call Azure's realtime paths cross-origin (the page is the service's origin);
# Azure answers CORS preflights for them, so the emulator does too.
_CORS = CORSConfig(
    allow_origins=["*"],
    allow_methods=["GET", "POST", "OPTIONS"],
    allow_headers=["Authorization", "Content-Type", "api-key"],
    expose_headers=["Location"],
    allow_credentials=False,
    max_age=600,
)


def create_emulator_app(
    config: EmulatorConfig, *, clock: Callable[[], float] = time.time
) -> Litestar:
    """Return the emulator app; ``clock`` (unix seconds) decides when ephemeral keys expire."""
    emulator = EmulatorState(config, clock=clock)

    @asynccontextmanager
    async def close_calls(_: Litestar) -> AsyncIterator[None]:
        freeze_startup_objects()  # a fixed-latency upstream: no 60 ms full-GC stalls
        try:
            yield
        finally:
            await emulator.close_all(grace_seconds=_SHUTDOWN_SECONDS)

    return Litestar(
        route_handlers=ROUTES,
        dependencies={"emulator": Provide(provide_emulator, sync_to_thread=False)},
        exception_handlers=azure_exception_handlers(),
        lifespan=[close_calls],
        state=State({"emulator": emulator}),
        request_max_body_size=_MAX_BODY_BYTES,
        cors_config=_CORS,
        logging_config=None,  # the process configures logging (structlog, redaction)
        openapi_config=None,
    )


def emulator_state(app: Litestar) -> EmulatorState:
    """Return the in-process state of an app made by :func:`create_emulator_app`."""
    state: EmulatorState = app.state.emulator
    return state


def run_emulator(config: EmulatorConfig, host: str, port: int) -> None:
    """Serve the emulator with uvicorn until interrupted (blocking)."""
    _logger.info(
        "emulator.listening",
        url=f"http://{host}:{port}",
        deployments=list(config.deployments),
        turn_interval_seconds=config.turn_interval_seconds,
    )
    uvicorn.run(
        create_emulator_app(config),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        # The sans-I/O WebSocket protocol: no keepalive/transfer/close task per socket and
        # fewer awaits per frame, so 500 sidebands playing cost the stand-in far less CPU
        # and collector work, and its mint latency stays what it is without them.
        ws="websockets-sansio",
        timeout_graceful_shutdown=5,
    )
