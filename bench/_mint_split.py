"""Mint latency split in two: the upstream's time, and the service's own.

A mint through the service waits for the upstream's ``client_secrets``; in the benches the
upstream is the emulator, on the same two cores, and under ``bench_capture`` it also plays
every held call's conversation, so its slow-down lands in the service's figures. Each
``POST /realtime/sessions`` answer names its ``session_id``, and the service logs
``realtime.session_minted`` with that id and ``latency_ms``, the time it awaited the
upstream. Per request:

- **total**: from the request's scheduled start to the answer (open loop, as every bench);
- **upstream**: the service's awaited upstream time, read back from its log;
- **own**: the client's send-to-answer time minus upstream: the service's own work and
  waits (HTTP, auth, limits, body, logging, and its event loop being busy elsewhere).

A stall of the service's loop while the upstream answer is already waiting counts as
upstream, so ``own`` is a lower bound of the service's share and ``total`` an upper one.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from bench._load import ProcessCpu, open_loop, percentile

__all__ = ["MintLog", "SplitProfile", "split_profile"]

_MINTED = b'"realtime.session_minted"'
_LOG_WAIT_S = 5.0


class MintLog:
    """Reads the service's JSON log as it grows: ``session_id`` -> awaited upstream ms."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self.upstream_ms: dict[str, float] = {}

    def read(self) -> None:
        """Read the complete lines written since the last call."""
        with self._path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            if _MINTED in line:
                event = json.loads(line)
                self.upstream_ms[event["session_id"]] = float(event["latency_ms"])

    async def wait_for(self, session_ids: list[str]) -> None:
        """Read until every id is in (bounded: a line never written is left out)."""
        deadline = time.monotonic() + _LOG_WAIT_S
        while True:
            self.read()
            if all(s in self.upstream_ms for s in session_ids) or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.05)


@dataclass
class SplitProfile:
    """One profile's latencies (ms) per part, per round p99s, errors and service CPU."""

    total: list[float] = field(default_factory=list)
    upstream: list[float] = field(default_factory=list)
    own: list[float] = field(default_factory=list)
    direct: list[float] = field(default_factory=list)
    round_p99: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0
    service_cpu_ms: float = 0.0
    merged: int = 0

    def p99(self, part: str) -> float:
        """Return the p99 of ``total``, ``upstream``, ``own`` or ``direct`` (NaN if empty)."""
        values: list[float] = getattr(self, part)
        return percentile(values, 99) if values else float("nan")

    def median_round_p99(self, part: str) -> float:
        """Return the median over rounds of the part's p99 (one neighbour's burst, one round)."""
        rounds = self.round_p99.get(part, [])
        return statistics.median(rounds) if rounds else float("nan")

    def merge(self, other: SplitProfile) -> None:
        """Add ``other``'s latencies, rounds and errors (its CPU per mint averaged in)."""
        profiles = 1 + self.merged
        for part in ("total", "upstream", "own", "direct"):
            getattr(self, part).extend(getattr(other, part))
            self.round_p99.setdefault(part, []).extend(other.round_p99.get(part, []))
        self.errors += other.errors
        self.service_cpu_ms += (other.service_cpu_ms - self.service_cpu_ms) / profiles
        self.merged = profiles

    def add_round(self, part: str, values: list[float]) -> None:
        """Add one round's latencies of ``part`` and its p99."""
        getattr(self, part).extend(values)
        if values:
            self.round_p99.setdefault(part, []).append(percentile(values, 99))


def _through(
    session: aiohttp.ClientSession, url: str, caller: Callable[[], dict[str, str]]
) -> tuple[Callable[[int], Awaitable[bool]], dict[str, float]]:
    """Return a sender minting through the service, and its session id -> send-to-answer ms."""
    answered: dict[str, float] = {}

    async def send(_: int) -> bool:
        started = time.perf_counter()
        try:
            async with session.post(url, data=b'{"agent":"elena"}', headers=caller()) as response:
                body = await response.read()
                if response.status != 201:
                    return False
        except (aiohttp.ClientError, TimeoutError):
            return False
        answered[json.loads(body)["session_id"]] = (time.perf_counter() - started) * 1000
        return True

    return send, answered


async def split_profile(
    *,
    session: aiohttp.ClientSession,
    service_url: str,
    service_pid: int,
    log: MintLog,
    caller: Callable[[], dict[str, str]],
    direct: Callable[[int], Awaitable[bool]],
    rate: float,
    seconds: float,
    rounds: int,
) -> SplitProfile:
    """Mint at ``rate`` in ``rounds`` interleaved rounds, through the service and directly."""
    cpu = ProcessCpu(service_pid)
    profile = SplitProfile()
    per_round = max(1, int(rate * seconds / rounds))
    for index in range(rounds):
        for name in ("through", "direct") if index % 2 == 0 else ("direct", "through"):
            if name == "direct":
                latencies, errors = await open_loop(direct, total=per_round, rate=rate)
                profile.add_round("direct", latencies)
                profile.errors += errors
                continue
            send, answered = _through(session, f"{service_url}/realtime/sessions", caller)
            before = cpu.seconds()
            latencies, errors = await open_loop(send, total=per_round, rate=rate)
            after = cpu.seconds()
            if before is not None and after is not None:
                profile.service_cpu_ms += (after - before) * 1000 / (per_round * rounds)
            await log.wait_for(list(answered))
            upstream = [log.upstream_ms[s] for s in answered if s in log.upstream_ms]
            own = [ms - log.upstream_ms[s] for s, ms in answered.items() if s in log.upstream_ms]
            profile.add_round("total", latencies)
            profile.add_round("upstream", upstream)
            profile.add_round("own", own)
            profile.errors += errors
    return profile
