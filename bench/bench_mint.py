"""Token-path benchmark: what the service adds over calling the upstream directly.

Starts the Azure realtime emulator with a fixed 20 ms answer latency and the service
(one uvicorn worker, api-key upstream auth, EasyAuth caller identity with a distinct user
per request and the default per-user mint limit, as behind Container Apps, and logging at
``info`` in JSON as in production), then
drives both at the same fixed request rate, open-loop (latency is measured from each
request's *scheduled* start, so a stall is not hidden), in interleaved rounds (which path
goes first alternates). Prints, per run, p50/p90/p99 and CPU per mint of each process for
each path, the p99 overhead of each round, the overall overhead and whether the goal
(p99 overhead <= 5 ms, no errors) held; ``--runs 5`` repeats the rounds and counts the
runs that held. Loopback only; bounded in count. On a shared machine the latencies swing
with the neighbours: read the CPU columns, or run on a quiet machine.

    .venv/bin/python bench/bench_mint.py --rate 200 --seconds 10 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._load import ProcessCpu, open_loop, percentile
from bench._stack import bench_stack, running
from tests.support.servers import ServiceProcess

from engram_voice.agents import load_catalog
from engram_voice.realtime.session_config import client_secret_request

DIRECT = "direct (emulator)"
THROUGH = "through service"
GOAL_P99_MS = 5.0


@dataclass
class PathResult:
    """Latencies, errors and CPU of one path over the rounds of one run."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    requests: int = 0
    rounds: list[tuple[float, float]] = field(default_factory=list)

    def p(self, q: float) -> float:
        """Return the ``q``-th percentile latency (ms)."""
        return percentile(self.latencies, q)


class Target:
    """One way to mint: its URL, body, per-request headers and expected status."""

    def __init__(
        self,
        url: str,
        body: bytes,
        headers: Callable[[int], dict[str, str]],
        expect: int,
    ) -> None:
        self.url, self.body, self.headers, self.expect = url, body, headers, expect

    def sender(self, session: aiohttp.ClientSession) -> Callable[[int], Awaitable[bool]]:
        """Return the open loop's ``send``: one POST, True when it got the expected status."""

        async def send(index: int) -> bool:
            try:
                async with session.post(
                    self.url, data=self.body, headers=self.headers(index)
                ) as response:
                    await response.read()
                    return response.status == self.expect
            except (aiohttp.ClientError, TimeoutError):
                return False

        return send


def _targets(emulator: ServiceProcess, service: ServiceProcess) -> dict[str, Target]:
    key = emulator.env["EMULATOR_API_KEYS"].split(",")[0]
    # Directly, the very body the service sends for Elena (same instructions, same size),
    # so the emulator does the same work on both paths.
    direct_body = msgspec.json.encode(
        client_secret_request(
            load_catalog().get("elena"), deployment="gpt-realtime", ttl_seconds=60
        )
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

    return {
        DIRECT: Target(
            f"{emulator.base_url}/openai/v1/realtime/client_secrets",
            direct_body,
            lambda _: {"api-key": key, "content-type": "application/json"},
            200,
        ),
        THROUGH: Target(
            f"{service.base_url}/realtime/sessions", b'{"agent":"elena"}', caller_headers, 201
        ),
    }


async def _round(
    send: Callable[[int], Awaitable[bool]],
    result: PathResult,
    cpus: dict[str, ProcessCpu],
    *,
    total: int,
    rate: float,
) -> None:
    before = {name: cpu.seconds() for name, cpu in cpus.items()}
    latencies, errors = await open_loop(send, total=total, rate=rate)
    for name, cpu in cpus.items():
        start, end = before[name], cpu.seconds()
        if start is not None and end is not None:
            result.cpu_seconds[name] = result.cpu_seconds.get(name, 0.0) + end - start
    result.latencies.extend(latencies)
    result.errors += errors
    result.requests += total
    result.rounds.append((percentile(latencies, 50), percentile(latencies, 99)))


def _line(name: str, result: PathResult) -> str:
    cpu = "  ".join(
        f"{proc} {seconds / result.requests * 1000:.2f}"
        for proc, seconds in result.cpu_seconds.items()
    )
    return (
        f"  {name:<18} n={len(result.latencies):>5} errors={result.errors:<3} "
        f"p50={result.p(50):7.2f}  p90={result.p(90):7.2f}  p99={result.p(99):7.2f} ms"
        f"  mean={statistics.fmean(result.latencies):6.2f} ms   CPU ms/mint: {cpu}"
    )


async def _run(
    args: argparse.Namespace, emulator: ServiceProcess, service: ServiceProcess
) -> list[bool]:
    targets = _targets(emulator, service)
    assert emulator.process  # noqa: S101 - started by main()
    assert service.process  # noqa: S101
    cpus = {
        "emulator": ProcessCpu(emulator.process.pid),
        "service": ProcessCpu(service.process.pid),
        "bench": ProcessCpu(os.getpid()),
    }
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=10)
    verdicts: list[bool] = []
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        senders = {name: target.sender(session) for name, target in targets.items()}
        for send in senders.values():  # warm up connections and caches
            await open_loop(send, total=int(args.rate), rate=args.rate)
        per_round = int(args.rate * args.seconds / args.rounds)
        for run in range(1, args.runs + 1):
            results = {name: PathResult() for name in senders}
            for index in range(args.rounds):
                # Alternate which path goes first, so neither always follows the other.
                order = list(senders) if index % 2 == 0 else list(reversed(senders))
                for name in order:
                    await _round(
                        senders[name], results[name], cpus, total=per_round, rate=args.rate
                    )
            verdicts.append(_report(args, run, results))
    return verdicts


def _report(args: argparse.Namespace, run: int, results: dict[str, PathResult]) -> bool:
    direct, through = results[DIRECT], results[THROUGH]
    print(
        f"\nrun {run}/{args.runs}: mint latency at {args.rate:g} req/s, {args.rounds} interleaved "
        f"rounds, upstream fixed latency {args.latency_ms} ms (latency from scheduled start):"
    )
    for name, result in results.items():
        print(_line(name, result))
    rounds = zip(direct.rounds, through.rounds, strict=True)
    print("  per round p99 overhead (ms): " + "  ".join(f"{t[1] - d[1]:+.2f}" for d, t in rounds))
    p50 = through.p(50) - direct.p(50)
    p99 = through.p(99) - direct.p(99)
    held = p99 <= GOAL_P99_MS and not through.errors and not direct.errors
    print(f"  service overhead: p50 {p50:+.2f} ms, p99 {p99:+.2f} ms")
    print(
        f"  goal (p99 overhead <= {GOAL_P99_MS:g} ms, no errors): "
        + ("HELD" if held else "MISSED")
        + f" in run {run}"
    )
    return held


def main() -> None:
    """Parse arguments, start emulator and service, run the comparison, stop both."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds per run")
    parser.add_argument("--latency-ms", type=int, default=20)
    parser.add_argument("--runs", type=int, default=1, help="repeat the interleaved rounds")
    args = parser.parse_args()
    stack = bench_stack(emulator_env={"EMULATOR_LATENCY_MS": str(args.latency_ms)})
    with running(stack):
        verdicts = asyncio.run(_run(args, stack.emulator, stack.service))
    held = sum(verdicts)
    print(f"\ngoal held in {held} of {len(verdicts)} runs (wanted: at least 4 of 5)")


if __name__ == "__main__":
    main()
