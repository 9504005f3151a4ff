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
Given the emulator's log (``emulator.mint_accepted`` names each key by its fingerprint and
is stamped when the answer leaves; both logs stamp the same wall clock), two more parts
close that gap:

- **upstream_own**: from the service sending the mint (its log time minus ``latency_ms``)
  to the emulator answering it: the stand-in's queueing and work, and loopback;
- **service**: total minus upstream_own: everything the service (and the client picking
  up the answer) added, including its loop's delay in reading the upstream's answer.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from bench._load import ProcessCpu, open_loop, percentile

from engram_voice.emulator.keys import fingerprint

__all__ = ["PARTS", "AnswerLog", "MintLog", "SplitProfile", "split_profile"]

PARTS = ("total", "upstream", "own", "upstream_own", "service", "direct")
"""The latency parts of a profile (ms each)."""

_MINTED = b'"realtime.session_minted"'
_LOG_WAIT_S = 5.0


class _GrowingLog:
    """A JSON log read as it grows, one event's lines at a time."""

    marker = b""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self.seen: set[str] = set()

    def read(self) -> None:
        """Read the complete lines written since the last call."""
        with self._path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        for line in data[:end].splitlines():
            if self.marker in line:
                self.take(json.loads(line))

    def take(self, event: dict[str, Any]) -> None:
        """Keep what this log is read for from one of its events."""

    async def wait_for(self, names: list[str]) -> None:
        """Read until every name is in (bounded: a line never written is left out)."""
        deadline = time.monotonic() + _LOG_WAIT_S
        while True:
            self.read()
            if all(n in self.seen for n in names) or time.monotonic() > deadline:
                return
            await asyncio.sleep(0.05)


def _wall(stamp: str) -> float:
    """Return an ISO log timestamp as seconds since the epoch."""
    return datetime.fromisoformat(stamp).timestamp()


class MintLog(_GrowingLog):
    """The service's log: ``session_id`` -> awaited upstream ms, and when it was sent."""

    marker = _MINTED

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.upstream_ms: dict[str, float] = {}
        self.sent_at: dict[str, float] = {}

    def take(self, event: dict[str, Any]) -> None:
        """Keep the mint's awaited upstream time and its send time (log time minus it)."""
        session_id, latency = event["session_id"], float(event["latency_ms"])
        self.upstream_ms[session_id] = latency
        self.sent_at[session_id] = _wall(event["timestamp"]) - latency / 1000
        self.seen.add(session_id)


class AnswerLog(_GrowingLog):
    """The emulator's log: a minted key's fingerprint -> when its answer left."""

    marker = b'"emulator.mint_accepted"'

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.answered_at: dict[str, float] = {}

    def take(self, event: dict[str, Any]) -> None:
        """Keep the answer's time under the key's fingerprint."""
        self.answered_at[event["key"]] = _wall(event["timestamp"])
        self.seen.add(event["key"])


@dataclass
class SplitProfile:
    """One profile's latencies (ms) per part, per round p99s, errors and service CPU."""

    total: list[float] = field(default_factory=list)
    upstream: list[float] = field(default_factory=list)
    own: list[float] = field(default_factory=list)
    upstream_own: list[float] = field(default_factory=list)
    service: list[float] = field(default_factory=list)
    direct: list[float] = field(default_factory=list)
    round_p99: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0
    service_cpu_ms: float = 0.0
    merged: int = 0

    def p99(self, part: str) -> float:
        """Return the p99 of one of :data:`PARTS` (NaN if empty)."""
        values: list[float] = getattr(self, part)
        return percentile(values, 99) if values else float("nan")

    def median_round_p99(self, part: str) -> float:
        """Return the median over rounds of the part's p99 (one neighbour's burst, one round)."""
        rounds = self.round_p99.get(part, [])
        return statistics.median(rounds) if rounds else float("nan")

    def merge(self, other: SplitProfile) -> None:
        """Add ``other``'s latencies, rounds and errors (its CPU per mint averaged in)."""
        profiles = 1 + self.merged
        for part in PARTS:
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
    session: aiohttp.ClientSession,
    url: str,
    caller: Callable[[], dict[str, str]],
    keys: dict[str, str],
) -> tuple[Callable[[int], Awaitable[bool]], dict[str, float]]:
    """Return a sender minting through the service, and its session id -> send-to-answer ms.

    Each answer's key is noted by fingerprint in ``keys`` (session id -> fingerprint).
    """
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
        elapsed = (time.perf_counter() - started) * 1000
        minted = json.loads(body)
        answered[minted["session_id"]] = elapsed
        keys[minted["session_id"]] = fingerprint(minted["client_secret"]["value"])
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
    answers: AnswerLog | None = None,
) -> SplitProfile:
    """Mint at ``rate`` in ``rounds`` interleaved rounds, through the service and directly.

    With the emulator's log (``answers``) each mint is also split at the upstream's answer.
    """
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
            keys: dict[str, str] = {}
            send, answered = _through(session, f"{service_url}/realtime/sessions", caller, keys)
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
            if answers is not None:
                await answers.wait_for(list(keys.values()))
                _split_at_answer(profile, answered, keys, log, answers)
            profile.errors += errors
    return profile


def _split_at_answer(
    profile: SplitProfile,
    answered: dict[str, float],
    keys: dict[str, str],
    log: MintLog,
    answers: AnswerLog,
) -> None:
    """Add one round's upstream_own and service parts (mints found in both logs)."""
    upstream_own, service = [], []
    for session_id, total in answered.items():
        sent = log.sent_at.get(session_id)
        answered_at = answers.answered_at.get(keys.get(session_id, ""))
        if sent is None or answered_at is None:
            continue
        upstream = (answered_at - sent) * 1000
        upstream_own.append(upstream)
        service.append(total - upstream)
    profile.add_round("upstream_own", upstream_own)
    profile.add_round("service", service)
