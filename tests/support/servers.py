"""Run ASGI apps and service processes on loopback ports, with every wait bounded."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from tests.support.polling import poll_until

__all__ = ["ServiceProcess", "free_port", "run_command", "serve_app", "wait_http"]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, *, timeout: float = 20.0, expect: int = 200) -> None:
    """Poll ``url`` until it answers ``expect`` or raise TimeoutError after ``timeout`` seconds."""

    def answers() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code == expect
        except httpx.HTTPError:
            return False

    poll_until(answers, timeout=timeout, what=f"{url} answering {expect}")


@contextlib.contextmanager
def serve_app(app: Any, *, port: int | None = None, ready_path: str | None = None) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread on 127.0.0.1; yield its base URL."""
    port = port or free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, lifespan="on", loop="asyncio"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    poll_until(
        lambda: server.started or not thread.is_alive(),
        timeout=20,
        interval=0.02,
        what=f"the app on port {port} starting",
    )
    if not server.started:
        msg = f"app on port {port} did not start"
        raise RuntimeError(msg)
    base = f"http://127.0.0.1:{port}"
    if ready_path:
        wait_http(base + ready_path)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=15)


_ROOT = Path(__file__).resolve().parents[2]


def _process_env(extra: Mapping[str, str]) -> dict[str, str]:
    # Inherited ZEP_*/MEMORY_* settings (ZEP_API_URL above all, which silently redirects the
    # Zep SDK) would leak the developer's shell into a child; each test says what it wants.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("ZEP_", "MEMORY_"))}
    return {**inherited, **extra}


def run_command(
    args: list[str], env: Mapping[str, str], *, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m engram_voice <args>`` to completion and return its exit code and output."""
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "engram_voice", *args],
        env=_process_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class ServiceProcess:
    """``python -m <module> <args>`` (an ``engram-voice`` command by default) on a loopback port.

    ``{port}`` in ``args`` is replaced by the port; ``PORT`` and ``HOST`` are set as well.
    """

    args: list[str]
    env: Mapping[str, str]
    port: int = field(default_factory=free_port)
    ready_path: str = "/healthz"
    log_path: Path | None = None
    module: str = "engram_voice"
    process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """Return the process's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 30.0) -> ServiceProcess:
        """Start the process and wait until its ready path answers 200."""
        env = _process_env({**self.env, "PORT": str(self.port), "HOST": "127.0.0.1"})
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        args = [a.replace("{port}", str(self.port)) for a in self.args]
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            [sys.executable, "-m", self.module, *args],
            env=env,
            cwd=_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_http(self.base_url + self.ready_path, timeout=timeout)
        except TimeoutError:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """Kill the process at once (SIGKILL), as a crash would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, *, timeout: float = 15.0) -> int | None:
        """Stop the process gracefully (SIGTERM), killing it if it does not exit in time."""
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
        """Return everything the process wrote so far (when a log path was given)."""
        return self.log_path.read_text(errors="replace") if self.log_path else ""
