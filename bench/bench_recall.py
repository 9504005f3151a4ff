"""Recall benchmark: mint p99 with recall on (warm per-user cache) against recall off.

Starts the Azure realtime emulator (fixed 20 ms answer latency), the Zep stand-in with
memory for ``--users`` users (seeded through zep-cloud, as the v4 sink stores it) and two
services configured alike (one uvicorn worker, EasyAuth callers, JSON logs at ``info``,
the same generous per-user mint limit) except ``MEMORY_RECALL``: on (``ZEP_API=v4``) and
off. Each user's memory is read once (the cache warms), then both are driven at the same
rate in one open loop, in pairs (one mint to each, who goes first alternating: the shared
machine's noise hits both alike), every mint for a warm user. Prints p50/p90/p99
and CPU per mint for each, the p99 difference, recall's outcomes from ``/status`` (all
hits when warm), the time recall added inside the service, and whether the goal (p99
recall on <= recall off + 2 ms, no errors) held. ``--control`` turns recall off on both
(an A/A check of the harness). Loopback only, bounded in count.

    .venv/bin/python bench/bench_recall.py --rate 200 --seconds 10 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._load import ProcessCpu, open_loop, percentile
from bench._stack import bench_stack, running
from tests.support.recall_seed import seed_v4
from tests.support.servers import ServiceProcess

_OFF: dict[str, Any] = {"enabled": False, "cache": {"users": 0}, "outcomes": {}}
ON = "recall on (warm)"
OFF = "recall off"
GOAL_P99_MS = 2.0


def _user(index: int) -> str:
    return f"00000000-0000-0000-0000-{index:012d}"


class Interleaved:
    """Sends mints in pairs, one to each service (who goes first alternates); records latency.

    Both services are driven in the same open loop, request by request, so a neighbour's
    burst on the shared machine hits both alike; each runs at the bench's rate.
    """

    def __init__(self, session: aiohttp.ClientSession, urls: dict[str, str], users: int) -> None:
        self._session, self._urls, self._users = session, urls, users
        self._names = list(urls)
        self.latencies: dict[str, list[float]] = {name: [] for name in urls}
        self.errors = dict.fromkeys(urls, 0)

    async def send(self, index: int) -> bool:
        """Mint for a warm user on the service ``index`` selects; True on a 201."""
        pair, position = divmod(index, len(self._names))
        name = self._names[(position + pair) % len(self._names)]  # who goes first alternates
        headers = {
            "content-type": "application/json",
            "x-ms-client-principal-id": _user(pair % self._users),
            "x-ms-client-principal-idp": "aad",
        }
        started = time.perf_counter()
        try:
            async with self._session.post(
                f"{self._urls[name]}/realtime/sessions", data=b'{"agent":"elena"}', headers=headers
            ) as response:
                await response.read()
                ok = response.status == 201
        except (aiohttp.ClientError, TimeoutError):
            ok = False
        if ok:
            self.latencies[name].append((time.perf_counter() - started) * 1000)
        else:
            self.errors[name] += 1
        return ok


async def _seed(zep: ServiceProcess, key: str, users: int) -> None:
    said = ["I am learning Portuguese and my dog is called Rex.", "I live near the sea."]
    for index in range(users):
        await seed_v4(zep.base_url, key, _user(index), said)


async def _run(args: argparse.Namespace, services: dict[str, ServiceProcess]) -> list[bool]:
    cpus = {name: ProcessCpu(s.process.pid) for name, s in services.items() if s.process}
    urls = {name: service.base_url for name, service in services.items()}
    verdicts: list[bool] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=10)
    ) as session:
        # Warm-up: every user's memory read once by recall-on, every connection opened.
        warming = Interleaved(session, urls, args.users)
        await open_loop(warming.send, total=2 * args.users, rate=2 * args.warm_rate)
        warm = await _recall(session, services[ON]) if not args.control else _OFF
        print(f"warm-up: {warm['cache']['users']} users cached, outcomes {warm['outcomes']}")
        total = int(2 * args.rate * args.seconds)
        for run in range(1, args.runs + 1):
            loop = Interleaved(session, urls, args.users)
            before = {name: cpu.seconds() or 0.0 for name, cpu in cpus.items()}
            await open_loop(loop.send, total=total, rate=2 * args.rate)
            print(f"\nrun {run}/{args.runs}: {args.rate:g} mints/s on each, interleaved")
            for name, lat in loop.latencies.items():
                cpu = (cpus[name].seconds() or 0.0) - before[name]
                print(
                    f"  {name:<18} n={len(lat):>5} errors={loop.errors[name]:<3} "
                    f"p50={percentile(lat, 50):7.2f}  p90={percentile(lat, 90):7.2f}"
                    f"  p99={percentile(lat, 99):7.2f} ms  "
                    f"service CPU ms/mint {cpu / max(1, len(lat)) * 1000:.2f}"
                )
            p99 = percentile(loop.latencies[ON], 99) - percentile(loop.latencies[OFF], 99)
            held = p99 <= GOAL_P99_MS and not any(loop.errors.values())
            print(
                f"  recall adds p99 {p99:+.2f} ms (goal <= +{GOAL_P99_MS:g} ms): "
                + ("HELD" if held else "MISSED")
            )
            verdicts.append(held)
        after = await _recall(session, services[ON]) if not args.control else _OFF
        async with session.get(f"{services[ON].base_url}/metrics") as response:
            metrics = await response.text()
    measured = {k: v - warm["outcomes"].get(k, 0) for k, v in after["outcomes"].items()}
    print(f"\nrecall outcomes of the measured mints: {measured}")
    print("time recall added in the service (engram_memory_recall_seconds, all mints):")
    for line in metrics.splitlines():
        if line.startswith("engram_memory_recall_seconds_bucket") and 'le="0.00' in line:
            print(f"  {line}")
    return verdicts


async def _recall(session: aiohttp.ClientSession, service: ServiceProcess) -> dict[str, Any]:
    """Return /status's recall section once no read is in flight (bounded: 60 s)."""
    for _ in range(600):
        async with session.get(f"{service.base_url}/status") as response:
            recall: dict[str, Any] = (await response.json())["recall"]
        if not recall["reads_in_flight"]:
            return recall
        await asyncio.sleep(0.1)
    return recall


