"""Memory processes for integration tests and benchmarks: the service, a no-op baseline, the CLI.

The service is the real ``engram-voice serve`` process, so it can be stopped with SIGTERM,
killed with SIGKILL and restarted on its SQLite queue file like a production replica.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get, post

from engram_voice.memory.schemas import EnrichRequest
from tests.support.servers import free_port, wait_http

__all__ = [
    "PythonProcess",
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
    """Return (unstarted) the real service (``engram-voice serve``) for ``env``.

    ``env`` carries the memory settings and the realtime ones (an emulator to mint from);
    the service is the production process, so SIGTERM and SIGKILL hit the real lifespan.
    """
    process = PythonProcess(["engram_voice", "serve"], {"APP_ENV": "local", **env}, log_path)
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
