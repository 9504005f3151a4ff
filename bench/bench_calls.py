"""Voice Live call benchmark: call setup through the service vs straight to Voice Live, held calls.

Starts the emulator (Voice Live's control channel, no new-connections quota) and the
service (one uvicorn worker, EasyAuth caller identity with a distinct user per request,
Voice Live with an api-key as the default upstream, JSON logs at ``info`` as in
production). The SDP offer is made once, up front, by an aiortc peer.

1. **Call setup**: at a fixed rate (default 20 setups/s), open-loop, in interleaved rounds,
   each setup is either ``POST /realtime/calls`` to the service (201 with the answer) or,
   directly, a control WebSocket to the emulator with ``rtc.call.sdp.create`` and the
   same session the service sends, until ``rtc.call.sdp.created``. Latency ends at the
   answer; each call is then hung up (DELETE, or closing the socket) off the clock.
   Prints p50/p99 per path, the overhead and whether p99 overhead <= 10 ms held.
2. **Held calls**: the service's RSS before and after holding ``--hold`` Voice Live calls
   set up through it (each one a control channel the service keeps open; the emulator
   runs an aiortc peer per call, so as many are opened as fit in ``--hold-budget``
   seconds), RSS per channel, and ``POST /realtime/sessions`` p99 at 200/s without and
   with the calls held (goals: <= 60 MB extra for 1,000; p99 rise <= 10 %). The bench's
   one offering peer never applies the answers, so the emulator's peers end each held
   call when ICE gives up (about 35-40 s): part 2 takes its readings within ~30 s of
   opening the calls and reports how many were still held after the mint load.

Loopback only; every wait bounded. On a shared machine latencies swing with the
neighbours: read them next to the CPU columns.

    .venv/bin/python bench/bench_calls.py --rate 20 --seconds 20 --hold 1000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._load import ProcessCpu, open_loop, percentile
from bench._stack import bench_stack, running
from tests.support.servers import ServiceProcess
from tests.support.voicelive_client import VoiceLiveTestClient

from engram_voice.agents import load_catalog
from engram_voice.realtime.session_config import client_secret_request
from engram_voice.realtime.voicelive_session import voicelive_session

DIRECT = "direct (emulator)"
THROUGH = "through service"
GOAL_SETUP_P99_MS = 10.0
GOAL_HELD_MB_PER_1000 = 60.0
GOAL_MINT_P99_RISE = 0.10
_ANSWER_BOUND_S = 20.0


@dataclass
class PathResult:
    """Latencies, errors and CPU of one path over the rounds."""

    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    setups: int = 0
    rounds: list[float] = field(default_factory=list)

    def p(self, q: float) -> float:
        """Return the ``q``-th percentile latency (ms), or NaN without data."""
        return percentile(self.latencies, q) if self.latencies else float("nan")


@dataclass
class Bench:
    """The running processes, the shared offer and the hang-ups still under way."""

    emulator: ServiceProcess
    service: ServiceProcess
    key: str
    offer: str
    session: aiohttp.ClientSession
    hangups: set[asyncio.Task[None]] = field(default_factory=set)
    users: itertools.count[int] = field(default_factory=itertools.count)

    def caller(self) -> dict[str, str]:
        """Return EasyAuth headers of a new signed-in user (limits never reject here)."""
        return {
            "content-type": "application/json",
            "x-ms-client-principal-id": f"00000000-0000-0000-0000-{next(self.users):012d}",
            "x-ms-client-principal-idp": "aad",
        }

    def later(self, coroutine: Awaitable[None]) -> None:
        """Run a hang-up off the clock (awaited at the end of the round)."""
        task = asyncio.ensure_future(coroutine)
        self.hangups.add(task)
        task.add_done_callback(self.hangups.discard)

    async def settle(self) -> None:
        """Wait (bounded) for the hang-ups of the round."""
        if self.hangups:
            await asyncio.wait(set(self.hangups), timeout=30)


def _ws_url(emulator: ServiceProcess) -> str:
    return (
        emulator.base_url.replace("http://", "ws://")
        + "/voice-live/realtime/calls?api-version=2026-01-01-preview&model=gpt-realtime"
    )


def direct_sender(bench: Bench) -> Callable[[int], Awaitable[bool]]:
    """Set a call up straight at the emulator: upgrade, ``rtc.call.sdp.create``, the answer."""
    url = _ws_url(bench.emulator)
    create = json.dumps(
        {
            "type": "rtc.call.sdp.create",
            "sdp_offer": bench.offer,
            "session": voicelive_session(load_catalog().get("elena")),
        }
    )

    async def send(_: int) -> bool:
        try:
            ws = await bench.session.ws_connect(url, headers={"api-key": bench.key})
        except (aiohttp.ClientError, TimeoutError):
            return False
        answered = False
        try:
            async with asyncio.timeout(_ANSWER_BOUND_S):
                await ws.send_str(create)
                async for message in ws:
                    if message.type != aiohttp.WSMsgType.TEXT:
                        break
                    kind = json.loads(message.data).get("type")
                    if kind == "rtc.call.sdp.created":
                        answered = True
                        break
                    if kind in {"rtc.call.error", "error"}:
                        break
        except (aiohttp.ClientError, TimeoutError):
            answered = False
        bench.later(ws.close())
        return answered

    return send


def through_sender(bench: Bench) -> Callable[[int], Awaitable[bool]]:
    """Set a call up with ``POST /realtime/calls``; hang it up (DELETE) off the clock."""
    url = f"{bench.service.base_url}/realtime/calls"
    body = json.dumps({"agent": "elena", "sdp_offer": bench.offer})

    async def send(_: int) -> bool:
        headers = bench.caller()
        try:
            async with bench.session.post(url, data=body, headers=headers) as response:
                answer = await response.read()
                if response.status != 201:
                    return False
        except (aiohttp.ClientError, TimeoutError):
            return False
        call_id = json.loads(answer)["call_id"]
        bench.later(_delete(bench, call_id, headers))
        return True

    return send


async def _delete(bench: Bench, call_id: str, headers: dict[str, str]) -> None:
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        url = f"{bench.service.base_url}/realtime/calls/{call_id}"
        async with bench.session.delete(url, headers=headers) as response:
            await response.read()


async def setup_latency(bench: Bench, args: argparse.Namespace) -> bool:
    """Part 1: interleaved rounds of both paths at ``args.rate``; print and judge them."""
    assert bench.emulator.process  # noqa: S101 - started by main()
    assert bench.service.process  # noqa: S101
    cpus = {
        "emulator": ProcessCpu(bench.emulator.process.pid),
        "service": ProcessCpu(bench.service.process.pid),
    }
    senders = {DIRECT: direct_sender(bench), THROUGH: through_sender(bench)}
    for send in senders.values():  # warm up connections, imports and caches
        await open_loop(send, total=max(5, int(args.rate)), rate=args.rate)
        await bench.settle()
    results = {name: PathResult() for name in senders}
    per_round = max(1, int(args.rate * args.seconds / args.rounds))
    for index in range(args.rounds):
        order = list(senders) if index % 2 == 0 else list(reversed(senders))
        for name in order:
            result = results[name]
            before = {proc: cpu.seconds() for proc, cpu in cpus.items()}
            latencies, errors = await open_loop(senders[name], total=per_round, rate=args.rate)
            await bench.settle()
            for proc, cpu in cpus.items():
                start, end = before[proc], cpu.seconds()
                if start is not None and end is not None:
                    result.cpu_seconds[proc] = result.cpu_seconds.get(proc, 0.0) + end - start
            result.latencies.extend(latencies)
            result.errors += errors
            result.setups += per_round
            result.rounds.append(percentile(latencies, 99) if latencies else float("nan"))
    print(
        f"\ncall setup at {args.rate:g}/s, {args.rounds} interleaved rounds of {per_round} "
        "(latency from the scheduled start to the SDP answer; CPU ms per setup incl. hang-up):"
    )
    for name, result in results.items():
        cpu = "  ".join(
            f"{proc} {seconds / result.setups * 1000:.1f}"
            for proc, seconds in result.cpu_seconds.items()
        )
        print(
            f"  {name:<18} n={len(result.latencies):>4} errors={result.errors:<3} "
            f"p50={result.p(50):7.2f}  p90={result.p(90):7.2f}  p99={result.p(99):7.2f} ms   "
            f"CPU {cpu}"
        )
    direct, through = results[DIRECT], results[THROUGH]
    per_round = [t - d for d, t in zip(direct.rounds, through.rounds, strict=True)]
    print("  per round p99 overhead (ms): " + "  ".join(f"{v:+.1f}" for v in per_round))
    p50, p99 = through.p(50) - direct.p(50), through.p(99) - direct.p(99)
    held = p99 <= GOAL_SETUP_P99_MS and not direct.errors and not through.errors
    print(
        f"  service overhead: p50 {p50:+.2f} ms, p99 {p99:+.2f} ms (median of the rounds' p99 "
        f"overheads {statistics.median(per_round):+.2f} ms; a stall of either process lands "
        "in one path's round)"
    )
    print(
        f"  goal (p99 overhead <= {GOAL_SETUP_P99_MS:g} ms, no errors): "
        + ("HELD" if held else "MISSED")
    )
    return held


def rss_mb(pid: int) -> float:
    """Return the resident set size of ``pid`` in MB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class MintProfile:
    """Mint latency through the service and straight at the emulator, and service CPU."""

    through: list[float] = field(default_factory=list)
    direct: list[float] = field(default_factory=list)
    errors: int = 0
    service_cpu_ms: float = 0.0
    rounds: list[float] = field(default_factory=list)
    direct_rounds: list[float] = field(default_factory=list)

    def overhead(self) -> float:
        """Return the median over rounds of the p99 overhead (through - direct), in ms."""
        return statistics.median(
            t - d for t, d in zip(self.rounds, self.direct_rounds, strict=True)
        )

    def p99(self, path: str) -> float:
        """Return the p99 (ms) of ``through`` or ``direct``."""
        values = self.through if path == THROUGH else self.direct
        return percentile(values, 99) if values else float("nan")