def main() -> None:
    """Start the stack (emulator, Zep stand-in, two services), compare, stop everything."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=200, help="warm users the mints cycle")
    parser.add_argument("--warm-rate", type=float, default=40.0, help="warm-up mints per second")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--control", action="store_true", help="A/A check: recall off on both services"
    )
    args = parser.parse_args()
    key = secrets.token_hex(16)
    state = Path(tempfile.mkdtemp(prefix="engram-bench-recall-"))
    zep = ServiceProcess(
        ["zep-standin"],
        env={"ZEP_STANDIN_API_KEY": key, "ZEP_STANDIN_DB": str(state / "zep.sqlite3"),
             "LOG_LEVEL": "warning"},
        log_path=state / "zep.log",
    )  # fmt: skip
    common = {"MINT_RATE_LIMIT": "100000/minute", "ZEP_API_URL": "", "ZEP_API_KEY": key}
    stack = bench_stack(emulator_env={"EMULATOR_LATENCY_MS": "20"})
    zep.start()
    try:
        asyncio.run(_seed(zep, key, args.users))
        common["ZEP_API_URL"] = zep.base_url
        recall = "false" if args.control else "true"
        on_env = {**stack.service.env, **common, "ZEP_API": "v4", "MEMORY_RECALL": recall}
        stack = type(stack)(
            emulator=stack.emulator,
            service=ServiceProcess(["serve"], env=on_env, log_path=state / "on.log"),
            key=stack.key,
        )
        off_env = {
            **on_env,
            "MEMORY_RECALL": "false",
            "MEMORY_SQLITE_PATH": str(state / "off-queue.sqlite3"),
        }
        off = ServiceProcess(["serve"], env=off_env, log_path=state / "off.log")
        with running(stack):
            off.start()
            try:
                verdicts = asyncio.run(_run(args, {ON: stack.service, OFF: off}))
            finally:
                off.stop(timeout=60)
    finally:
        zep.stop(timeout=30)
    print(f"goal held in {sum(verdicts)} of {len(verdicts)} runs (cores: {os.cpu_count()})")


if __name__ == "__main__":
    main()
