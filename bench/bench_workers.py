"""Worker scaling benchmark: delivery with two ``engram-voice worker`` processes vs one.

Starts the Zep stand-in with a fixed ``--latency-ms`` (20) per call and the real service
with its in-process worker off (``MEMORY_WORKER=off``), both on loopback. Each round
fills the queue through ``POST /memory/enrich`` with turns of ``--sessions`` (100) active
sessions, then starts N worker processes on the same queue (N alternates 1, 2, 1, 2 …),
waits until each answers ``/healthz``, and measures the delivered turns per second over
``--window`` seconds from the workers' own ``engram_memory_turns_delivered_total``
counters, while a backlog remains (it says so when the backlog ran out). Workers stop with
SIGTERM after each round; what they left is delivered by the next round's workers.

The queue is whatever the environment selects: ``MEMORY_QUEUE`` (default ``sqlite``, a
fresh file here) and, for PostgreSQL, its ``MEMORY_POSTGRES_*`` settings are passed to
the service and every worker unchanged.

    .venv/bin/python bench/bench_workers.py
    MEMORY_QUEUE=postgres MEMORY_POSTGRES_HOST=127.0.0.1 … .venv/bin/python bench/bench_workers.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.memory_service import memory_service
from tests.support.servers import ServiceProcess

from engram_voice.credentials.secret import Secret
from engram_voice.memory.tokens import MemoryTokenSigner

_DELIVERED = re.compile(r"^engram_memory_turns_delivered_total\s+([0-9.e+]+)$", re.MULTILINE)
_TEXT = "Tell me more about the trip to Lisbon we planned last spring, and the museums."


def _queue_env() -> dict[str, str]:
    """Return the queue selection from this process's environment (children inherit none)."""
    return {
        k: v
        for k, v in os.environ.items()
        if k in {"MEMORY_QUEUE", "MEMORY_SQLITE_SYNCHRONOUS"}
        or k.startswith(("MEMORY_POSTGRES_", "PG"))
    }


async def _fill(url: str, signer: MemoryTokenSigner, args: argparse.Namespace, tag: str) -> int:
    """Post ``--turns`` turns per session for ``--sessions`` sessions; return turns accepted."""
    tokens = [
        signer.issue(session_id=f"vs_{tag}_{s}", user_id=f"user{s}", agent="elena").token
        for s in range(args.sessions)
    ]
    posts = [
        (s, start) for start in range(0, args.turns, args.per_post) for s in range(args.sessions)
    ]
    accepted = 0
    limit = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def post(session: int, start: int) -> None:
            nonlocal accepted
            count = min(args.per_post, args.turns - start)
            body = {
                "session_id": f"vs_{tag}_{session}",
                "messages": [
                    {"id": f"{tag}_{session}_{i}", "role": "user", "text": f"{_TEXT} {i}"}
                    for i in range(start, start + count)
                ],
            }
            async with limit:
                answer = await client.post(
                    "/memory/enrich",
                    json=body,
                    headers={"Authorization": f"Bearer {tokens[session]}"},
                )
            answer.raise_for_status()
            accepted += answer.json()["accepted"]

        await asyncio.gather(*(post(s, start) for s, start in posts))
    return accepted


def _delivered(worker: ServiceProcess) -> float:
    text = httpx.get(f"{worker.base_url}/metrics", timeout=5).text
    match = _DELIVERED.search(text)
    return float(match.group(1)) if match else 0.0


def _depth(worker: ServiceProcess) -> int:
    status: dict[str, Any] = httpx.get(f"{worker.base_url}/status", timeout=5).json()
    depth: int = status["memory"]["queue"]["depth"] or 0
    return depth


def _cpu_seconds(process: ServiceProcess) -> float:
    """Return the CPU time (user + system) the process used so far (Linux /proc)."""
    pid = process.process.pid if process.process else 0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Round(NamedTuple):
    """One measured round: turns/s, window, backlog left, CPU cores used by workers and Zep."""

    rate: float
    elapsed: float
    depth: int
    worker_cores: float
    zep_cores: float


