"""Token-path benchmark: what the service adds over calling the upstream directly.

Starts the Azure realtime emulator with a fixed 20 ms answer latency and the service
(one uvicorn worker, api-key upstream auth, EasyAuth caller identity with a distinct user
per request and the default per-user mint limit, as behind Container Apps), then
drives both at the same fixed request rate, open-loop (latency is measured from each
request's *scheduled* start, so a stall is not hidden), in alternating rounds in one run.
Prints p50/p90/p99 for each path and the difference. Loopback only; bounded in count.

    .venv/bin/python bench/bench_mint.py --rate 200 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.servers import ServiceProcess


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def _drive(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Callable[[int], dict[str, str]],
    *,
    rate: float,
    seconds: float,
    expect: int,
) -> tuple[list[float], int]:
    """Send ``rate`` requests/s for ``seconds``; return latencies (ms) and the error count."""
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05

    async def one(index: int, scheduled: float) -> None:
        nonlocal errors
        try:
            async with session.post(url, data=body, headers=headers(index)) as response:
                await response.read()
                if response.status != expect:
                    errors += 1
                    return
        except (aiohttp.ClientError, TimeoutError):
            errors += 1
            return
        latencies.append((time.perf_counter() - scheduled) * 1000)

    # Spawn each request at its scheduled time (not thousands of sleeping tasks up front,
    # whose creation burst would delay the first requests and show up as a false tail).
    tasks: set[asyncio.Task[None]] = set()
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(i, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    return latencies, errors


def _report(name: str, latencies: list[float], errors: int) -> dict[str, float]:
    p50, p90, p99 = (_percentile(latencies, q) for q in (50, 90, 99))
    print(
        f"  {name:<22} n={len(latencies):>5} errors={errors:<3} "
        f"p50={p50:7.2f} ms  p90={p90:7.2f} ms  p99={p99:7.2f} ms  "
        f"mean={statistics.fmean(latencies):7.2f} ms"
    )
    return {"p50": p50, "p99": p99}


async def _run(args: argparse.Namespace, emulator: ServiceProcess, service: ServiceProcess) -> None:
    key = emulator.env["EMULATOR_API_KEYS"].split(",")[0]
    direct_body = (
        b'{"expires_after":{"anchor":"created_at","seconds":60},"session":{"type":"realtime",'
        b'"model":"gpt-realtime","instructions":"You are Elena.",'
        b'"audio":{"output":{"voice":"marin"}}}}'
    )
    users = itertools.count()

    def caller_headers(_: int) -> dict[str, str]:
        # What Container Apps' EasyAuth forwards: a distinct signed-in user per mint, so
        # the default per-user limit applies as in production and never rejects here.
        return {
            "content-type": "application/json",
            "x-ms-client-principal-id": f"00000000-0000-0000-0000-{next(users):012d}",
            "x-ms-client-principal-idp": "aad",
        }

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        paths = {
            "direct (emulator)": (
                f"{emulator.base_url}/openai/v1/realtime/client_secrets",
                direct_body,
                lambda _: {"api-key": key, "content-type": "application/json"},
                200,
            ),
            "through service": (
                f"{service.base_url}/realtime/sessions",
                b'{"agent":"elena"}',
                caller_headers,
                201,
            ),
        }
        for url, body, headers, expect in paths.values():  # warm up connections and caches
            await _drive(session, url, body, headers, rate=50, seconds=1, expect=expect)
        results: dict[str, tuple[list[float], int]] = {name: ([], 0) for name in paths}
        for _ in range(args.rounds):
            for name, (url, body, headers, expect) in paths.items():
                latencies, errors = await _drive(
                    session,
                    url,
                    body,
                    headers,
                    rate=args.rate,
                    seconds=args.seconds / args.rounds,
                    expect=expect,
                )
                results[name][0].extend(latencies)
                results[name] = (results[name][0], results[name][1] + errors)
    print(f"\nmint latency at {args.rate:g} req/s, upstream fixed latency {args.latency_ms} ms:")
    direct = _report("direct (emulator)", *results["direct (emulator)"])
    through = _report("through service", *results["through service"])
    print(
        f"  service overhead: p50 +{through['p50'] - direct['p50']:.2f} ms, "
        f"p99 +{through['p99'] - direct['p99']:.2f} ms "
        f"(goal: p99 overhead <= 5 ms at 200 req/s); "
        f"p99 ratio {through['p99'] / direct['p99']:.2f}x"
    )


def main() -> None:
    """Parse arguments, start emulator and service, run the comparison, stop both."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--latency-ms", type=int, default=20)
    args = parser.parse_args()
    keys = f"{secrets.token_hex(16)},{secrets.token_hex(16)}"
    emulator = ServiceProcess(
        ["emulator"],
        env={"EMULATOR_API_KEYS": keys, "EMULATOR_LATENCY_MS": str(args.latency_ms)},
    )
    service = ServiceProcess(
        ["serve"],
        env={
            "APP_ENV": "local",
            "LOG_LEVEL": "warning",
            "AUTH_MODE": "easyauth",
            "AZURE_OPENAI_ENDPOINTS": f"http://127.0.0.1:{emulator.port}",
            "AZURE_OPENAI_API_KEY": keys.split(",", maxsplit=1)[0],
            "MEMORY_TOKEN_KEYS": f"bench:{secrets.token_hex(32)}",
            "MEMORY_SQLITE_PATH": str(Path(tempfile.mkdtemp()) / "queue.sqlite3"),
            "PYTHONWARNINGS": "ignore",
        },
    )
    emulator.start()
    try:
        service.start()
        try:
            asyncio.run(_run(args, emulator, service))
        finally:
            service.stop()
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
