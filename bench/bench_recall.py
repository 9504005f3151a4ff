"""Recall benchmark: mint p99 with recall on (warm per-user cache) against recall off.

Starts the Azure realtime emulator (fixed 20 ms answer latency), the Zep stand-in with
memory for ``--users`` users (seeded through zep-cloud, as the v4 sink stores it) and two
services configured alike (one uvicorn worker, EasyAuth callers, JSON logs at ``info``,
the same generous per-user mint limit) except ``MEMORY_RECALL``: on (``ZEP_API=v4``) and
off. Each user's memory is read once (the cache warms), then both services are driven at
the same fixed rate, open-loop, in interleaved rounds (which goes first alternates), every
mint for one of the warm users. Prints p50/p90/p99 and CPU per mint for each, the p99
difference, recall's outcomes from ``/status`` (all hits when warm) and whether the goal
(p99 recall on <= recall off + 2 ms, no errors) held. Loopback only, bounded in count.

    .venv/bin/python bench/bench_recall.py --rate 200 --seconds 10 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._load import ProcessCpu, open_loop, percentile
from bench._stack import bench_stack, running
from tests.support.recall_seed import seed_v4
from tests.support.servers import ServiceProcess

ON = "recall on (warm)"
OFF = "recall off"
GOAL_P99_MS = 2.0


def _user(index: int) -> str:
    return f"00000000-0000-0000-0000-{index:012d}"


def _sender(
    session: aiohttp.ClientSession, url: str, users: int
) -> Callable[[int], Awaitable[bool]]:
    body = b'{"agent":"elena"}'

    async def send(index: int) -> bool:
        headers = {
            "content-type": "application/json",
            "x-ms-client-principal-id": _user(index % users),
            "x-ms-client-principal-idp": "aad",
        }
        try:
            async with session.post(f"{url}/realtime/sessions", data=body, headers=headers) as r:
                await r.read()
                return r.status == 201
        except (aiohttp.ClientError, TimeoutError):
            return False

    return send


async def _seed(zep: ServiceProcess, key: str, users: int) -> None:
    said = ["I am learning Portuguese and my dog is called Rex.", "I live near the sea."]
    for index in range(users):
        await seed_v4(zep.base_url, key, _user(index), said)


async def _run(args: argparse.Namespace, services: dict[str, ServiceProcess]) -> list[bool]:
    cpus = {name: ProcessCpu(s.process.pid) for name, s in services.items() if s.process}
    verdicts: list[bool] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=10)
    ) as session:
        senders = {name: _sender(session, s.base_url, args.users) for name, s in services.items()}
        for send in senders.values():  # warm: every user read once (recall on), connections
            await open_loop(send, total=args.users, rate=args.rate)
        per_round = int(args.rate * args.seconds / args.rounds)
        for run in range(1, args.runs + 1):
            lat: dict[str, list[float]] = {name: [] for name in senders}
            errors = dict.fromkeys(senders, 0)
            cpu = dict.fromkeys(senders, 0.0)
            for index in range(args.rounds):
                order = list(senders) if index % 2 == 0 else list(reversed(senders))
                for name in order:
                    before = cpus[name].seconds() or 0.0
                    got, failed = await open_loop(senders[name], total=per_round, rate=args.rate)
                    cpu[name] += (cpus[name].seconds() or 0.0) - before
                    lat[name].extend(got)
                    errors[name] += failed
            print(f"\nrun {run}/{args.runs}: mint at {args.rate:g}/s, {args.rounds} rounds")
            for name in senders:
                print(
                    f"  {name:<18} n={len(lat[name]):>5} errors={errors[name]:<3} "
                    f"p50={percentile(lat[name], 50):7.2f}  p90={percentile(lat[name], 90):7.2f}"
                    f"  p99={percentile(lat[name], 99):7.2f} ms  "
                    f"service CPU ms/mint {cpu[name] / max(1, len(lat[name])) * 1000:.2f}"
                )
            p99 = percentile(lat[ON], 99) - percentile(lat[OFF], 99)
            held = p99 <= GOAL_P99_MS and not any(errors.values())
            print(
                f"  recall adds p99 {p99:+.2f} ms (goal <= +{GOAL_P99_MS:g} ms): "
                + ("HELD" if held else "MISSED")
            )
            verdicts.append(held)
        async with session.get(f"{services[ON].base_url}/status") as response:
            recall = (await response.json())["recall"]
    print(f"\nrecall outcomes (recall on, warm-up included): {recall['outcomes']}")
    return verdicts


def main() -> None:
    """Start the stack (emulator, Zep stand-in, two services), compare, stop everything."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds per run")
    parser.add_argument("--users", type=int, default=500, help="warm users the mints cycle")
    parser.add_argument("--runs", type=int, default=1)
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
        on_env = {**stack.service.env, **common, "ZEP_API": "v4", "MEMORY_RECALL": "true"}
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