def _round(workers: list[ServiceProcess], zep: ServiceProcess, window: float) -> Round:
    """Start the workers and measure delivered turns/s over ``window`` seconds."""
    with ThreadPoolExecutor(len(workers)) as pool:
        list(pool.map(lambda w: w.start(timeout=60), workers))
    try:
        first = sum(_delivered(w) for w in workers)
        cpu = sum(_cpu_seconds(w) for w in workers), _cpu_seconds(zep)
        started = time.perf_counter()
        time.sleep(window)
        last = sum(_delivered(w) for w in workers)
        elapsed = time.perf_counter() - started
        worker_cpu = sum(_cpu_seconds(w) for w in workers) - cpu[0]
        zep_cpu = _cpu_seconds(zep) - cpu[1]
        depth = _depth(workers[0])
    finally:
        for worker in workers:
            worker.stop(timeout=30)
    return Round((last - first) / elapsed, elapsed, depth, worker_cpu / elapsed, zep_cpu / elapsed)


def main() -> None:
    """Run the benchmark and print its report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sessions", type=int, default=100, help="active sessions")
    parser.add_argument("--turns", type=int, default=300, help="turns per session per round")
    parser.add_argument("--per-post", type=int, default=10, help="turns per enrich request")
    parser.add_argument("--latency-ms", type=int, default=20, help="Zep stand-in latency")
    parser.add_argument("--window", type=float, default=6.0, help="measured seconds per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each worker count")
    parser.add_argument("--concurrency", type=int, default=4, help="MEMORY_WORKER_CONCURRENCY")
    parser.add_argument("--queue-dir", type=Path, help="directory of the SQLite queue file")
    args = parser.parse_args()
    secret, zep_key = secrets.token_hex(32), secrets.token_hex(16)
    signer = MemoryTokenSigner([("bench", Secret(secret))])
    queue = _queue_env()
    # The stand-in stores on tmpfs: it commits on its event loop, and a disk's fsync there
    # would serialise every worker's calls (the stand-in is the fixture, not what is measured).
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None  # noqa: S108 - tmpfs, private dir
    with (
        tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp,
        tempfile.TemporaryDirectory(prefix="bench-workers-zep-", dir=shm) as zep_tmp,
    ):
        state = Path(tmp)
        memory = {
            "MEMORY_SQLITE_PATH": str((args.queue_dir or state) / "queue.sqlite3"),
            "MEMORY_TOKEN_KEYS": f"bench:{secret}",
            "MEMORY_RATE_PER_MINUTE": "1000000",
            "MEMORY_WORKER_CONCURRENCY": str(args.concurrency),
            "LOG_LEVEL": "warning",
            **queue,
        }
        zep = ServiceProcess(
            ["zep-standin"],
            {
                "ZEP_STANDIN_API_KEY": zep_key,
                "ZEP_STANDIN_DB": str(Path(zep_tmp) / "zep.sqlite3"),
                "ZEP_STANDIN_LATENCY_MS": str(args.latency_ms),
                "LOG_LEVEL": "warning",
            },
            log_path=state / "zep.log",
        ).start()
        service = memory_service(
            {
                **memory,
                "MEMORY_WORKER": "off",
                "AUTH_MODE": "none",
                "AZURE_OPENAI_ENDPOINTS": "http://127.0.0.1:9",
                "AZURE_OPENAI_API_KEY": "bench-never-used",
            },
            state / "service.log",
        ).start()
        worker_env = {**memory, "ZEP_API_URL": zep.base_url, "ZEP_API_KEY": zep_key}
        rates: dict[int, list[float]] = {1: [], 2: []}
        print(
            f"queue {queue.get('MEMORY_QUEUE', 'sqlite')}, Zep stand-in {args.latency_ms} ms per "
            f"call, {args.sessions} sessions, worker concurrency {args.concurrency}"
        )
        try:
            for index in range(2 * args.rounds):
                count = 1 + index % 2
                filled = asyncio.run(_fill(service.base_url, signer, args, f"r{index}"))
                workers = [
                    ServiceProcess(["worker"], worker_env, log_path=state / f"worker{n}.log")
                    for n in range(count)
                ]
                result = _round(workers, zep, args.window)
                rates[count].append(result.rate)
                print(
                    f"  round {index + 1}: {count} worker(s), +{filled} queued, "
                    f"{result.rate:6.0f} turns/s over {result.elapsed:.1f} s, CPU cores: "
                    f"workers {result.worker_cores:.2f}, Zep {result.zep_cores:.2f}; "
                    f"{result.depth} still queued"
                    + ("" if result.depth else "  (the backlog ran out: raise --turns)")
                )
        finally:
            service.stop()
            zep.stop()
        one, two = max(rates[1]), max(rates[2])
        print(f"best: one worker {one:.0f} turns/s, two workers {two:.0f} turns/s")
        print(f"two workers / one worker = {two / one:.2f} (goal >= 1.80)")


if __name__ == "__main__":
    main()