def mint_senders(bench: Bench) -> dict[str, Callable[[int], Awaitable[bool]]]:
    """Return the two ways to mint: ``POST /realtime/sessions``, and the emulator's own."""
    through_url = f"{bench.service.base_url}/realtime/sessions"
    direct_url = f"{bench.emulator.base_url}/openai/v1/realtime/client_secrets"
    direct_body = json.dumps(
        client_secret_request(
            load_catalog().get("elena"), deployment="gpt-realtime", ttl_seconds=60
        )
    ).encode()

    async def post(url: str, body: bytes, headers: dict[str, str], expect: int) -> bool:
        try:
            async with bench.session.post(url, data=body, headers=headers) as response:
                await response.read()
                return response.status == expect
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def through(_: int) -> bool:
        return await post(through_url, b'{"agent":"elena"}', bench.caller(), 201)

    async def direct(_: int) -> bool:
        headers = {"api-key": bench.key, "content-type": "application/json"}
        return await post(direct_url, direct_body, headers, 200)

    return {THROUGH: through, DIRECT: direct}


async def mint_profile(bench: Bench, args: argparse.Namespace) -> MintProfile:
    """Mint at ``args.mint_rate`` in interleaved rounds through the service and directly."""
    assert bench.service.process  # noqa: S101 - started by main()
    cpu = ProcessCpu(bench.service.process.pid)
    profile = MintProfile()
    senders = mint_senders(bench)
    per_round = max(1, int(args.mint_rate * args.mint_seconds / args.mint_rounds))
    for index in range(args.mint_rounds):
        order = list(senders) if index % 2 == 0 else list(reversed(senders))
        for name in order:
            before = cpu.seconds()
            latencies, errors = await open_loop(senders[name], total=per_round, rate=args.mint_rate)
            after = cpu.seconds()
            if name == THROUGH and before is not None and after is not None:
                profile.service_cpu_ms += (after - before) * 1000 / (per_round * args.mint_rounds)
            (profile.through if name == THROUGH else profile.direct).extend(latencies)
            if latencies:
                rounds = profile.rounds if name == THROUGH else profile.direct_rounds
                rounds.append(percentile(latencies, 99))
            profile.errors += errors
    return profile


