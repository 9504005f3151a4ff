"""Server-side capture under load: 500 Azure OpenAI calls held, a turn every 3 s each.

Starts the emulator with ``EMULATOR_MEDIA=off`` (no aiortc peer per call: the offer is
validated and answered, and the scripted conversation plays on a timer to the call's
sideband only), a turn every ``--turn-interval`` seconds and no call quota, and the
service (one uvicorn worker, EasyAuth with a distinct user per call, Azure OpenAI as the
upstream, memory on with the SQLite queue and ``MEMORY_WORKER=off`` so no sink runs,
JSON logs at ``info`` as in production, the sidebands held by its capture process:
``REALTIME_CAPTURE_PROCESS``; ``--capture inprocess`` holds them on the service's own event
loop, the design before it, for a comparison in the same run conditions). One call is
opened and hung up first, so the capture process is up, as in a service that has been
running. The SDP offer is made once by an aiortc peer.

Before any profile the emulator's ephemeral-key store is filled and the service mints
for ``--warmup`` s (its first mints cost more: a first profile measured cold reads low
against every later one). Then ``--cycles`` times:

1. Mint p99 at ``--mint-rate``/s through the service (and straight at the emulator), in
   interleaved rounds, with no call held.
2. ``--calls`` calls opened through ``POST /realtime/calls`` at ``--open-rate``/s (open
   loop); the service joins each call's sideband and captures its transcripts into the
   durable queue.
3. In the first cycle only, a quiet window of ``--window`` s: service CPU (``/proc``: the
   service process and its capture process, each also printed) ÷ turns captured in it
   (the ``engram_realtime_captured_turns_total`` counters on ``/metrics``; each
   conversation turn is two transcript turns, the user's and the assistant's), and the
   captured rate against the expected ``calls / turn interval`` conversation turns per
   second.
4. Mint p99 again with the calls held (capture still running).
5. Every call hung up (``DELETE``), bounded.

A last no-call profile closes the run, so every with-calls profile lies between two
without: drift over the run (a neighbour, the machine's clock speed, the service's growing
per-user state) falls on both sides alike instead of on the rise. The rise is the pooled
p99 of every with-calls mint over the pooled p99 of every no-call mint; each cycle's rise
over the mean of the two no-call profiles around it is printed too, with the spread of
the no-call profiles among themselves (the noise floor).

The emulator is the upstream of every mint *and* plays all the held calls, so its own
slow-down is part of the end-to-end rise. Each mint's latency is therefore also split
(``bench/_mint_split.py``) into the upstream time the service awaited (read back from its
log by session id) and the service's own time (the rest); the rise is reported for both.
``--pin`` runs the service alone on CPU 0 and the emulator and this client on CPU 1, so
the emulator's work does not take the service's core. The emulator's
ephemeral-key store is filled first (``--no-fill`` skips it), so every profile mints into
the same steady state; ``--upstream-nice`` ranks the emulator below this client on their
shared core, so the client's timing waits less for the held calls' playback;
``--fair-upstream`` keeps the emulator's collector off the held calls,
as Azure's latency does not depend on our calls. A line marked MODELLED adds each mint's
own time to an upstream time drawn from the no-call profile. Every result names the
isolation it was measured with.

Goals: <= 2 ms service CPU per conversation turn; the expected turn rate captured; mint
p99 rise <= 10 %. Loopback only; every wait bounded. On a shared machine latencies swing
with the neighbours: read them next to the CPU figures, and compare medians of runs.

    .venv/bin/python bench/bench_capture.py --nice -10 --upstream-nice 5 --pin --fair-upstream
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._load import ProcessCpu, TreeCpu, open_loop
from bench._mint_split import AnswerLog, MintLog, SplitProfile, split_profile
from bench._sched import isolate, loop_thread_cpu, place, probe_summary, run_queue_ms
from bench._stack import bench_stack, running
from bench.bench_calls import DIRECT, Bench, active_calls, mint_senders
from bench.bench_calls import release_all as release_calls
from tests.support.realtime_client import RealtimeTestClient
from tests.support.servers import ServiceProcess

from engram_voice.emulator.keys import MAX_KEYS as EMULATOR_MAX_KEYS

GOAL_CPU_MS_PER_TURN = 2.0
GOAL_MINT_P99_RISE = 0.10
GOAL_CAPTURED_SHARE = 0.95
_CAPTURED = "engram_realtime_captured_turns_total{"


async def captured_turns(bench: Bench) -> dict[str, float]:
    """Return the service's captured transcript turns by outcome (from ``/metrics``)."""
    async with bench.session.get(f"{bench.service.base_url}/metrics") as response:
        text = await response.text()
    outcomes: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(_CAPTURED):
            labels, value = line.rsplit(" ", 1)
            outcome = labels.split('outcome="', 1)[1].split('"', 1)[0]
            outcomes[outcome] = outcomes.get(outcome, 0.0) + float(value)
    return outcomes


