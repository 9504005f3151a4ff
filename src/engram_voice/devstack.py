"""``engram-voice dev``: the whole local stack in one command, for newcomers.

Starts the Azure emulator (Azure OpenAI realtime and Azure AI Voice Live; agents speak
through Voice Live by default), the Zep stand-in and the service as child processes
(with ``MEMORY_QUEUE=postgres`` and no ``MEMORY_POSTGRES_HOST``, also a local PostgreSQL
server from Debian's binaries, its cluster kept in ``<state>/postgres``)
on loopback with local defaults, prints the URLs (and the Zep stand-in's local key, so
the local memory can be read with the SDK), and stops them all on Ctrl-C. When one child
exits on its own, the others are stopped and the reason is said in plain words. Keys for
the emulator and the memory token are generated per run (the Zep key too, unless
``ZEP_STANDIN_API_KEY`` is set); nothing here is used in production.
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
from typing import NoReturn
from urllib.error import URLError

import msgspec

from engram_voice.envreader import EnvReader
from engram_voice.settings import ProcessSettings, check_agents_file, load_settings

__all__ = ["DevSettings", "describe_exit", "port_is_free", "run_dev_stack"]

_READY_TIMEOUT_S = 30.0
_POLL_S = 0.2
_STOP_TIMEOUT_S = 20.0
_EXIT_MEANINGS = {
    0: "it stopped on its own",
    1: "it failed; its own message is above",
    2: "invalid configuration; its message above names the variable",
    3: "it could not start; its message above says why",
}
_SIGNAL_MEANINGS = {
    signal.SIGTERM: "something asked it to stop (kill, a supervisor)",
    signal.SIGKILL: "it was killed at once (kill -9, or the kernel's out-of-memory killer)",
    signal.SIGINT: "it was interrupted (Ctrl-C)",
    signal.SIGSEGV: "it crashed (segmentation fault)",
    signal.SIGABRT: "it aborted",
}


class DevSettings(msgspec.Struct, frozen=True):
    """What ``engram-voice dev`` reads besides the process settings."""

    process: ProcessSettings
    state_dir: str
    zep_key: str | None
    local_postgres: bool = False
    """Start a local PostgreSQL for the queue (MEMORY_QUEUE=postgres, no server named)."""

    @classmethod
    def from_env(cls, reader: EnvReader) -> DevSettings:
        """Read PORT, logging, ``ENGRAM_DEV_STATE``, ``ZEP_STANDIN_API_KEY``; check AGENTS_FILE."""
        process = ProcessSettings.from_env(reader, default_port=8000)
        check_agents_file(reader, reader.optional("AGENTS_FILE"))  # else the service dies late
        return cls(
            process=process,
            state_dir=reader.text("ENGRAM_DEV_STATE", "var"),
            zep_key=reader.optional("ZEP_STANDIN_API_KEY"),
            local_postgres=reader.optional("MEMORY_QUEUE") == "postgres"
            and reader.optional("MEMORY_POSTGRES_HOST") is None,
        )


class ChildExitedError(Exception):
    """A child of the dev stack exited while the stack was starting or running."""

    def __init__(self, name: str, process: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.pid = process.pid
        self.status = process.returncode
        super().__init__(f"the {name} (pid {self.pid}) exited: {describe_exit(self.status)}")


def describe_exit(status: int) -> str:
    """Say in words what a child's exit status (negative: killed by that signal) means."""
    if status < 0:
        try:
            sig = signal.Signals(-status)
        except ValueError:
            return f"killed by signal {-status}"
        meaning = _SIGNAL_MEANINGS.get(sig, "a signal ended it")
        return f"killed by {sig.name} (signal {sig.value}): {meaning}"
    meaning = _EXIT_MEANINGS.get(status, "it failed; its own message is above")
    return f"exit status {status}: {meaning}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Say whether the service could bind ``host:port`` the way uvicorn binds it.

    uvicorn sets SO_REUSEADDR, so connections a browser left in TIME_WAIT after the last
    run do not block a restart; only a socket that is really bound (a listener) does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _wait_ready(url: str, process: subprocess.Popen[bytes], name: str) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ChildExitedError(name, process)
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback URL we built
                if response.status == 200:  # noqa: PLR2004
                    return
        except (URLError, OSError):
            time.sleep(0.1)
    raise TimeoutError(f"the {name} did not become ready at {url} within {_READY_TIMEOUT_S:g}s")


def _start(
    args: list[str], env: Mapping[str, str], base: Mapping[str, str]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "engram_voice", *args], env={**base, **env}
    )


