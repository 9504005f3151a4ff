"""Operator entry points: the worker as its own process, and dead-letter list/replay.

``engram-voice worker`` runs :func:`run_worker`; ``engram-voice memory dead-letters``
runs :func:`dead_letters_main`. ``python -m engram_voice.memory`` offers both too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import structlog
import uvicorn
from litestar import Litestar, Response, get
from litestar.datastructures import State
from litestar.plugins.prometheus import PrometheusController

from engram_voice.envreader import EnvReader
from engram_voice.errors import ConfigurationError
from engram_voice.logs import configure_logging
from engram_voice.memory.backends import build_queue
from engram_voice.memory.queue import QueueUnavailableError
from engram_voice.memory.runtime import MemoryRuntime, build_memory_runtime
from engram_voice.memory.settings import MemorySettings
from engram_voice.memory.sinks import sink_configured
from engram_voice.settings import ProcessSettings, load_settings

__all__ = ["create_worker_app", "dead_letters_main", "run_worker", "worker_main"]

_logger = structlog.get_logger("engram_voice.memory.cli")


@get("/healthz", tags=["health"])
async def _healthz(state: State) -> Response[dict[str, str]]:
    """Answer 200 while the delivery loop runs, 503 once it has ended (restart the process).

    Never looks at the queue or Zep: a locked file, a database that is not reachable yet
    (200 ``waiting for the queue`` while it is retried) or a Zep outage shows on
    ``/status`` and in the metrics, and restarting would not cure any of them.
    """
    runtime: MemoryRuntime = state.memory
    if not runtime.worker_running:
        return Response({"status": "worker stopped"}, status_code=503)
    if not runtime.connected:
        # Not a reason to restart: the queue is retried in the background (see /status).
        return Response({"status": "waiting for the queue"})
    return Response({"status": "ok"})


@get("/status", tags=["health"])
async def _status(state: State) -> dict[str, Any]:
    """Describe the queue, the sink and the worker (no secrets)."""
    runtime: MemoryRuntime = state.memory
    return {"service": "engram-voice-worker", "memory": await runtime.status()}


def create_worker_app(settings: MemorySettings) -> Litestar:
    """Build the worker process's app: the worker in its lifespan, health, status, metrics."""
    if not sink_configured(settings):
        raise ConfigurationError("the memory worker needs ZEP_API_URL and ZEP_API_KEY")

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        runtime = build_memory_runtime(settings, run_worker=True)
        await runtime.start()
        app.state.memory = runtime
        try:
            yield
        finally:
            await runtime.stop()

    return Litestar(
        route_handlers=[_healthz, _status, PrometheusController],
        lifespan=[lifespan],
        openapi_config=None,
        logging_config=None,  # the process configures logging (structlog JSON lines, redaction)
    )


def run_worker(settings: MemorySettings, *, host: str = "127.0.0.1", port: int = 8001) -> int:
    """Run the delivery worker as its own process until SIGTERM/SIGINT (graceful)."""
    _logger.info("memory.worker_listening", url=f"http://{host}:{port}")
    uvicorn.run(
        create_worker_app(settings),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
    )
    return 0


def _worker_settings(reader: EnvReader) -> tuple[ProcessSettings, MemorySettings]:
    process = ProcessSettings.from_env(reader, default_port=8001)
    memory = MemorySettings.from_env(reader)
    if not sink_configured(memory):
        reader.fail("ZEP_API_URL and ZEP_API_KEY are required by the memory worker")
    return process, memory


def worker_main(env: Mapping[str, str] | None = None) -> int:
    """Read the process and memory settings (checked, exit 2 when bad); run the worker."""
    process, settings = load_settings(os.environ if env is None else env, _worker_settings)
    configure_logging(level=process.log_level, json=process.log_json)
    return run_worker(settings, host=process.host, port=process.port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engram-voice memory dead-letters",
        description="List or replay transcript batches that could not be delivered to Zep.",
    )
    commands = parser.add_subparsers(dest="action", required=True)
    listing = commands.add_parser("list", help="show dead letters, newest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--include-replayed", action="store_true")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    replay = commands.add_parser("replay", help="put dead letters back in the queue")
    replay.add_argument("ids", nargs="*", type=int, help="dead letter ids (default: all)")
    return parser


async def _dead_letters(settings: MemorySettings, args: argparse.Namespace) -> int:
    queue = build_queue(settings)
    try:
        await queue.open()
    except QueueUnavailableError as exc:  # an operator command: say why, no traceback
        print(f"the memory queue ({queue.backend}) is unavailable: {exc.reason}", file=sys.stderr)  # noqa: T201
        await queue.close()
        return 1
    try:
        if args.action == "replay":
            ids = args.ids or None
            moved = await queue.replay(ids, now=time.time())
            print(f"replayed {moved} turns from {'all' if ids is None else len(ids)} dead letters")  # noqa: T201
            return 0
        letters = await queue.dead_letters(limit=args.limit, include_replayed=args.include_replayed)
        for letter in letters:
            if args.json:
                print(msgspec.json.encode(letter).decode())  # noqa: T201
            else:
                created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(letter.created_at))
                print(  # noqa: T201
                    f"{letter.id}\t{created}\tsession={letter.session_id}\tturns={letter.turns}\t"
                    f"attempts={letter.attempts}\t{letter.reason}"
                )
        if not letters and not args.json:
            print("no dead letters")  # noqa: T201
        return 0
    finally:
        await queue.close()


def dead_letters_main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """Run ``dead-letters list|replay [ids]`` against the configured queue."""
    args = _parser().parse_args(list(argv))
    process, settings = load_settings(
        os.environ if env is None else env,
        lambda r: (ProcessSettings.from_env(r), MemorySettings.from_env(r)),
    )
    configure_logging(level=process.log_level, json=process.log_json)
    return asyncio.run(_dead_letters(settings, args))