async def fill_key_store(bench: Bench, args: argparse.Namespace) -> None:
    """Mint straight at the emulator until its ephemeral-key store is full (steady state).

    The emulator keeps the last ``MAX_KEYS`` (10,000) keys it minted, each with its
    session; once full, every mint evicts one. Before that point a run's first profile
    mints into a store still filling and the later ones into a full one, whose evictions
    make the stand-in's collector passes several times longer: a rise from the order of
    the phases, not from the calls. Filling it first puts every profile in the steady state.
    """
    if args.no_fill:
        return
    send = mint_senders(bench)[DIRECT]
    total = EMULATOR_MAX_KEYS + 1_000
    started = time.monotonic()
    _, errors = await open_loop(send, total=total, rate=args.fill_rate)
    print(
        f"filled the emulator's key store: {total} mints straight at it in "
        f"{time.monotonic() - started:.0f} s ({errors} failed), so every profile runs with it "
        "full (each mint evicts one key), as it will for the rest of the run"
    )


async def open_calls(bench: Bench, args: argparse.Namespace) -> list[tuple[str, dict[str, str]]]:
    """Open ``args.calls`` calls through the service at ``args.open_rate``/s; keep them."""
    calls: list[tuple[str, dict[str, str]]] = []
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
        calls.append((json.loads(answer)["call_id"], headers))
        return True

    latencies, errors = await open_loop(send, total=args.calls, rate=args.open_rate)
    print(
        f"\nopened {len(calls)} of {args.calls} calls at {args.open_rate:g}/s "
        f"({errors} refused/failed; setup p50 {sorted(latencies)[len(latencies) // 2]:.0f} ms)"
        if latencies
        else f"\nopened no call ({errors} refused/failed)"
    )
    return calls


async def capture_status(bench: Bench) -> dict[str, Any]:
    """Return ``/status`` ``calls.capture``: where the service holds its sidebands."""
    async with bench.session.get(f"{bench.service.base_url}/status") as response:
        status: dict[str, Any] = await response.json()
    capture: dict[str, Any] = status["calls"].get("capture", {})
    return capture


async def start_capture_process(bench: Bench, args: argparse.Namespace) -> None:
    """Open and hang up one call, so the service's capture process is up before part 1.

    A service starts its capture process at its first call, and captures the calls set up
    while it starts (about a second) itself; a service that has been running has it up.
    """
    calls = await open_calls(bench, argparse.Namespace(calls=1, open_rate=1.0))
    await release_calls(bench, calls)
    deadline = time.monotonic() + 30
    capture = await capture_status(bench)
    while capture.get("mode") == "process" and not capture.get("ready"):
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
        capture = await capture_status(bench)
    print(f"capture host: {capture}")
    args.capture_pid = capture.get("pid")
    args.capture_priority = capture.get("priority")
    if args.capture_cpu is not None and isinstance(args.capture_pid, int):
        place(args.capture_pid, cpus={args.capture_cpu}, nice=None)
        print(f"the capture process (pid {args.capture_pid}) moved to CPU {args.capture_cpu}")