async def active_calls(bench: Bench) -> int:
    """Return how many calls the service holds (``/status`` ``calls.active``)."""
    async with bench.session.get(f"{bench.service.base_url}/status") as response:
        status: dict[str, Any] = await response.json()
    return int(status["calls"]["active"])


async def open_held(
    bench: Bench, args: argparse.Namespace
) -> tuple[list[tuple[str, dict[str, str]]], int]:
    """Open up to ``args.hold`` calls through the service within the budget; keep them open."""
    calls: list[tuple[str, dict[str, str]]] = []
    url = f"{bench.service.base_url}/realtime/calls"
    body = json.dumps({"agent": "elena", "sdp_offer": bench.offer})
    deadline = time.monotonic() + args.hold_budget
    gate = asyncio.Semaphore(args.hold_concurrency)
    refused = 0

    async def hold_one() -> None:
        nonlocal refused
        async with gate:
            if time.monotonic() > deadline:
                return
            headers = bench.caller()
            try:
                async with bench.session.post(url, data=body, headers=headers) as response:
                    answer = await response.read()
                    if response.status == 201:
                        calls.append((json.loads(answer)["call_id"], headers))
                    else:
                        refused += 1
            except (aiohttp.ClientError, TimeoutError):
                refused += 1

    await asyncio.gather(*(hold_one() for _ in range(args.hold)))
    return calls, refused


