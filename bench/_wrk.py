"""A cheap closed-loop load generator for ``POST /memory/enrich``: Debian's ``wrk``.

The Python (aiohttp) generator spends 70-100 us of CPU per request, as much as the
service it measures, on the same cores. ``wrk`` (C, LuaJIT) with ``bench/enrich.lua``
posts the same bodies (a fresh turn id per request, 200 sessions with their own memory
tokens, keep-alive) for a few microseconds each. :func:`wrk_available` says whether it is
installed (``apt-get install wrk``); the benches fall back to the Python generator when
it is not and say which one ran.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WrkResult", "finish_wrk", "run_wrk", "start_wrk", "write_tokens", "wrk_available"]

_SCRIPT = Path(__file__).with_name("enrich.lua")


def wrk_available() -> bool:
    """Whether the ``wrk`` binary is on the PATH."""
    return shutil.which("wrk") is not None


def write_tokens(path: Path, sessions: list[tuple[str, str]]) -> Path:
    """Write ``session_id token`` lines for the Lua script; return ``path``."""
    path.write_text("".join(f"{sid} {token}\n" for sid, token in sessions))
    return path


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: answers, non-2xx answers, socket errors and latency percentiles.

    wrk's own CPU is read by the caller as the change of ``RUSAGE_CHILDREN`` around the
    runs (a reaped child's time is no longer in /proc).
    """

    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def start_wrk(
    url: str, tokens: Path, prefix: str, *, connections: int, seconds: float, threads: int = 1
) -> subprocess.Popen[bytes]:
    """Start one wrk run (keep-alive, ``connections`` connections, ``seconds`` long)."""
    wrk = shutil.which("wrk") or "wrk"
    args = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s"]
    args += ["-s", str(_SCRIPT), url, "--", str(tokens), prefix]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # noqa: S603


def finish_wrk(process: subprocess.Popen[bytes], *, timeout: float) -> WrkResult:
    """Wait (bounded) for a wrk run started by :func:`start_wrk`; parse its JSON line."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate(timeout=5)
        raise
    line = next((x for x in stdout.decode().splitlines() if x.startswith("{")), None)
    if process.returncode != 0 or line is None:
        msg = f"wrk failed ({process.returncode}): {stderr.decode()[-400:]}"
        raise RuntimeError(msg)
    data = json.loads(line)
    return WrkResult(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        non_2xx=data["non2xx"],
        socket_errors=data["socket_errors"],
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )


def run_wrk(url: str, tokens: Path, prefix: str, *, connections: int, seconds: float) -> WrkResult:
    """Run wrk once against ``url`` and return its result."""
    process = start_wrk(url, tokens, prefix, connections=connections, seconds=seconds)
    return finish_wrk(process, timeout=seconds + 30)
