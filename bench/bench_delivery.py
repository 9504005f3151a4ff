"""Delivery benchmark: messages/s from the queue into the Zep stand-in at 20 ms per call.

For each sink (``ZEP_API=v4`` through zep-cloud, ``ZEP_API=v2`` through zep-python) and
each number of active sessions (1, 10, 100 by default), in one run: start the Zep
stand-in (``ZEP_STANDIN_LATENCY_MS=20``) and one worker process (``engram-voice worker``)
on a fresh queue file, enqueue ``--messages`` turns spread evenly over the sessions (new
users and sessions: the creation calls are part of the cost), and time until the queue
is empty. The baseline is the same measurement with the worker of another checkout
(``--baseline``, default ``/work/main``, which speaks v2 only), in the same run.
Loopback only; every wait is bounded.

    .venv/bin/python bench/bench_delivery.py [--sessions 1 10 100] [--messages 6000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from zep_cloud.client import AsyncZep
from zep_cloud.types import AddMessage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.servers import ServiceProcess, free_port, wait_http

from engram_voice.memory.queue import EnqueueBatch
from engram_voice.memory.sqlite_queue import SqliteTurnQueue

_TEXT = "Tell me more about the trip to Lisbon we planned last spring, and the museums. " * 2
_ROOT = Path(__file__).resolve().parents[1]


def _worker(checkout: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``engram-voice worker`` of ``checkout`` (its own .venv); return it and its URL."""
    port = free_port()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("ZEP_", "MEMORY_"))}
    python = checkout / ".venv" / "bin" / "python"
    process = subprocess.Popen(  # noqa: S603 - a checkout's own interpreter and module
        [str(python), "-m", "engram_voice", "worker"],
        env={**inherited, **env, "PORT": str(port), "HOST": "127.0.0.1"},
        cwd=checkout,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz", timeout=60)
    except TimeoutError:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    return process, url


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


async def _fill(path: Path, sessions: int, messages: int, tag: str, round_: int = 0) -> None:
    """Enqueue ``messages`` turns spread over ``sessions`` sessions (of as many users)."""
    queue = SqliteTurnQueue(path, synchronous="normal")
    await queue.open()
    try:
        per = messages // sessions
        await asyncio.gather(
            *(
                queue.enqueue(
                    EnqueueBatch(
                        session_id=f"vs_{tag}_{s}",
                        user_id=f"user_{tag}_{s}",
                        agent="elena",
                        turns=[
                            (f"r{round_}m{i}", "user" if i % 2 == 0 else "assistant", _TEXT, None)
                            for i in range(per)
                        ],
                    )
                )
                for s in range(sessions)
            )
        )
    finally:
        await queue.close()


def _depth(url: str) -> int:
    status = httpx.get(f"{url}/status", timeout=10).json()
    return int(status["memory"]["queue"]["depth"] or 0)


def _drain_rate(
    url: str, queue: Path, *, sessions: int, total: int, tag: str, round_: int, seconds: float
) -> tuple[float, int]:
    """Enqueue one round and time until the worker has delivered it; (messages/s, left)."""
    start = time.perf_counter()
    asyncio.run(_fill(queue, sessions, total, tag, round_))
    deadline = start + seconds
    depth = total
    while time.perf_counter() < deadline:
        depth = _depth(url)
        if depth == 0:
            break
        time.sleep(0.05)
    return (total - depth) / (time.perf_counter() - start), depth


def _measure(
    checkout: Path, api: str, sessions: int, args: argparse.Namespace, zep: ServiceProcess
) -> list[tuple[float, int]]:
    """Return (messages/s, left at the time bound) for new sessions, then the same again."""
    state = Path(tempfile.mkdtemp(prefix=f"bench-delivery-{api}-{sessions}-"))
    queue = state / "queue.sqlite3"
    total = (args.messages // sessions) * sessions
    env = {
        "MEMORY_TOKEN_KEYS": f"bench:{secrets.token_hex(32)}",
        "MEMORY_SQLITE_PATH": str(queue),
        "MEMORY_POLL_SECONDS": "0.05",
        "MEMORY_WORKER_CONCURRENCY": str(args.concurrency),
        "ZEP_API": api,
        "ZEP_API_URL": zep.base_url,
        "ZEP_API_KEY": args.zep_key,
        "LOG_LEVEL": "warning",
    }
    process, url = _worker(checkout, env, state / "worker.log")
    try:
        tag = secrets.token_hex(3)
        return [
            _drain_rate(
                url,
                queue,
                sessions=sessions,
                total=total,
                tag=tag,
                round_=round_,
                seconds=args.seconds,
            )
            for round_ in range(2)
        ]
    finally:
        _stop(process)


async def _ceiling(zep: ServiceProcess, args: argparse.Namespace) -> float:
    """Return msg/s of bare ``thread.add_messages`` calls (30 each) into the stand-in.

    ``--concurrency`` calls in flight over 100 existing threads, no queue and no worker:
    what the stand-in itself takes at most, the bound every worker number sits under.
    """
    client = AsyncZep(api_key=args.zep_key, base_url=f"{zep.base_url}/api/v4", max_retries=0)
    threads = []
    for n in range(100):
        user = await client.user.create(user_id=f"ceiling-{secrets.token_hex(4)}-{n}")
        thread = await client.thread.create(user_uuid=str(user.uuid_))
        threads.append(str(thread.uuid_))
    batch = [AddMessage(content=_TEXT, role="user", name="user") for _ in range(30)]
    calls = max(1, args.messages // 30)
    pending = iter(range(calls))

    async def caller() -> None:
        for n in pending:
            await client.thread.add_messages(threads[n % len(threads)], messages=batch)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(args.concurrency)))
    return calls * 30 / (time.perf_counter() - start)


def main() -> None:
    """Run every configuration and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--messages", type=int, default=6000, help="per configuration")
    parser.add_argument("--concurrency", type=int, default=32, help="MEMORY_WORKER_CONCURRENCY")
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0, help="time bound per run")
    parser.add_argument("--baseline", type=Path, default=Path("/work/main"))
    args = parser.parse_args()
    args.zep_key = secrets.token_hex(16)
    runs: list[tuple[str, Path, str]] = [("v4", _ROOT, "v4"), ("v2", _ROOT, "v2")]
    if (args.baseline / ".venv" / "bin" / "python").exists():
        runs.append((f"baseline v2 ({args.baseline})", args.baseline, "v2"))
    else:
        print(f"(no baseline: {args.baseline}/.venv missing)")
    with tempfile.TemporaryDirectory(prefix="bench-delivery-zep-") as tmp:
        zep = ServiceProcess(
            ["zep-standin"],
            {
                "ZEP_STANDIN_API_KEY": args.zep_key,
                "ZEP_STANDIN_DB": str(Path(tmp) / "zep.sqlite3"),
                "ZEP_STANDIN_LATENCY_MS": str(args.latency_ms),
                "LOG_LEVEL": "warning",
            },
            log_path=Path(tmp) / "zep.log",
        ).start()
        try:
            print(
                f"delivery into the Zep stand-in ({args.latency_ms} ms per call), one worker "
                f"process, MEMORY_WORKER_CONCURRENCY={args.concurrency}, "
                f"{args.messages} messages per run:"
            )
            header = "".join(f"{f'{s} new':>10s}{f'{s} known':>11s}" for s in args.sessions)
            print(f"  {'sink':34s}{header}")
            for name, checkout, api in runs:
                cells = []
                for sessions in args.sessions:
                    for rate, left in _measure(checkout, api, sessions, args, zep):
                        cells.append(f"{rate:9.0f}" + ("*" if left else " "))
                print(f"  {name:34s}" + " ".join(cells), flush=True)
            ceiling = asyncio.run(_ceiling(zep, args))
            print(
                f"  {'stand-in ceiling (bare SDK calls)':34s}{ceiling:9.0f}  (30 per call, "
                f"{args.concurrency} in flight, no queue)"
            )
            print(
                "  (messages/s; 'new': sessions and users Zep has not seen, 'known': the same\n"
                "   sessions again, in the same worker; * = not drained within the time bound;\n"
                "   goal: v4 with 100 active sessions >= 2000)"
            )
        finally:
            zep.stop()


if __name__ == "__main__":
    main()
