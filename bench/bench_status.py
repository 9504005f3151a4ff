"""Status benchmark: ``GET /status`` and enrich latency on an empty queue and a deep one.

Two runs of the real service (``engram-voice serve``, SQLite queue, in-process worker
off), each on loopback in its own process:

1. **baseline**: an empty queue file;
2. **deep**: a queue file holding ``--pending`` turns waiting for delivery (1,000,000 by
   default, spread over ``--sessions`` sessions, written straight into the file by the
   service's own schema before it starts: a million turns take about half a minute).

Each run measures ``/status`` alone (``--status-calls`` sequential calls), then
``POST /memory/enrich`` in an open loop at ``--rate`` requests/s for ``--seconds``
(latency counted from each request's scheduled start) while ``/status`` is polled every
``--status-every`` seconds. It prints p50/p99 of both and the deep/baseline ratios: a
status whose cost does not grow with the queue, and does not sit in the write path,
keeps every ratio near 1. Loopback only; every loop is bounded in count and time.

    .venv/bin/python bench/bench_status.py                    # 1,000,000 pending turns
    .venv/bin/python bench/bench_status.py --pending 200000   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._load import open_loop, percentile
from tests.support.memory_service import memory_service
from tests.support.servers import ServiceProcess

from engram_voice.credentials.secret import Secret
from engram_voice.memory.tokens import MemoryTokenSigner

_TEXT = "Tell me more about the trip to Lisbon we planned last spring, and the museums."
_CHUNK = 50_000


def _fill(path: Path, pending: int, sessions: int) -> float:
    """Write ``pending`` turns over ``sessions`` sessions into a queue file the service made."""
    started = time.perf_counter()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    now = time.time() - 3600
    conn.executemany(
        "INSERT INTO sessions(session_id, user_id, agent, created_at) VALUES (?, ?, 'elena', ?)",
        [(f"vs_deep{s}", f"user{s}", now) for s in range(sessions)],
    )
    for start in range(0, pending, _CHUNK):
        conn.executemany(
            "INSERT INTO turns(session_id, message_id, role, text, accepted_at) "
            "VALUES (?, ?, 'user', ?, ?)",
            (
                (f"vs_deep{n % sessions}", f"item_{n}", _TEXT, now + n / 1000)
                for n in range(start, min(pending, start + _CHUNK))
            ),
        )
    # One UPDATE per session: the queue's own bookkeeping (and its running totals, where
    # the schema keeps them) sees the turns exactly as if they had been enqueued.
    conn.execute(
        "UPDATE sessions SET pending=(SELECT COUNT(*) FROM turns t "
        "WHERE t.session_id=sessions.session_id AND t.state=0) WHERE session_id LIKE 'vs_deep%'"
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - started


class Bodies:
    """Fresh enrich bodies (unique turn ids) with their tokens."""

    def __init__(self, secret: str, sessions: int = 100) -> None:
        signer = MemoryTokenSigner([("bench", Secret(secret))])
        self._tokens = [
            signer.issue(session_id=f"vs_bench{i}", user_id=f"user{i}", agent="elena").token
            for i in range(sessions)
        ]
        self._next = 0

    def take(self, count: int) -> list[tuple[bytes, dict[str, str]]]:
        """Return ``count`` fresh (body, headers) pairs."""
        out = []
        for n in range(self._next, self._next + count):
            session = n % len(self._tokens)
            body = {
                "session_id": f"vs_bench{session}",
                "messages": [{"id": f"item_{n}", "role": "user", "text": _TEXT}],
            }
            headers = {
                "Authorization": f"Bearer {self._tokens[session]}",
                "Content-Type": "application/json",
            }
            out.append((json.dumps(body).encode(), headers))
        self._next += count
        return out


async def _status_once(http: aiohttp.ClientSession, url: str) -> tuple[float, int | None]:
    started = time.perf_counter()
    async with asyncio.timeout(30), http.get(f"{url}/status") as response:
        body = await response.json()
    depth: int | None = body["memory"]["queue"]["depth"]
    return (time.perf_counter() - started) * 1000, depth


async def _enrich_open_loop(
    http: aiohttp.ClientSession, url: str, requests: list[tuple[bytes, dict[str, str]]], rate: float
) -> tuple[list[float], int]:
    """Send each request at its scheduled time (bench._load); return latencies (ms), errors."""

    async def send(index: int) -> bool:
        body, headers = requests[index]
        try:
            async with (
                asyncio.timeout(10),
                http.post(f"{url}/memory/enrich", data=body, headers=headers) as response,
            ):
                await response.read()
                return response.status == 202
        except (TimeoutError, aiohttp.ClientError):
            return False

    return await open_loop(send, total=len(requests), rate=rate)


async def _measure(
    args: argparse.Namespace, service: ServiceProcess, bodies: Bodies
) -> dict[str, float]:
    url = service.base_url
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(connector=connector) as http:
        await _enrich_open_loop(http, url, bodies.take(200), args.rate)  # warm-up
        alone = []
        depth = None
        for _ in range(args.status_calls):
            latency, depth = await _status_once(http, url)
            alone.append(latency)
        polled: list[float] = []
        stop = asyncio.Event()

        async def poll() -> None:
            while not stop.is_set():
                polled.append((await _status_once(http, url))[0])
                try:
                    async with asyncio.timeout(args.status_every):
                        await stop.wait()
                except TimeoutError:
                    pass

        poller = asyncio.create_task(poll())
        total = int(args.rate * args.seconds)
        latencies, errors = await _enrich_open_loop(http, url, bodies.take(total), args.rate)
        stop.set()
        await poller
    return {
        "depth": float(depth or 0),
        "status_p50": percentile(alone, 50),
        "status_p99": percentile(alone, 99),
        "polled_p50": percentile(polled, 50),
        "enrich_p50": percentile(latencies, 50),
        "enrich_p99": percentile(latencies, 99),
        "errors": float(errors),
    }


def _run_one(
    args: argparse.Namespace, state: Path, name: str, pending: int, secret: str
) -> dict[str, float]:
    path = state / f"{name}.sqlite3"
    env = {
        "AUTH_MODE": "none",
        "AZURE_OPENAI_ENDPOINTS": "http://127.0.0.1:9",  # never minted from
        "AZURE_OPENAI_API_KEY": "bench-never-used",
        "MEMORY_TOKEN_KEYS": f"bench:{secret}",
        "MEMORY_SQLITE_PATH": str(path),
        "MEMORY_WORKER": "off",
        "MEMORY_RATE_PER_MINUTE": "1000000",
        "LOG_LEVEL": "warning",
    }
    memory_service(env, state / f"{name}-schema.log").start().stop()  # creates the schema
    if pending:
        took = _fill(path, pending, args.sessions)
        print(f"  filled {pending:,} pending turns over {args.sessions} sessions in {took:.1f} s")
    service = memory_service(env, state / f"{name}.log").start(timeout=120)
    try:
        return asyncio.run(_measure(args, service, Bodies(secret)))
    finally:
        service.stop()


def main() -> None:
    """Run the benchmark and print its report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--pending", type=int, default=1_000_000, help="turns in the deep queue")
    parser.add_argument("--sessions", type=int, default=1000, help="sessions they belong to")
    parser.add_argument("--status-calls", type=int, default=50)
    parser.add_argument("--status-every", type=float, default=0.25, help="poll interval, s")
    parser.add_argument("--rate", type=float, default=300.0, help="enrich requests/s")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    secret = secrets.token_hex(32)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-status-") as tmp:
        for name, pending in (("baseline", 0), ("deep", args.pending)):
            print(f"{name}: {pending:,} pending turns")
            results[name] = _run_one(args, Path(tmp), name, pending, secret)
    base, deep = results["baseline"], results["deep"]
    print(
        f"\n/status alone ({args.status_calls} calls), enrich open loop at {args.rate:.0f} req/s "
        f"for {args.seconds:.0f} s with /status every {args.status_every} s:"
    )
    print(f"  {'':22s}{'baseline':>10s}{'deep':>10s}{'deep/base':>11s}")
    for key, label in (
        ("status_p50", "/status p50 ms"),
        ("status_p99", "/status p99 ms"),
        ("polled_p50", "/status (polled) p50"),
        ("enrich_p50", "enrich p50 ms"),
        ("enrich_p99", "enrich p99 ms"),
    ):
        ratio = deep[key] / base[key] if base[key] else float("nan")
        print(f"  {label:22s}{base[key]:10.2f}{deep[key]:10.2f}{ratio:10.2f}x")
    print(f"  depth reported: baseline {base['depth']:.0f}, deep {deep['depth']:.0f}")
    if base["errors"] or deep["errors"]:
        print(f"  non-202 answers: baseline {base['errors']:.0f}, deep {deep['errors']:.0f}")


if __name__ == "__main__":
    main()