async def capture_window(bench: Bench, args: argparse.Namespace, held: int) -> tuple[bool, bool]:
    """Measure service CPU per captured turn and the captured rate over a quiet window.

    The service's CPU is its own process plus its capture process (where the sidebands
    are held with ``REALTIME_CAPTURE_PROCESS=on``); both are printed, and the goal is
    judged on their sum.
    """
    assert bench.service.process  # noqa: S101 - started by main()
    assert bench.emulator.process  # noqa: S101
    service_pid = bench.service.process.pid
    cpu, own = TreeCpu(service_pid), ProcessCpu(service_pid)
    emulator_cpu = ProcessCpu(bench.emulator.process.pid)
    emulator_before = emulator_cpu.seconds() or 0.0
    loop_before = loop_thread_cpu(service_pid)
    own_before = own.seconds() or 0.0
    before, cpu_before, started = await captured_turns(bench), cpu.seconds(), time.monotonic()
    await asyncio.sleep(args.window)
    after, cpu_after, elapsed = await captured_turns(bench), cpu.seconds(), time.monotonic()
    loop_after = loop_thread_cpu(service_pid)
    own_s = (own.seconds() or 0.0) - own_before
    elapsed -= started
    emulator_s = (emulator_cpu.seconds() or 0.0) - emulator_before
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    transcripts = sum(delta.values())
    turns = transcripts / 2  # a conversation turn: the user's and the assistant's transcript
    cpu_s = (cpu_after - cpu_before) if cpu_before is not None and cpu_after is not None else 0.0
    per_turn = cpu_s * 1000 / turns if turns else float("nan")
    expected = held / args.turn_interval
    rate = turns / elapsed
    print(
        f"capture over {elapsed:.1f} s with {held} calls held: {transcripts:.0f} transcript "
        f"turns ({', '.join(f'{k} {v:.0f}' for k, v in sorted(delta.items()))}) = "
        f"{turns:.0f} conversation turns, {rate:.1f}/s vs {expected:.1f}/s expected "
        f"({rate / expected * 100 if expected else 0:.0f} %)"
    )
    capture_s = cpu_s - own_s
    print(
        f"  service CPU {cpu_s:.2f} s = {cpu_s / elapsed * 100:.0f} % of a core; "
        f"{per_turn:.2f} ms per conversation turn ({per_turn / 2:.2f} ms per transcript turn); "
        f"of which the service process {own_s * 1000 / turns if turns else 0:.2f} ms and its "
        f"capture process {capture_s * 1000 / turns if turns else 0:.2f} ms per turn; "
        f"emulator {emulator_s / elapsed * 100:.0f} % of a core"
    )
    if loop_before is not None and loop_after is not None and turns:
        loop_s = loop_after - loop_before
        print(
            f"  of which the event-loop thread {loop_s * 1000 / turns:.2f} ms per conversation "
            f"turn ({loop_s / elapsed * 100:.0f} % of a core: what shares the loop with minting); "
            "the rest in the queue's and the usage store's writer threads"
        )
    cpu_ok = per_turn <= GOAL_CPU_MS_PER_TURN
    rate_ok = bool(expected) and rate >= GOAL_CAPTURED_SHARE * expected
    return cpu_ok, rate_ok


async def mint_split(
    bench: Bench, args: argparse.Namespace, log: MintLog, name: str
) -> SplitProfile:
    """Mint at ``args.mint_rate`` through the service and directly, split per request."""
    assert bench.service.process  # noqa: S101 - started by main()
    pid = bench.service.process.pid
    started, waited = time.time(), run_queue_ms(pid)
    try:
        return await _split(bench, args, log)
    finally:
        ended, waited_after = time.time(), run_queue_ms(pid)
        args.windows[name] = (started, ended)
        if waited is not None and waited_after is not None:
            args.run_queue.setdefault(name, []).append((waited_after - waited) / (ended - started))


async def _split(bench: Bench, args: argparse.Namespace, log: MintLog) -> SplitProfile:
    assert bench.service.process  # noqa: S101 - started by main()
    return await split_profile(
        session=bench.session,
        service_url=bench.service.base_url,
        service_pid=bench.service.process.pid,
        log=log,
        caller=bench.caller,
        direct=mint_senders(bench)[DIRECT],
        rate=args.mint_rate,
        seconds=args.mint_seconds,
        rounds=args.mint_rounds,
        answers=args.answers,
    )


def realtime_client() -> None:
    """Put every thread of this client at SCHED_FIFO 1: a wake-up runs at once.

    The load generator's own scheduling delay is part of every latency it measures; at a
    real-time priority it preempts the emulator and the capture process on its core the
    moment an answer arrives (it sleeps between sends; the kernel's real-time throttle
    still leaves the others 5 % of each second at worst).
    """
    for task in Path("/proc/self/task").iterdir():
        os.sched_setscheduler(int(task.name), os.SCHED_FIFO, os.sched_param(1))
    print("this client at real-time priority (SCHED_FIFO 1)")