async def release_all(bench: Bench, calls: list[tuple[str, dict[str, str]]]) -> None:
    """Hang every held call up (DELETE), 50 at a time."""
    gate = asyncio.Semaphore(50)

    async def release(call_id: str, headers: dict[str, str]) -> None:
        async with gate:
            await _delete(bench, call_id, headers)

    await asyncio.gather(*(release(c, h) for c, h in calls))


async def held_calls(bench: Bench, args: argparse.Namespace) -> bool:
    """Part 2: RSS per held control channel, and mint p99 with and without them."""
    assert bench.service.process  # noqa: S101 - started by main()
    assert bench.emulator.process  # noqa: S101
    pid = bench.service.process.pid
    for send in mint_senders(bench).values():  # warm up
        await open_loop(send, total=int(args.mint_rate), rate=args.mint_rate)
    without = await mint_profile(bench, args)
    await asyncio.sleep(1)
    rss_before = rss_mb(pid)
    emulator_before = rss_mb(bench.emulator.process.pid)
    started = time.monotonic()
    calls, refused = await open_held(bench, args)
    opened_in = time.monotonic() - started
    await asyncio.sleep(2)
    held = await active_calls(bench)
    rss_after = rss_mb(pid)
    emulator_after = rss_mb(bench.emulator.process.pid)
    with_calls = await mint_profile(bench, args)
    still = await active_calls(bench)
    await release_all(bench, calls)
    extra = rss_after - rss_before
    per = extra / held if held else float("nan")
    rise = with_calls.p99(THROUGH) / without.p99(THROUGH) - 1
    overhead_without = without.p99(THROUGH) - without.p99(DIRECT)
    overhead_with = with_calls.p99(THROUGH) - with_calls.p99(DIRECT)
    print(
        f"\nheld Voice Live calls: asked {args.hold}, opened {len(calls)} in {opened_in:.1f} s "
        f"(budget {args.hold_budget:g} s, {refused} refused/failed), {held} held after 2 s, "
        f"{still} still held after the mint load"
    )
    print(
        f"  service RSS {rss_before:.1f} MB -> {rss_after:.1f} MB: {extra:+.1f} MB, "
        f"{per * 1024:.1f} KB per held control channel "
        f"(= {per * 1000:.1f} MB per 1,000; emulator {emulator_before:.0f} -> "
        f"{emulator_after:.0f} MB)"
    )
    print(
        f"  mint p99 at {args.mint_rate:g}/s ({args.mint_rounds} interleaved rounds): through the "
        f"service {without.p99(THROUGH):.2f} ms without, {with_calls.p99(THROUGH):.2f} ms with "
        f"{held} calls held ({rise * 100:+.1f} %); straight at the emulator "
        f"{without.p99(DIRECT):.2f} / {with_calls.p99(DIRECT):.2f} ms"
    )
    print(
        f"  service's own share of the p99 (through - direct): {overhead_without:+.2f} ms "
        f"without, {overhead_with:+.2f} ms with; service CPU per mint "
        f"{without.service_cpu_ms:.2f} / {with_calls.service_cpu_ms:.2f} ms; errors "
        f"{without.errors}/{with_calls.errors}"
    )
    for label, profile in (("without", without), ("with", with_calls)):
        print(
            f"  per round p99 {label:<7} through/direct (ms): "
            + "  ".join(
                f"{t:.1f}/{d:.1f}"
                for t, d in zip(profile.rounds, profile.direct_rounds, strict=True)
            )
            + f"   median p99 overhead {profile.overhead():+.2f} ms"
        )
    ok = per * 1000 <= GOAL_HELD_MB_PER_1000 and rise <= GOAL_MINT_P99_RISE
    print(
        f"  goals (<= {GOAL_HELD_MB_PER_1000:g} MB per 1,000 channels, mint p99 rise <= "
        f"{GOAL_MINT_P99_RISE * 100:g} %): "
        + ("HELD" if ok else "MISSED")
        + ("" if held >= args.hold else f" (measured with {held}, not {args.hold})")
    )
    return ok


