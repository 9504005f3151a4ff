"""Memory processes for integration tests: the enrich service, the Zep stand-in, the CLI.

``create_app_from_env`` composes the memory routes, the one error mapping and the memory
runtime into a small app (the same pieces the service's ``create_app`` wires), so
processes can be started, killed with SIGKILL and restarted on their SQLite files.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State

from engram_voice.credentials.secret import Secret
from engram_voice.envreader import EnvReader
from engram_voice.errors import exception_handlers
from engram_voice.logs import configure_logging
from engram_voice.memory import MemoryRuntime, MemorySettings, build_memory_runtime, memory_router
from engram_voice.memory.schemas import EnrichRequest
from tests.support.servers import free_port, wait_http

__all__ = [
    "PythonProcess",
    "create_app_from_env",
    "create_noop_app",
    "memory_service",
    "noop_service",
    "run_cli",
]

_ROOT = Path(__file__).resolve().parents[2]


@get("/healthz")
async def _healthz() -> dict[str, str]:
    """Answer 200 while the process runs."""
    return {"status": "ok"}


@get("/status")
async def _status(state: State) -> dict[str, Any]:
    """Return the memory section of the status."""
    runtime: MemoryRuntime = state.memory
    return {"memory": await runtime.status()}


def create_app_from_env() -> Litestar:
    """Build the memory app from the process environment (uvicorn ``--factory``)."""
    reader = EnvReader(os.environ)
    settings = MemorySettings.from_env(reader)
    reader.raise_if_invalid()
    configure_logging(level="info", json=True)
    keys = []
    for item in os.environ["MEMORY_TOKEN_KEYS"].split(","):
        kid, _, secret = item.partition(":")
        keys.append((kid, Secret(secret)))

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        runtime = build_memory_runtime(settings, token_keys=keys)
        await runtime.start()
        app.state.memory = runtime
        try:
            yield
        finally:
            await runtime.stop()

    return Litestar(
        route_handlers=[memory_router(), _healthz, _status],
        exception_handlers=exception_handlers(),
        lifespan=[lifespan],
        openapi_config=None,
    )


_noop_decoder = msgspec.json.Decoder(EnrichRequest)


@post("/memory/enrich", status_code=202)
async def _noop_enrich(request: Request[Any, Any, Any]) -> Response[dict[str, int]]:
    """Decode the body like the real route, store nothing, answer 202 (benchmark baseline)."""
    payload = _noop_decoder.decode(await request.body())
    return Response({"accepted": len(payload.messages), "duplicates": 0}, status_code=202)


def create_noop_app() -> Litestar:
    """Build the no-op baseline app for the enrich benchmark."""
    return Litestar(route_handlers=[_noop_enrich, _healthz], openapi_config=None)


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("ZEP_", "MEMORY_"))}
    return {**inherited, **extra}


@dataclass
class PythonProcess:
    """A Python module run as its own process on a loopback port, killable like a crash."""

    module_args: list[str]
    env: Mapping[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """Return the process's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 30.0) -> PythonProcess:
        """Start the process and wait until ``/healthz`` answers 200."""
        env = _clean_env({**self.env, "HOST": "127.0.0.1", "PORT": str(self.port)})
        args = [a.replace("{port}", str(self.port)) for a in self.module_args]
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
                [sys.executable, "-m", *args],
                env=env,
                cwd=_ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_http(self.base_url + "/healthz", timeout=timeout)
        except TimeoutError:
            self.kill()
            raise
        return self

    def kill(self) -> None:
        """Kill the process at once (SIGKILL), as a crash would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, *, timeout: float = 30.0) -> int | None:
        """Stop gracefully (SIGTERM); kill when it does not exit in time."""
        if not self.process:
            return None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def read_log(self) -> str:
        """Return everything the process wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def memory_service(
    env: Mapping[str, str], log_path: Path, port: int | None = None
) -> PythonProcess:
    """Return (unstarted) the memory service process for ``env``."""
    args = [
        "uvicorn",
        "--factory",
        "tests.support.memory_service:create_app_from_env",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--no-access-log",
        "--timeout-graceful-shutdown",
        "20",
    ]
    process = PythonProcess(args, env, log_path)
    if port is not None:
        process.port = port
    return process


def noop_service(log_path: Path) -> PythonProcess:
    """Return (unstarted) the no-op baseline process."""
    args = ["uvicorn", "--factory", "tests.support.memory_service:create_noop_app"]
    args += ["--host", "127.0.0.1", "--port", "{port}", "--no-access-log"]
    return PythonProcess(args, {}, log_path)


def run_cli(args: list[str], env: Mapping[str, str], *, timeout: float = 30.0) -> str:
    """Run ``python -m engram_voice.memory <args>``; return stdout or raise on failure."""
    result = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "engram_voice.memory", *args],
        env=_clean_env(env),
        cwd=_ROOT,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"cli {args} failed: {result.stderr.decode(errors='replace')}")
    return result.stdout.decode()