def _interrupt(signum: int, _: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _say(text: str) -> None:
    print(f"engram-voice dev: {text}", file=sys.stderr, flush=True)  # noqa: T201 - the newcomer's words


def _supervise(children: list[tuple[str, subprocess.Popen[bytes]]]) -> NoReturn:
    """Never return; raise ChildExitedError for the first child that exits."""
    while True:
        for name, child in children:
            if child.poll() is not None:
                raise ChildExitedError(name, child)
        time.sleep(_POLL_S)


def _stop(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    for _, child in reversed(children):
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for name, child in children:
        try:
            child.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _say(f"the {name} (pid {child.pid}) did not stop within {_STOP_TIMEOUT_S:g}s; killed")
            child.kill()
            child.wait(timeout=_STOP_TIMEOUT_S)


def _start_postgres(
    state: Path, children: list[tuple[str, subprocess.Popen[bytes]]]
) -> dict[str, str]:
    """Start the local PostgreSQL (a child like the others); return the queue's settings."""
    from engram_voice.devpostgres import dev_cluster_dir, start_local_postgres  # noqa: PLC0415

    root = dev_cluster_dir(state, as_root=os.geteuid() == 0)
    server = start_local_postgres(root, database="engram_voice")
    children.append(("PostgreSQL", server.process))
    _say(f"PostgreSQL for the memory queue on 127.0.0.1:{server.port} (cluster in {root})")
    return server.env("engram_voice")


def run_dev_stack(env: Mapping[str, str], port: int | None = None) -> int:
    """Run emulator, Zep stand-in and service until interrupted; return an exit status.

    0 after Ctrl-C or SIGTERM; 1 when the port is taken or a child exits on its own (the
    message says which child, its status and what that means).
    """
    settings = load_settings(env, DevSettings.from_env)
    port = port or settings.process.port
    if not port_is_free(port):
        _say(
            f"port {port} is already in use on 127.0.0.1 (another `make run`?). "
            f"Stop that, or choose another port: make run PORT={port + 1}"
        )
        return 1
    signal.signal(signal.SIGTERM, _interrupt)  # stop the children on SIGTERM as on Ctrl-C
    signal.signal(signal.SIGINT, _interrupt)
    state = Path(settings.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    emulator_port, zep_port = _free_port(), _free_port()
    azure_key = secrets.token_hex(16)
    zep_key = settings.zep_key or secrets.token_hex(16)
    base = {**env, "APP_ENV": "local", "HOST": "127.0.0.1"}
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    queue_env: dict[str, str] = {"MEMORY_SQLITE_PATH": str(state / "memory-queue.sqlite3")}
    try:
        if settings.local_postgres:
            queue_env = _start_postgres(state, children)
        emulator = _start(
            ["emulator"],
            {
                "PORT": str(emulator_port),
                "EMULATOR_API_KEYS": f"{azure_key},{secrets.token_hex(16)}",
            },
            base,
        )
        children.append(("emulator", emulator))
        zep = _start(
            ["zep-standin"],
            {
                "PORT": str(zep_port),
                "ZEP_STANDIN_API_KEY": zep_key,
                "ZEP_STANDIN_DB": str(state / "zep-standin.sqlite3"),
            },
            base,
        )
        children.append(("Zep stand-in", zep))
        _wait_ready(f"http://127.0.0.1:{emulator_port}/healthz", emulator, "emulator")
        _wait_ready(f"http://127.0.0.1:{zep_port}/healthz", zep, "Zep stand-in")
        service = _start(
            ["serve"],
            {
                "PORT": str(port),
                "AUTH_MODE": "none",
                "SERVE_WEB": "true",
                # Both upstreams on the emulator: agents speak through Voice Live by
                # default; an agent pinned to azure-openai (AGENTS_FILE) or
                # REALTIME_DEFAULT_UPSTREAM=azure-openai uses the Azure OpenAI side.
                "AZURE_OPENAI_ENDPOINTS": f"http://127.0.0.1:{emulator_port}",
                "AZURE_OPENAI_API_KEY": azure_key,
                "AZURE_VOICELIVE_ENDPOINT": f"http://127.0.0.1:{emulator_port}",
                "AZURE_VOICELIVE_KEY": azure_key,
                "REALTIME_DEFAULT_UPSTREAM": env.get("REALTIME_DEFAULT_UPSTREAM", "voice-live"),
                "MEMORY_TOKEN_KEYS": f"dev:{secrets.token_hex(32)}",
                **queue_env,
                "ZEP_API": "v4",  # Zep Cloud's API, served by the stand-in under /api/v4
                "ZEP_API_URL": f"http://127.0.0.1:{zep_port}",
                "ZEP_API_KEY": zep_key,
            },
            base,
        )
        children.append(("service", service))
        _wait_ready(f"http://127.0.0.1:{port}/readyz", service, "service")
        print(  # noqa: T201 - the newcomer's instructions
            f"\n  engram-voice is running: open http://127.0.0.1:{port}/ and talk.\n"
            f"  service         http://127.0.0.1:{port}  (pid {service.pid}; API at /schema)\n"
            f"  Azure emulator  http://127.0.0.1:{emulator_port}  (pid {emulator.pid}; Voice Live "
            f"and Azure OpenAI)\n"
            f"  Zep stand-in    http://127.0.0.1:{zep_port}  (pid {zep.pid}; /api/v2 and "
            f"/api/v4; state at /_standin/state)\n"
            f"  local Zep key   {zep_key}  (a local dev key; read the stored memory with\n"
            f"                  ZEP_API_URL=http://127.0.0.1:{zep_port} ZEP_API_KEY={zep_key},\n"
            f"                  or zep-cloud's AsyncZep with base_url=http://127.0.0.1:{zep_port}"
            f"/api/v4,\n"
            f"                  see docs/operations.md#the-local-stack; set ZEP_STANDIN_API_KEY "
            f"to keep it)\n"
            f"  Ctrl-C stops everything.\n",
            flush=True,
        )
        _supervise(children)
    except KeyboardInterrupt as stop:
        _stop(children)
        if children:
            _say(f"stopped ({stop.args[0] if stop.args else 'SIGINT'}); every child has exited.")
        return 0
    except ChildExitedError as exc:
        others = [name for name, child in children if child.poll() is None]
        stopping = f"; stopping the {' and the '.join(others)}" if others else ""
        _say(f"{exc}{stopping}.")
        return 1
    except TimeoutError as exc:
        _say(f"{exc}; stopping the stack.")
        return 1
    finally:
        _stop(children)
