"""Enrich on the PostgreSQL queue: durable vs no-op, two services vs one, p99 at a fixed rate.

Starts a local PostgreSQL (Debian's binaries, ``fsync=on``: a 202 is a flushed commit),
the no-op baseline handler and two real services (``engram-voice serve``,
``MEMORY_QUEUE=postgres``, one uvicorn worker, in-process delivery off). Then, in one run:

1. closed-loop rounds, each measuring no-op, one durable service and two durable
   services (requests split between them) in turn: req/s, latency p50/p99, and the CPU
   per request of every process (each service, PostgreSQL's backends summed, the load
   generator), read from /proc. Ratios: durable / no-op (issue 13's goal: >= 0.5) and
   two services / one (goal: >= 1.6);
2. open-loop latency at ``--rate`` requests/s for ``--seconds`` (from each request's
   scheduled start): p50/p99 (goal: p99 <= 20 ms at 1,000 req/s).

``--replica-cpus X`` gives the no-op and each service process its own CPU budget of X
CPUs (a cgroup CFS quota, ``bench/_cgroup.py``), as Container Apps gives every replica its
own vCPUs; PostgreSQL and the load generator stay unbudgeted. Without it the processes
share the machine (labelled "unbudgeted"); ``--also-unbudgeted`` runs both passes.

The load generator is ``wrk`` with ``bench/enrich.lua`` when installed (C: a few us of CPU
per request, keep-alive, a fresh turn id per request, 200 sessions with their own tokens),
else the Python (aiohttp) one, which costs about as much CPU per request as the service;
the report says which ran and what it cost.

``--queue-only`` instead drives the two queue backends in this process (no HTTP): 64
concurrent one-turn enqueues over 200 sessions, SQLite then PostgreSQL, twice: enqueues/s,
group commits, p50/p99 of one enqueue. Loopback only; every wait is bounded.

    .venv/bin/python bench/bench_queue_pg.py [--replica-cpus 0.5 [--also-unbudgeted]]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._cgroup import budget_available, cpu_budget, throttled_seconds
from bench._load import TreeCpu, percentile
from bench._wrk import finish_wrk, start_wrk, write_tokens, wrk_available
from bench.bench_enrich import _SESSIONS, Bodies, _open_loop
from tests.support.memory_service import memory_service, noop_service
from tests.support.servers import ServiceProcess

from engram_voice.credentials.secret import Secret
from engram_voice.devpostgres import LocalPostgres, start_local_postgres
from engram_voice.memory.postgres_queue import PostgresTurnQueue
from engram_voice.memory.queue import EnqueueBatch, TurnQueue
from engram_voice.memory.sqlite_queue import SqliteTurnQueue
from engram_voice.memory.tokens import MemoryTokenSigner


@dataclass
class Phase:
    """One measured closed-loop phase: throughput, latency and CPU per request."""

    name: str
    requests: int
    seconds: float
    non_202: int
    p50_ms: float | None
    p99_ms: float | None
    service_us: list[float]
    """CPU per request of each measured service process (us per request it answered)."""
    service_cores: list[float]
    postgres_us: float
    """PostgreSQL's backends together, per request of the phase (us)."""
    generator_us: float

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds


@dataclass
class Bench:
    """The processes under test, their load and what was measured."""

    args: argparse.Namespace
    postgres: LocalPostgres
    noop: ServiceProcess
    services: list[ServiceProcess]
    bodies: Bodies
    tokens: Path
    use_wrk: bool
    groups: dict[int, Path | None] = field(default_factory=dict)
    _runs: int = 0

    def _prefix(self) -> str:
        self._runs += 1
        return f"r{self._runs}x{secrets.token_hex(3)}"

    def _generate(self, urls: list[str]) -> tuple[list[int], float, int, list[float]]:
        """Load ``urls`` in a closed loop; return requests per URL, seconds, non-202s, latencies.

        With wrk the latencies are its [p50, p99] (the worse of the runs when there are two).
        """
        conc = self.args.concurrency // len(urls)
        if self.use_wrk:
            seconds = self.args.round_seconds
            runs = [
                start_wrk(u, self.tokens, self._prefix(), connections=conc, seconds=seconds)
                for u in urls
            ]
            results = [finish_wrk(r, timeout=seconds + 30) for r in runs]
            return (
                [r.requests for r in results],
                max(r.seconds for r in results),
                sum(r.non_2xx + r.socket_errors for r in results),
                [max(r.p50_ms for r in results), max(r.p99_ms for r in results)],
            )
        return asyncio.run(_python_closed_loop(urls, self.bodies, self.args.requests, conc))

    def measure(self, name: str, targets: list[ServiceProcess]) -> Phase:
        """Run one closed-loop phase against ``targets`` and read every process's CPU."""
        meters = [TreeCpu(t.process.pid) for t in targets if t.process]
        postgres = TreeCpu(self.postgres.pid)
        before = [m.seconds() or 0.0 for m in meters]
        pg_before = postgres.seconds() or 0.0
        gen_before = _generator_cpu()
        started = time.perf_counter()
        handled, seconds, bad, latency = self._generate(
            [f"{t.base_url}/memory/enrich" for t in targets]
        )
        wall = time.perf_counter() - started
        used = [(m.seconds() or 0.0) - b for m, b in zip(meters, before, strict=True)]
        if self.use_wrk:
            p50, p99 = latency
        else:
            p50, p99 = (
                (percentile(latency, 50), percentile(latency, 99)) if latency else (None, None)
            )
        requests = sum(handled)
        per = 1e6 / max(1, requests)
        return Phase(
            name=name,
            requests=requests,
            seconds=seconds,
            non_202=bad,
            p50_ms=p50,
            p99_ms=p99,
            service_us=[u * 1e6 / max(1, n) for u, n in zip(used, handled, strict=True)],
            service_cores=[u / wall for u in used],
            postgres_us=((postgres.seconds() or 0.0) - pg_before) * per,
            generator_us=(_generator_cpu() - gen_before) * per,
        )


