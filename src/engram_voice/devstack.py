"""``engram-voice dev``: the whole local stack in one command, for newcomers.

Starts the Azure realtime emulator, the Zep stand-in and the service as child processes
on loopback with local defaults, prints the URL, and stops them all on Ctrl-C. Keys for
the emulator and the memory token are generated per run; nothing here is used in
production, where every setting comes from the environment.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.error import URLError

__all__ = ["run_dev_stack"]

_READY_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with status {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback URL we built
                if response.status == 200:  # noqa: PLR2004
                    return
        except (URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not become ready at {url} within {_READY_TIMEOUT_S:g}s")


def _start(args: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "engram_voice", *args], env={**os.environ, **env}
    )


def _interrupt(signum: int, _: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def run_dev_stack(port: int) -> int:
    """Run emulator, Zep stand-in and service until interrupted; return an exit status."""
    if not _port_is_free(port):
        print(  # noqa: T201 - the newcomer's one line of instructions
            f"engram-voice dev: port {port} is already in use on 127.0.0.1 (another "
            f"`make run`?). Stop that, or choose another port: make run PORT={port + 1}",
            file=sys.stderr,
        )
        return 1
    signal.signal(signal.SIGTERM, _interrupt)  # stop the children on SIGTERM as on Ctrl-C
    signal.signal(signal.SIGINT, _interrupt)
    state = Path(os.environ.get("ENGRAM_DEV_STATE", "var"))
    state.mkdir(parents=True, exist_ok=True)
    emulator_port, zep_port = _free_port(), _free_port()
    azure_key, zep_key = secrets.token_hex(16), secrets.token_hex(16)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        emulator = _start(
            ["emulator"],
            {
                "HOST": "127.0.0.1",
                "PORT": str(emulator_port),
                "EMULATOR_API_KEYS": f"{azure_key},{secrets.token_hex(16)}",
            },
        )
        children.append(("emulator", emulator))
        zep = _start(
            ["zep-standin"],
            {
                "HOST": "127.0.0.1",
                "PORT": str(zep_port),
                "ZEP_STANDIN_API_KEY": zep_key,
                "ZEP_STANDIN_DB": str(state / "zep-standin.sqlite3"),
            },
        )
        children.append(("zep-standin", zep))
        _wait_ready(f"http://127.0.0.1:{emulator_port}/healthz", emulator, "emulator")
        _wait_ready(f"http://127.0.0.1:{zep_port}/healthz", zep, "zep-standin")
        service = _start(
            ["serve"],
            {
                "APP_ENV": "local",
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "AUTH_MODE": "none",
                "SERVE_WEB": "true",
                "AZURE_OPENAI_ENDPOINTS": f"http://127.0.0.1:{emulator_port}",
                "AZURE_OPENAI_API_KEY": azure_key,
                "MEMORY_TOKEN_KEYS": f"dev:{secrets.token_hex(32)}",
                "MEMORY_SQLITE_PATH": str(state / "memory-queue.sqlite3"),
                "ZEP_API_URL": f"http://127.0.0.1:{zep_port}",
                "ZEP_API_KEY": zep_key,
            },
        )
        children.append(("service", service))
        _wait_ready(f"http://127.0.0.1:{port}/readyz", service, "service")
        print(  # noqa: T201 - the newcomer's one line of instructions
            f"\n  engram-voice is running: open http://127.0.0.1:{port}/ and talk.\n"
            f"  Azure emulator http://127.0.0.1:{emulator_port}  "
            f"Zep stand-in http://127.0.0.1:{zep_port}  (Ctrl-C stops everything)\n",
            flush=True,
        )
        return service.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for _, child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for _, child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
