"""The local stack every realtime benchmark runs: the emulator and the service, on loopback.

One place for what the benches share: fresh Azure keys, the service logging one JSON line
per request at ``info`` as in production (EasyAuth caller identity, a throwaway queue), and
starting both processes and stopping them again whatever the bench does in between.
"""

from __future__ import annotations

import contextlib
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import ServiceProcess

__all__ = ["BenchStack", "bench_stack", "running"]


@dataclass(frozen=True)
class BenchStack:
    """The (unstarted) emulator and service of one bench, and the Azure key they share."""

    emulator: ServiceProcess
    service: ServiceProcess
    key: str


def bench_stack(
    *,
    emulator_env: Mapping[str, str] | None = None,
    service_env: Mapping[str, str] | None = None,
    voicelive: bool = False,
    probe: Path | None = None,
    emulator_probe: Path | None = None,
    emulator_log: bool = False,
) -> BenchStack:
    """Return the emulator and the service, configured as the benches run them (unstarted).

    ``voicelive`` points Voice Live at the emulator too; the extra mappings add to or
    override the shared settings. ``probe`` runs the service under ``bench._probe``
    (event-loop lag and GC pauses, one JSON line per second to that file);
    ``emulator_probe`` does the same for the emulator. ``emulator_log`` keeps the emulator's
    JSON log at ``info`` in ``emulator.log`` beside the service's (its ``mint_accepted``
    lines time each mint's answer: ``bench._mint_split``).
    """
    keys = (secrets.token_hex(16), secrets.token_hex(16))
    state = Path(tempfile.mkdtemp(prefix="engram-bench-"))
    logged = (
        {"LOG_LEVEL": "info", "LOG_FORMAT": "json"} if emulator_log else {"LOG_LEVEL": "warning"}
    )
    emulator = ServiceProcess(
        [str(emulator_probe), "emulator"] if emulator_probe else ["emulator"],
        env={"EMULATOR_API_KEYS": ",".join(keys), **logged, **(emulator_env or {})},
        log_path=state / "emulator.log" if emulator_log else None,
        module="bench._probe" if emulator_probe else "engram_voice",
    )
    url = f"http://127.0.0.1:{emulator.port}"
    env = {
        "APP_ENV": "local",
        "LOG_LEVEL": "info",  # logged as in production: one JSON line per request
        "LOG_FORMAT": "json",
        "AUTH_MODE": "easyauth",
        "AZURE_OPENAI_ENDPOINTS": url,
        "AZURE_OPENAI_API_KEY": keys[0],
        "MEMORY_TOKEN_KEYS": f"bench:{secrets.token_hex(32)}",
        "MEMORY_SQLITE_PATH": str(state / "queue.sqlite3"),
        "PYTHONWARNINGS": "ignore",
    }
    if voicelive:
        env |= {"AZURE_VOICELIVE_ENDPOINT": url, "AZURE_VOICELIVE_KEY": keys[0]}
    service = ServiceProcess(
        [str(probe), "serve"] if probe else ["serve"],
        env={**env, **(service_env or {})},
        log_path=state / "service.log",
        module="bench._probe" if probe else "engram_voice",
    )
    return BenchStack(emulator=emulator, service=service, key=keys[0])


@contextlib.contextmanager
def running(stack: BenchStack, *, stop_timeout: float = 60.0) -> Iterator[BenchStack]:
    """Start the emulator, then the service; stop both on the way out (bounded)."""
    stack.emulator.start()
    try:
        stack.service.start()
        try:
            yield stack
        finally:
            stack.service.stop(timeout=stop_timeout)
            print(f"\n(service log: {stack.service.log_path})")
    finally:
        stack.emulator.stop(timeout=stop_timeout)
