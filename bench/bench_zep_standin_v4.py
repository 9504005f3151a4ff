"""Zep stand-in v4 capacity: ``thread.add_messages`` through the real zep-cloud SDK.

Starts ``engram-voice zep-standin`` as its own process on loopback (``--latency-ms``, the
20 ms of the delivery goal by default), creates ``--sessions`` users with one thread each,
then sends ``--batch``-message batches from every thread at once for ``--seconds``. It
reports messages/s and, because the machine may be shared, CPU time per call of the
stand-in process (from ``/proc``) and of the sending SDK client (this process): the rate
one CPU-second of the stand-in can absorb, so a delivery benchmark can tell whether the
stand-in or the SDK limits it.

    .venv/bin/python bench/bench_zep_standin_v4.py [--sessions 100 --batch 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from zep_cloud.client import AsyncZep
from zep_cloud.types import AddMessage

KEY = "bench-standin-key-0123456789"
TURN = "a typical spoken turn of about eighty characters, give or take a few words."


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=0.5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    msg = f"{url} did not answer within 30 s"
    raise TimeoutError(msg)


async def _run(args: argparse.Namespace, base: str, pid: int) -> None:
    limits = httpx.Limits(max_connections=args.sessions, max_keepalive_connections=args.sessions)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        zep = AsyncZep(api_key=KEY, base_url=f"{base}/api/v4", max_retries=0, httpx_client=http)
        threads = []
        for index in range(args.sessions):
            user = await zep.user.create(user_id=f"user-{index}")
            thread = await zep.thread.create(user_uuid=user.uuid_ or "")
            threads.append(thread.uuid_ or "")
        batch = [AddMessage(content=TURN, role="user") for _ in range(args.batch)]
        sent = 0
        deadline = time.perf_counter() + args.seconds

        async def send(thread_uuid: str) -> None:
            nonlocal sent
            while time.perf_counter() < deadline:
                await zep.thread.add_messages(thread_uuid, messages=batch)
                sent += args.batch

        start, cpu_start, own_start = time.perf_counter(), _cpu_seconds(pid), time.process_time()
        await asyncio.gather(*(send(thread_uuid) for thread_uuid in threads))
        elapsed, cpu = time.perf_counter() - start, _cpu_seconds(pid) - cpu_start
        own = time.process_time() - own_start
    calls = sent / args.batch
    print(
        f"sessions={args.sessions} batch={args.batch} latency_ms={args.latency_ms}: "
        f"{sent} messages in {elapsed:.1f} s = {sent / elapsed:,.0f} messages/s\n"
        f"stand-in CPU {cpu:.2f} s = {cpu / calls * 1000:.2f} ms per call, "
        f"{cpu / sent * 1e6:.0f} us per message "
        f"(one stand-in CPU-second absorbs {sent / max(cpu, 1e-9):,.0f} messages)\n"
        f"client (zep-cloud SDK + httpx) CPU {own:.2f} s = {own / calls * 1000:.2f} ms per call"
    )


def main() -> None:
    """Run the benchmark and print its report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--batch", type=int, default=30)
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZEP_")}
        env |= {
            "PORT": str(port),
            "ZEP_STANDIN_API_KEY": KEY,
            "ZEP_STANDIN_DB": f"{tmp}/zep-standin.sqlite3",
            "ZEP_STANDIN_LATENCY_MS": str(args.latency_ms),
            "LOG_LEVEL": "warning",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "engram_voice", "zep-standin"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_ready(f"{base}/healthz")
            asyncio.run(_run(args, base, process.pid))
        finally:
            process.terminate()
            process.wait(timeout=15)


if __name__ == "__main__":
    main()