def isolation(args: argparse.Namespace) -> str:
    """Say where the measured processes ran (the bench prints it next to every result)."""
    placed = (
        "ISOLATED: the service alone on CPU 0, the emulator (upstream stand-in) and this "
        "client on CPU 1"
        if args.pin and (os.cpu_count() or 1) >= 2
        else "NOT ISOLATED: the service, the emulator and this client share every core"
    )
    if args.client_cpu is not None:
        placed += f"; this client moved to CPU {args.client_cpu}"
    if args.client_fifo:
        placed += "; this client at real-time priority (SCHED_FIFO 1)"
    if args.capture_cpu is not None:
        placed += f"; the service's capture process on CPU {args.capture_cpu}"
    elif args.pin:
        placed += "; the service's capture process (its child) shares CPU 0"
    priority = getattr(args, "capture_priority", None)
    if priority is not None:
        placed += f", at priority {priority} (REALTIME_CAPTURE_PRIORITY)"
    ranked = f"; nice {args.nice} over the neighbours" if args.nice is not None else ""
    if args.upstream_nice is not None:
        ranked += f"; the emulator at nice {args.upstream_nice}"
    upstream = (
        "; FAIR UPSTREAM: the emulator's collector never rescans the held calls"
        if args.fair_upstream
        else "; the emulator as it is (its GC rescans the held calls)"
    )
    return placed + ranked + upstream


_PARTS = (
    ("total", "end to end (through the service)"),
    ("upstream", "upstream as the service awaited it"),
    ("own", "the service's own (total - upstream)"),
    ("upstream_own", "the upstream's own (sent -> its answer)"),
    ("service", "the service's share (total - that)"),
    ("direct", "straight at the emulator"),
)


def report_mint(args: argparse.Namespace, without: SplitProfile, with_calls: SplitProfile) -> bool:
    """Print the mint profiles part by part; return whether the end-to-end goal held."""
    still = getattr(args, "still_held", 0)
    print(f"isolation: {isolation(args)}")
    print(
        f"mint p99 at {args.mint_rate:g}/s ({args.mint_rounds} interleaved rounds), without -> "
        f"with {still} calls held and capturing (median of the rounds' p99 in brackets):"
    )
    for part, label in _PARTS:
        before, after = without.p99(part), with_calls.p99(part)
        print(
            f"  {label:<38} {before:6.2f} -> {after:6.2f} ms ({(after / before - 1) * 100:+6.1f} %)"
            f"   [{without.median_round_p99(part):.2f} -> {with_calls.median_round_p99(part):.2f}]"
        )
    print(
        f"  service CPU per mint {without.service_cpu_ms:.2f} / {with_calls.service_cpu_ms:.2f} ms "
        f"(with the calls held it includes their capture); errors "
        f"{without.errors}/{with_calls.errors}"
    )
    fixed = [fixed_upstream_p99(profile, without) for profile in (without, with_calls)]
    print(
        f"  MODELLED, not measured: the service's share of each mint plus an upstream's own "
        f"time drawn from the no-call profile (an upstream whose latency does not depend on "
        f"our calls, as Azure's does not): p99 {fixed[0]:.2f} -> {fixed[1]:.2f} ms "
        f"({(fixed[1] / fixed[0] - 1) * 100:+.1f} %)"
    )
    return with_calls.p99("total") / without.p99("total") - 1 <= GOAL_MINT_P99_RISE


def fixed_upstream_p99(profile: SplitProfile, baseline: SplitProfile) -> float:
    """Return the p99 of ``profile``'s service shares each plus an upstream time of ``baseline``.

    Each mint's service share is paired with the upstream's own times drawn (seeded) from
    the baseline's, several draws per mint, so the model's tail is not one draw's luck.
    Without the emulator's log the service's own part and the awaited upstream are used.
    """
    share, upstream = (
        (profile.service, baseline.upstream_own)
        if profile.service
        else (profile.own, baseline.upstream)
    )
    if not share or not upstream:
        return float("nan")
    draw = random.Random(0).choice  # a reproducible model
    sums = sorted(own + draw(upstream) for own in share for _ in range(20))
    return sums[min(len(sums) - 1, int(len(sums) * 0.99))]


