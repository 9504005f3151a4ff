"""Enrich on the PostgreSQL queue: durable vs no-op, p99 at a fixed rate, two services vs one.

Starts a local PostgreSQL (Debian's binaries, ``fsync=on``: a 202 is a flushed commit),
the no-op baseline handler and the real service (``engram-voice serve``,
``MEMORY_QUEUE=postgres``, one uvicorn worker, in-process delivery off). Then, in one run:

1. closed-loop throughput, alternating no-op and durable rounds, and their ratio
   (issue 13's goal: >= 0.5);
2. open-loop latency at ``--rate`` requests/s for ``--seconds`` (from each request's
   scheduled start): p50/p99 (goal: p99 <= 20 ms at 1,000 req/s);
3. a second service process on the same database: closed-loop throughput across both
   (requests alternate between them) against one process (goal: >= 1.6x).

``--queue-only`` instead drives the two queue backends in this process (no HTTP): 64
concurrent one-turn enqueues over 200 sessions, SQLite then PostgreSQL, twice: enqueues/s,
group commits, p50/p99 of one enqueue.

The load generator runs on the same machine; on a small machine its own CPU use caps
what the services can show (the report prints the core count). Loopback only.

    .venv/bin/python bench/bench_queue_pg.py [--requests 4000] [--rate 1000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._load import percentile
from bench.bench_enrich import Bodies, _closed_loop, _open_loop
from tests.support.memory_service import memory_service, noop_service
from tests.support.servers import ServiceProcess

from engram_voice.devpostgres import start_local_postgres
from engram_voice.memory.postgres_queue import PostgresTurnQueue
from engram_voice.memory.queue import EnqueueBatch, TurnQueue
from engram_voice.memory.sqlite_queue import SqliteTurnQueue


async def _closed_loop_across(
    http: aiohttp.ClientSession, urls: list[str], bodies: Bodies, requests: int, conc: int
) -> float:
    """Run a closed loop over several services (connections split evenly); return req/s."""
    share = requests // len(urls)
    per = max(1, conc // len(urls))
    started = asyncio.get_running_loop().time()
    await asyncio.gather(*(_closed_loop(http, url, bodies.take(share), per) for url in urls))
    return share * len(urls) / (asyncio.get_running_loop().time() - started)


async def _run(
    args: argparse.Namespace,
    noop: ServiceProcess,
    services: list[ServiceProcess],
    bodies: Bodies,
) -> None:
    noop_url = f"{noop.base_url}/memory/enrich"
    urls = [f"{s.base_url}/memory/enrich" for s in services]
    connector = aiohttp.TCPConnector(limit=max(args.concurrency, 512))
    async with aiohttp.ClientSession(connector=connector) as http:
        for url in (noop_url, *urls):
            await _closed_loop(http, url, bodies.take(500), args.concurrency)  # warm up
        rounds: dict[str, list[float]] = {"no-op": [], "durable": [], "two services": []}
        for _ in range(args.rounds):
            rps, errors = await _closed_loop(
                http, noop_url, bodies.take(args.requests), args.concurrency
            )
            rounds["no-op"].append(rps)
            rps, errors = await _closed_loop(
                http, urls[0], bodies.take(args.requests), args.concurrency
            )
            rounds["durable"].append(rps)
            if errors:
                print(f"  durable: {errors} non-202 answers")
            rounds["two services"].append(
                await _closed_loop_across(http, urls, bodies, args.requests, args.concurrency)
            )
        best = {name: max(values) for name, values in rounds.items()}
        print(
            f"closed loop, {args.concurrency} connections, {args.rounds} rounds of "
            f"{args.requests} ({os.cpu_count()} cores for everything):"
        )
        for name, values in rounds.items():
            shown = "  ".join(f"{v:7.0f}" for v in values)
            print(f"  {name:13s} {shown}   best {best[name]:.0f} req/s")
        print(f"  durable / no-op = {best['durable'] / best['no-op']:.2f} (goal >= 0.50)")
        print(f"  two services / one = {best['two services'] / best['durable']:.2f} (goal >= 1.6)")
        total = int(args.rate * args.seconds)
        print(f"open loop at {args.rate:.0f} req/s for {args.seconds:.0f} s:")
        for name, url in (("no-op", noop_url), ("durable", urls[0])):
            latencies, errors = await _open_loop(http, url, bodies.take(total), args.rate)
            print(
                f"  {name:8s} p50 {percentile(latencies, 50):6.2f} ms  "
                f"p99 {percentile(latencies, 99):6.2f} ms  max {max(latencies):7.2f} ms  "
                f"errors {errors}" + ("   (goal p99 <= 20 ms)" if name == "durable" else "")
            )


async def _queue_only(queue: TurnQueue, total: int = 6000, conc: int = 64) -> str:
    """Enqueue ``total`` one-turn batches with ``conc`` callers; describe the result."""
    await queue.open()
    numbers = iter(range(total))
    latencies: list[float] = []

    async def caller() -> None:
        for i in numbers:
            started = time.perf_counter()
            await queue.enqueue(
                EnqueueBatch(
                    session_id=f"vs_{i % 200}",
                    user_id="u",
                    agent="elena",
                    turns=[(f"m{i}", "user", "x" * 160, None)],
                )
            )
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(conc)))
    elapsed = time.perf_counter() - started
    commits = getattr(queue, "commits", 0)
    await queue.close()
    return (
        f"  {queue.backend:8s} {total / elapsed:7.0f} enqueues/s  {commits} commits  "
        f"p50 {percentile(latencies, 50):5.1f} ms  p99 {percentile(latencies, 99):5.1f} ms"
    )


def _run_queue_only() -> None:
    server = start_local_postgres(database="queueonly")
    try:
        print(f"queue only, 64 callers, 6000 one-turn enqueues ({os.cpu_count()} cores):")
        for _ in range(2):
            with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
                print(asyncio.run(_queue_only(SqliteTurnQueue(Path(tmp) / "q.sqlite3"))))
            print(asyncio.run(_queue_only(PostgresTurnQueue(server.conninfo("queueonly")))))
    finally:
        server.stop()


def main() -> None:
    """Run the benchmark and print its report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--requests", type=int, default=4000, help="per closed-loop round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--queue-only", action="store_true", help="the backends alone, no HTTP")
    args = parser.parse_args()
    if args.queue_only:
        _run_queue_only()
        return
    secret = secrets.token_hex(32)
    server = start_local_postgres(database="bench")
    try:
        with tempfile.TemporaryDirectory(prefix="bench-queue-pg-") as tmp:
            state = Path(tmp)
            env = server.env(
                "bench",
                MEMORY_TOKEN_KEYS=f"bench:{secret}",
                MEMORY_WORKER="off",
                MEMORY_RATE_PER_MINUTE="1000000",
                LOG_LEVEL="warning",
                AUTH_MODE="none",
                AZURE_OPENAI_ENDPOINTS="http://127.0.0.1:9",
                AZURE_OPENAI_API_KEY="bench-never-used",
            )
            noop = noop_service(state / "noop.log").start()
            services = [memory_service(env, state / f"service{i}.log").start() for i in range(2)]
            try:
                asyncio.run(_run(args, noop, services, Bodies(secret)))
            finally:
                for process in itertools.chain([noop], services):
                    process.stop()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
