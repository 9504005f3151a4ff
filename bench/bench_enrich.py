"""Enrichment benchmark: durable ``POST /memory/enrich`` against a no-op handler, and delivery.

Starts, each as its own one-worker process on loopback: a no-op Litestar handler that
decodes the same body, and the real service, ``engram-voice serve`` (SQLite queue, WAL,
group commit, ``synchronous=FULL``, in-process worker off). Then, in alternating rounds in one run:

1. closed-loop throughput (``--concurrency`` connections, ``--requests`` per round) and
   the durable/no-op ratio;
2. open-loop latency at ``--rate`` requests/s for ``--seconds`` (latency counted from
   each request's scheduled start, so stalls are not hidden): p50/p99.

Finally it starts the Zep stand-in with a fixed 20 ms latency and a worker process on
the queue the rounds filled, and reports delivered messages/s. Loopback only; every loop
is bounded in count and time.

    .venv/bin/python bench/bench_enrich.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._load import open_loop, percentile
from tests.support.memory_service import memory_service, noop_service
from tests.support.servers import ServiceProcess

from engram_voice.credentials.secret import Secret
from engram_voice.memory.tokens import MemoryTokenSigner

_SESSIONS = 200
_TEXT = "Tell me more about the trip to Lisbon we planned last spring, and the museums. " * 2


class Bodies:
    """Pre-built request bodies (unique turn ids) with their tokens, one per request."""

    def __init__(self, secret: str) -> None:
        signer = MemoryTokenSigner([("bench", Secret(secret))])
        self._tokens = [
            signer.issue(session_id=f"vs_bench{i}", user_id=f"user{i}", agent="elena").token
            for i in range(_SESSIONS)
        ]
        self._next = 0

    def take(self, count: int) -> list[tuple[bytes, dict[str, str]]]:
        """Return ``count`` fresh (body, headers) pairs."""
        out = []
        for n in range(self._next, self._next + count):
            session = n % _SESSIONS
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


async def _closed_loop(
    http: aiohttp.ClientSession, url: str, requests: list[tuple[bytes, dict[str, str]]], conc: int
) -> tuple[float, int]:
    """Send every request with ``conc`` connections busy; return (req/s, errors)."""
    queue = iter(requests)
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for body, headers in queue:
            async with http.post(url, data=body, headers=headers) as response:
                await response.read()
                errors += response.status != 202

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    return len(requests) / (time.perf_counter() - start), errors


async def _open_loop(
    http: aiohttp.ClientSession, url: str, requests: list[tuple[bytes, dict[str, str]]], rate: float
) -> tuple[list[float], int]:
    """Send requests at a fixed rate, each at its scheduled time; return latencies (ms), errors.

    Latency counts from each request's scheduled start; a request that fails or times out
    counts as an error (its latency is left out, as in the mint benchmark).
    """

    async def send(index: int) -> bool:
        body, headers = requests[index]
        try:
            async with asyncio.timeout(10):
                async with http.post(url, data=body, headers=headers) as response:
                    await response.read()
                    return response.status == 202
        except (TimeoutError, aiohttp.ClientError):
            return False

    return await open_loop(send, total=len(requests), rate=rate)


async def _depth(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(f"{url}/status") as response:
        status: dict[str, Any] = await response.json()
    depth: int = status["memory"]["queue"]["depth"]
    return depth


async def _run(
    args: argparse.Namespace, noop: ServiceProcess, durable: ServiceProcess, bodies: Bodies
) -> None:
    targets = {
        "no-op": f"{noop.base_url}/memory/enrich",
        "durable": f"{durable.base_url}/memory/enrich",
    }
    connector = aiohttp.TCPConnector(limit=max(args.concurrency, 512))
    async with aiohttp.ClientSession(connector=connector) as http:
        for url in targets.values():
            await _closed_loop(http, url, bodies.take(1000), args.concurrency)
        throughput: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, url in targets.items():
                rps, errors = await _closed_loop(
                    http, url, bodies.take(args.requests), args.concurrency
                )
                throughput[name].append(rps)
                if errors:
                    print(f"  {name}: {errors} non-202 answers")
        best = {name: max(values) for name, values in throughput.items()}
        print(
            f"closed loop, {args.concurrency} connections, {args.rounds} rounds of {args.requests}:"
        )
        for name, values in throughput.items():
            print(
                f"  {name:8s} "
                + "  ".join(f"{v:7.0f}" for v in values)
                + f"   best {best[name]:.0f} req/s"
            )
        print(f"  durable / no-op = {best['durable'] / best['no-op']:.2f} (goal >= 0.60)")
        total = int(args.rate * args.seconds)
        print(f"open loop at {args.rate:.0f} req/s for {args.seconds:.0f} s:")
        for name, url in targets.items():
            latencies, errors = await _open_loop(http, url, bodies.take(total), args.rate)
            print(
                f"  {name:8s} p50 {percentile(latencies, 50):6.2f} ms  "
                f"p99 {percentile(latencies, 99):6.2f} ms  max {max(latencies):7.2f} ms  "
                f"errors {errors}" + ("   (goal p99 <= 20 ms)" if name == "durable" else "")
            )


async def _delivery(args: argparse.Namespace, worker: ServiceProcess) -> None:
    async with aiohttp.ClientSession() as http:
        first = await _depth(http, worker.base_url)
        start = time.perf_counter()
        deadline = start + args.delivery_seconds
        depth = first
        while depth > 0 and time.perf_counter() < deadline:
            await asyncio.sleep(0.5)
            depth = await _depth(http, worker.base_url)
        elapsed = time.perf_counter() - start
    delivered = first - depth
    print(
        f"delivery into the Zep stand-in (20 ms per call), one worker process: "
        f"{delivered} turns in {elapsed:.1f} s = {delivered / elapsed:.0f} messages/s"
        + (f" ({depth} left at the time bound)" if depth else "")
    )


def main() -> None:
    """Run the benchmark and print its report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=8000, help="per closed-loop round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--delivery-seconds", type=float, default=60.0)
    args = parser.parse_args()
    secret = secrets.token_hex(32)
    zep_key = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="bench-enrich-") as tmp:
        state = Path(tmp)
        env = {
            "MEMORY_TOKEN_KEYS": f"bench:{secret}",
            "MEMORY_SQLITE_PATH": str(state / "queue.sqlite3"),
            "MEMORY_WORKER": "off",
            "MEMORY_RATE_PER_MINUTE": "1000000",
            "LOG_LEVEL": "warning",
        }
        # The real service also needs its realtime settings; this benchmark never mints.
        service_env = {
            **env,
            "AUTH_MODE": "none",
            "AZURE_OPENAI_ENDPOINTS": "http://127.0.0.1:9",
            "AZURE_OPENAI_API_KEY": "bench-never-used",
        }
        noop = noop_service(state / "noop.log").start()
        durable = memory_service(service_env, state / "service.log").start()
        try:
            asyncio.run(_run(args, noop, durable, Bodies(secret)))
        finally:
            noop.stop()
            durable.stop()
        zep = ServiceProcess(
            ["zep-standin"],
            {
                "ZEP_STANDIN_API_KEY": zep_key,
                "ZEP_STANDIN_DB": str(state / "zep.sqlite3"),
                "ZEP_STANDIN_LATENCY_MS": "20",
                "LOG_LEVEL": "warning",
            },
            log_path=state / "zep.log",
        ).start()
        worker = ServiceProcess(
            ["worker"],
            {
                **env,
                "ZEP_API": "v2",
                "ZEP_API_URL": zep.base_url,
                "ZEP_API_KEY": zep_key,
                "MEMORY_WORKER_CONCURRENCY": "8",
            },
            log_path=state / "worker.log",
        ).start()
        try:
            asyncio.run(_delivery(args, worker))
        finally:
            worker.stop()
            zep.stop()


if __name__ == "__main__":
    main()