async def _run(
    args: argparse.Namespace, emulator: ServiceProcess, service: ServiceProcess, key: str
) -> None:
    peer = VoiceLiveTestClient()
    try:
        offer = await peer.offer()
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            bench = Bench(emulator=emulator, service=service, key=key, offer=offer, session=session)
            if not args.skip_setup:
                await setup_latency(bench, args)
            if args.hold > 0:
                await held_calls(bench, args)
    finally:
        await peer.close()


def main() -> None:
    """Parse arguments, start emulator and service, run both parts, stop both."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="call setups per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="setup time per path")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--hold", type=int, default=1000, help="Voice Live calls to hold")
    parser.add_argument("--hold-budget", type=float, default=120.0, help="seconds to open them")
    parser.add_argument("--hold-concurrency", type=int, default=8)
    parser.add_argument("--mint-rate", type=float, default=200.0)
    parser.add_argument("--mint-seconds", type=float, default=10.0)
    parser.add_argument("--mint-rounds", type=int, default=4)
    parser.add_argument("--skip-setup", action="store_true", help="only the held-calls part")
    args = parser.parse_args()
    stack = bench_stack(
        emulator_env={
            "EMULATOR_MAX_CALLS": str(min(10_000, args.hold + 200)),
            "EMULATOR_VOICELIVE_CONNECTIONS_PER_MINUTE": "0",
        },
        service_env={"REALTIME_DEFAULT_UPSTREAM": "voice-live"},
        voicelive=True,
    )
    with running(stack):
        asyncio.run(_run(args, stack.emulator, stack.service, stack.key))


if __name__ == "__main__":
    main()