def _generator_cpu() -> float:
    """CPU seconds of this process plus its reaped children (the wrk runs)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


async def _python_closed_loop(
    urls: list[str], bodies: Bodies, requests: int, conc: int
) -> tuple[list[int], float, int, list[float]]:
    """Run the fallback generator: aiohttp, ``conc`` connections per URL, latencies in ms."""
    latencies: list[float] = []
    bad = 0
    connector = aiohttp.TCPConnector(limit=conc * len(urls) + 8)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker(url: str, work: Iterator[tuple[bytes, dict[str, str]]]) -> None:
            nonlocal bad
            for body, headers in work:
                sent = time.perf_counter()
                async with (
                    asyncio.timeout(10),
                    http.post(url, data=body, headers=headers) as answer,
                ):
                    await answer.read()
                    if answer.status == 202:
                        latencies.append((time.perf_counter() - sent) * 1000)
                    else:
                        bad += 1

        share = requests // len(urls)
        started = time.perf_counter()
        await asyncio.gather(
            *(
                worker(url, work)
                for url in urls
                for work in [iter(bodies.take(share))]
                for _ in range(conc)
            )
        )
        return [share] * len(urls), time.perf_counter() - started, bad, latencies


def _ms(value: float | None) -> str:
    return "   n/a" if value is None else f"{value:6.2f}"


def _print_phase(phase: Phase, round_no: int) -> None:
    services = " + ".join(f"{u:5.0f}" for u in phase.service_us)
    cores = "+".join(f"{c:.2f}" for c in phase.service_cores)
    latency = f"{_ms(phase.p50_ms)} {_ms(phase.p99_ms)}"
    print(
        f"  {phase.name:12s} {round_no:>2d} {phase.rate:8.0f} {latency} {phase.non_202:>7d}   "
        f"{services:>13s} ({cores}) {phase.postgres_us:8.0f} {phase.generator_us:8.0f}"
    )


def _closed_loop_pass(bench: Bench, label: str) -> None:
    """Alternate no-op, durable and two-services phases; print every round and the ratios."""
    args = bench.args
    generator = (
        f"wrk, {args.concurrency} connections, {args.round_seconds:g} s per phase"
        if bench.use_wrk
        else f"Python aiohttp, {args.concurrency} connections, {args.requests} requests per phase"
    )
    print(f"closed loop, {label}; load generator: {generator}; {os.cpu_count()} cores for all:")
    print(
        "  phase     round    req/s p50 ms p99 ms non-202   service CPU us/req (cores)"
        "  PG us/req gen us/req"
    )
    phases: dict[str, list[Phase]] = {"no-op": [], "durable": [], "two services": []}
    throttled = {pid: throttled_seconds(group) or 0.0 for pid, group in bench.groups.items()}
    for round_no in range(1, args.rounds + 1):
        for name, targets in (
            ("no-op", [bench.noop]),
            ("durable", bench.services[:1]),
            ("two services", bench.services),
        ):
            phase = bench.measure(name, targets)
            phases[name].append(phase)
            _print_phase(phase, round_no)
    best = {name: max(p.rate for p in found) for name, found in phases.items()}
    cpu = {
        name: statistics.median(sum(p.service_us) / len(p.service_us) for p in found)
        for name, found in phases.items()
    }
    print(
        f"  best req/s: no-op {best['no-op']:.0f}, durable {best['durable']:.0f}, "
        f"two services {best['two services']:.0f}"
    )
    print(f"  durable / no-op = {best['durable'] / best['no-op']:.2f} (goal >= 0.50)")
    print(f"  two services / one = {best['two services'] / best['durable']:.2f} (goal >= 1.6)")
    print(
        f"  service CPU per request (median of rounds): no-op {cpu['no-op']:.0f} us, "
        f"durable {cpu['durable']:.0f} us, each of two {cpu['two services']:.0f} us; "
        f"no-op / durable = {cpu['no-op'] / cpu['durable']:.2f} (the throughput ratio a "
        "CPU-bound service reaches under equal budgets)"
    )
    for pid, group in bench.groups.items():
        spent = (throttled_seconds(group) or 0.0) - throttled[pid]
        print(f"  pid {pid}: throttled {spent:.1f} s by its budget during this pass")


@contextlib.contextmanager
def _budgets(bench: Bench, cpus: float | None) -> Iterator[str]:
    """Put the no-op and every service under ``cpus`` each (or none); yield the label."""
    if cpus is None:
        yield "unbudgeted (every process shares the machine)"
        return
    with contextlib.ExitStack() as stack:
        for process in (bench.noop, *bench.services):
            if process.process is None:
                continue
            pid = process.process.pid
            bench.groups[pid] = stack.enter_context(cpu_budget(pid, cpus, label="enrich"))
        try:
            yield (
                f"budgeted: {cpus:g} CPU per service process (no-op included; cgroup CFS quota), "
                "PostgreSQL and the load generator unbudgeted"
            )
        finally:
            bench.groups.clear()


async def _open_loops(args: argparse.Namespace, bench: Bench) -> None:
    """Open loop at ``--rate``: latency, and CPU per request at that fixed rate.

    CPU per request depends on the rate (at a low rate every request pays its own
    wake-ups), so the fair CPU comparison of no-op and durable is at one fixed rate; it
    also moves much less with the neighbours than throughput does.
    """
    total = int(args.rate * args.seconds)
    targets = (("no-op", bench.noop), ("durable", bench.services[0]))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512)) as http:
        for name, process in targets:
            url = f"{process.base_url}/memory/enrich"
            assert process.process is not None  # noqa: S101 - started
            service, postgres = TreeCpu(process.process.pid), TreeCpu(bench.postgres.pid)
            cpu_before, pg_before = service.seconds() or 0.0, postgres.seconds() or 0.0
            latencies, errors = await _open_loop(http, url, bench.bodies.take(total), args.rate)
            cpu = ((service.seconds() or 0.0) - cpu_before) * 1e6 / total
            pg = ((postgres.seconds() or 0.0) - pg_before) * 1e6 / total
            print(
                f"  {name:8s} p50 {percentile(latencies, 50):6.2f} ms  "
                f"p99 {percentile(latencies, 99):6.2f} ms  max {max(latencies):7.2f} ms  "
                f"errors {errors}  service {cpu:4.0f} us CPU/req  PostgreSQL {pg:3.0f} us/req"
                + ("   (goal p99 <= 20 ms)" if name == "durable" else "")
            )


def _run(bench: Bench) -> None:
    args = bench.args
    for process in (bench.noop, *bench.services):  # warm up every process once
        bench.measure("warm-up", [process])
    passes: list[float | None] = []
    if args.replica_cpus is None or args.also_unbudgeted:
        passes.append(None)
    if args.replica_cpus is not None:
        if not budget_available():
            print("no writable cgroup hierarchy (not root?): the budgeted pass cannot run")
        else:
            passes.append(args.replica_cpus)
    for cpus in passes:
        with _budgets(bench, cpus) as label:
            _closed_loop_pass(bench, label)
    print(
        f"open loop at {args.rate:.0f} req/s for {args.seconds:.0f} s "
        "(unbudgeted, Python generator):"
    )
    asyncio.run(_open_loops(args, bench))


async def _queue_only(
    queue: TurnQueue, postgres: TreeCpu | None = None, total: int = 6000, conc: int = 64
) -> str:
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
    cpu = time.process_time()
    server_before = postgres.seconds() or 0.0 if postgres else 0.0
    await asyncio.gather(*(caller() for _ in range(conc)))
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    server = ((postgres.seconds() or 0.0) - server_before) if postgres else None
    commits = getattr(queue, "commits", 0)
    await queue.close()
    return (
        f"  {queue.backend:8s} {total / elapsed:7.0f} enqueues/s  {commits} commits  "
        f"p50 {percentile(latencies, 50):5.1f} ms  p99 {percentile(latencies, 99):5.1f} ms  "
        f"this process {cpu / total * 1e6:4.0f} us CPU/enqueue"
        + (f", PostgreSQL {server / total * 1e6:4.0f} us" if server is not None else "")
    )


def _run_queue_only() -> None:
    server = start_local_postgres(database="queueonly")
    try:
        print(f"queue only, 64 callers, 6000 one-turn enqueues ({os.cpu_count()} cores):")
        for _ in range(2):
            with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
                print(asyncio.run(_queue_only(SqliteTurnQueue(Path(tmp) / "q.sqlite3"))))
            queue = PostgresTurnQueue(server.conninfo("queueonly"))
            print(asyncio.run(_queue_only(queue, TreeCpu(server.pid))))
    finally:
        server.stop()


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--round-seconds", type=float, default=5.0, help="per phase (wrk)")
    parser.add_argument("--requests", type=int, default=4000, help="per phase (Python)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--replica-cpus", type=float, default=None, help="CPU budget per process")
    parser.add_argument("--also-unbudgeted", action="store_true")
    parser.add_argument("--generator", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--queue-only", action="store_true", help="the backends alone, no HTTP")
    return parser.parse_args()


def main() -> None:
    """Run the benchmark and print its report."""
    args = _parse()
    if args.queue_only:
        _run_queue_only()
        return
    use_wrk = args.generator == "wrk" or (args.generator == "auto" and wrk_available())
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
            signer = MemoryTokenSigner([("bench", Secret(secret))])
            tokens = write_tokens(
                state / "tokens",
                [
                    (sid, signer.issue(session_id=sid, user_id=f"user{i}", agent="elena").token)
                    for i in range(_SESSIONS)
                    for sid in [f"vs_bench{i}"]
                ],
            )
            noop = noop_service(state / "noop.log").start()
            services = [memory_service(env, state / f"service{i}.log").start() for i in range(2)]
            bench = Bench(args, server, noop, services, Bodies(secret), tokens, use_wrk)
            try:
                _run(bench)
            finally:
                for process in (noop, *services):
                    process.stop()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