async def run(bench: Bench, args: argparse.Namespace) -> None:
    """Run the parts in order and print the goals."""
    assert bench.service.log_path  # noqa: S101 - bench_stack() sets it
    assert bench.emulator.log_path  # noqa: S101 - bench_stack(emulator_log=True) sets it
    log = MintLog(bench.service.log_path)
    args.answers = AnswerLog(bench.emulator.log_path)
    await fill_key_store(bench, args)
    for send in mint_senders(bench).values():  # warm up: the service's first mints cost more
        await open_loop(send, total=int(args.mint_rate * args.warmup), rate=args.mint_rate)
    await start_capture_process(bench, args)
    args.windows, args.run_queue = {}, {}
    without, with_calls = SplitProfile(), SplitProfile()
    cycles: list[tuple[SplitProfile, SplitProfile]] = []
    cpu_ok = rate_ok = False
    held = 0
    for cycle in range(args.cycles):
        before = await mint_split(bench, args, log, "mint without calls")
        calls: list[tuple[str, dict[str, str]]] = []
        try:
            calls = await open_calls(bench, args)
            await asyncio.sleep(min(10.0, 2 * args.turn_interval))  # sidebands joined, turns flow
            held = await active_calls(bench)
            if cycle == 0:
                started = time.time()
                if args.probe:  # a census of what the collector tracks with the calls held
                    os.kill(bench.service.process.pid, signal.SIGUSR1)  # type: ignore[union-attr]
                cpu_ok, rate_ok = await capture_window(bench, args, held)
                args.windows["capture only"] = (started, time.time())
            during = await mint_split(bench, args, log, "mint with calls held")
            args.still_held = await active_calls(bench)
        finally:
            await asyncio.wait_for(release_calls(bench, calls), timeout=120)
        await asyncio.sleep(2)  # the hang-ups settled
        cycles.append((before, during))
        without.merge(before)
        with_calls.merge(during)
    last = await mint_split(bench, args, log, "mint without calls")  # brackets the last cycle
    without.merge(last)
    mint_ok = report_mint(args, without, with_calls)
    report_cycles(cycles, last)
    print(
        "  the service's event loop waited for a CPU (run queue: the emulator, this client, "
        "the neighbours): "
        + ", ".join(f"{k} {statistics.mean(v):.0f} ms/s" for k, v in args.run_queue.items())
    )
    if args.probe:
        probe_summary(args.probe, args.windows)
        probe_summary(args.probe.with_name("emulator.jsonl"), args.windows, "emulator")
    own_rise = with_calls.p99("service") / without.p99("service") - 1
    print(
        f"goals: CPU <= {GOAL_CPU_MS_PER_TURN:g} ms per turn {'HELD' if cpu_ok else 'MISSED'}; "
        f">= {GOAL_CAPTURED_SHARE * 100:g} % of the expected turns captured "
        f"{'HELD' if rate_ok else 'MISSED'}; mint p99 rise <= {GOAL_MINT_P99_RISE * 100:g} % "
        f"end to end {'HELD' if mint_ok else 'MISSED'}, the service's share "
        f"{'HELD' if own_rise <= GOAL_MINT_P99_RISE else 'MISSED'} ({own_rise * 100:+.1f} %)"
        + ("" if held >= args.calls else f" (measured with {held} calls, not {args.calls})")
    )


def report_cycles(cycles: list[tuple[SplitProfile, SplitProfile]], last: SplitProfile) -> None:
    """Print each cycle's rise over the no-call profiles around it, and their spread.

    A no-call profile that drifts from the others (a neighbour, the machine's clock speed)
    shows here as a spread among the no-call p99s: the noise floor of the comparison.
    """
    afters = [before for before, _ in cycles[1:]] + [last]
    part, share = ("service", "the service's share") if last.service else ("own", "own")
    rises = []
    for index, ((before, during), after) in enumerate(zip(cycles, afters, strict=True), 1):
        around = (before.p99("total") + after.p99("total")) / 2
        rises.append(during.p99("total") / around - 1)
        print(
            f"  cycle {index}: p99 end to end {before.p99('total'):.2f} | "
            f"{during.p99('total'):.2f} | {after.p99('total'):.2f} ms (without | with | without): "
            f"{rises[-1] * 100:+.1f} % over the mean of the two without; {share} "
            f"{before.p99(part):.2f} | {during.p99(part):.2f} | {after.p99(part):.2f} ms"
        )
    alone = [before.p99("total") for before, _ in cycles] + [last.p99("total")]
    print(
        f"  median of the cycles' rises {statistics.median(rises) * 100:+.1f} %; the no-call "
        f"profiles among themselves (noise floor): p99 {min(alone):.2f}-{max(alone):.2f} ms "
        f"({(max(alone) / min(alone) - 1) * 100:.0f} % apart)"
    )


async def _main(
    args: argparse.Namespace, emulator: ServiceProcess, service: ServiceProcess, key: str
) -> None:
    peer = RealtimeTestClient()
    try:
        offer = await peer.offer()
    finally:
        await peer.close()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        bench = Bench(emulator=emulator, service=service, key=key, offer=offer, session=session)
        await run(bench, args)


def main() -> None:
    """Parse arguments, start the emulator and the service, run the bench, stop both."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=500, help="calls to hold")
    parser.add_argument("--turn-interval", type=float, default=3.0, help="seconds per turn")
    parser.add_argument("--open-rate", type=float, default=25.0, help="call setups per second")
    parser.add_argument("--window", type=float, default=30.0, help="capture window (s)")
    parser.add_argument("--mint-rate", type=float, default=200.0)
    parser.add_argument("--mint-seconds", type=float, default=10.0)
    parser.add_argument("--mint-rounds", type=int, default=4)
    parser.add_argument(
        "--cycles",
        type=int,
        default=3,
        help="without/with cycles (calls opened and hung up each time), then one more without",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=20.0,
        help="seconds of mints through the service (and straight) before the first profile",
    )
    parser.add_argument(
        "--pin", action="store_true", help="service on CPU 0; emulator and this client on CPU 1"
    )
    parser.add_argument(
        "--capture",
        choices=("process", "inprocess"),
        default="process",
        help="where the service holds the sidebands (REALTIME_CAPTURE_PROCESS): its capture "
        "process (the default) or its own event loop (the design before it, for comparison)",
    )
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra setting for the service (repeatable), e.g. MEMORY_SQLITE_SYNCHRONOUS=normal",
    )
    parser.add_argument(
        "--client-cpu",
        type=int,
        default=None,
        help="move this client (the load generator) to this CPU (default: with the emulator): "
        "with --pin --client-cpu 0 --capture-cpu 1 the client's own delays no longer grow "
        "with the emulator's playback, so the service's own part is measured fairly",
    )
    parser.add_argument(
        "--capture-cpu",
        type=int,
        default=None,
        help="move the service's capture process to this CPU (default: where the service runs)",
    )
    parser.add_argument(
        "--client-fifo",
        action="store_true",
        help="run this client at real-time priority (SCHED_FIFO 1; root): its timing then "
        "never waits for the processes sharing its core",
    )
    parser.add_argument(
        "--upstream-nice",
        type=int,
        help="the emulator's nice value after --nice (above this client's: the client's "
        "timing then waits less for the emulator's held calls on their shared core)",
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=None,
        help="nice value of the three measured processes (e.g. -10 on a shared machine: the "
        "neighbours' load then stays out of the tail; needs root)",
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="run the service and the emulator under bench._probe (loop lag, GC)",
    )
    parser.add_argument(
        "--no-fill",
        action="store_true",
        help="skip filling the emulator's key store before the first profile (the former order)",
    )
    parser.add_argument("--fill-rate", type=float, default=800.0, help="mints/s to fill it")
    parser.add_argument(
        "--fair-upstream",
        action="store_true",
        help="keep the upstream stand-in's latency independent of the calls it plays: the "
        "emulator freezes its live objects every second, so its collector never rescans the "
        "500 held calls (Azure's latency does not depend on our calls either)",
    )
    args = parser.parse_args()
    probes = Path(tempfile.mkdtemp(prefix="engram-probe-"))
    args.probe = probes / "probe.jsonl" if args.probe else None
    emulator_probe = probes / "emulator.jsonl" if args.probe or args.fair_upstream else None
    stack = bench_stack(
        emulator_env={
            "EMULATOR_MEDIA": "off",
            "EMULATOR_TURN_INTERVAL_SECONDS": str(args.turn_interval),
            "EMULATOR_MAX_TURNS": "10000",
            "EMULATOR_MAX_CALLS": str(min(10_000, args.calls + 200)),
            **({"BENCH_GC_FREEZE_EVERY": "1"} if args.fair_upstream else {}),
        },
        service_env={
            "REALTIME_DEFAULT_UPSTREAM": "azure-openai",
            "MEMORY_WORKER": "off",
            "REALTIME_CAPTURE_PROCESS": "true" if args.capture == "process" else "false",
            **dict(pair.split("=", 1) for pair in args.service_env),
        },
        probe=args.probe,
        emulator_probe=emulator_probe,
        emulator_log=True,
    )
    with running(stack):
        isolate(stack, args)
        if args.upstream_nice is not None and stack.emulator.process:
            place(stack.emulator.process.pid, cpus=None, nice=args.upstream_nice)
            print(f"the emulator (upstream stand-in) at nice {args.upstream_nice}")
        if args.client_cpu is not None:
            place(0, cpus={args.client_cpu}, nice=None)
            print(f"this client (the load generator) moved to CPU {args.client_cpu}")
        if args.client_fifo:
            realtime_client()
        asyncio.run(_main(args, stack.emulator, stack.service, stack.key))


if __name__ == "__main__":
    main()
