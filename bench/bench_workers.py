"""Worker scaling benchmark: delivery with two ``engram-voice worker`` processes vs one.

Starts the Zep stand-in with a fixed ``--latency-ms`` (20) per call and the real service
with its in-process worker off (``MEMORY_WORKER=off``), both on loopback. The same
``--sessions`` (100) sessions are used throughout; an unmeasured warm-up first delivers one
turn of each, so Zep's users and threads exist before anything is timed. Each round then
queues ``--turns`` turns per session through ``POST /memory/enrich`` and starts N worker
processes on the queue (N alternates 1, 2, 1, 2 …), and reports two figures:

- **steady**: delivered turns per second over ``--window`` seconds, starting ``--settle``
  seconds after every worker answers ``/healthz``, read from the workers' own
  ``engram_memory_turns_delivered_total``. At the window's end every session's
  ``/memory/sessions/{id}/progress`` is read: the window counts as steady only if all
  sessions still had turns queued (all 100 active), and the report says how many had
  (a claim takes up to ``MEMORY_CLAIM_TURNS``, 300, of a session's turns: ``--turns``
  must stay well above it, or sessions run dry inside the window);
- **time to empty**: seconds from the workers being ready until the queue is empty, and
  the round's turns divided by it (the tail included: the last sessions run alone).

With ``--replica-cpus X`` each worker process runs in its own cgroup with a CPU quota of X
CPUs (``bench/_cgroup.py``), as Container Apps gives each worker replica its own vCPUs;
the report then says "budgeted X CPU per worker" and, with ``--also-unbudgeted``, also
runs the unbudgeted rounds and labels them so. Per round it prints each worker's CPU
(µs per delivered turn, cores used, seconds throttled by its budget), the stand-in's CPU
per turn, and the mean time of one delivery call (a stand-in stretched past its latency
shows there). CPU per turn is robust to neighbours on a shared machine; wall-clock
ratios are not.

The queue is whatever the environment selects: ``MEMORY_QUEUE`` (default ``sqlite``, a
fresh file here) and, for PostgreSQL, its ``MEMORY_POSTGRES_*`` settings are passed to
the service and every worker unchanged (``--local-postgres`` starts a throw-away local
server with ``engram_voice.devpostgres.start_local_postgres`` instead).

    .venv/bin/python bench/bench_workers.py
    .venv/bin/python bench/bench_workers.py --replica-cpus 0.5 --also-unbudgeted
    .venv/bin/python bench/bench_workers.py --local-postgres --replica-cpus 0.5
    .venv/bin/python bench/bench_workers.py --local-postgres --queue-only --rounds 3

``--queue-only`` measures the queue's share alone (``bench/_worker_queue.py``): one
in-process worker drains a filled queue into a sink that answers at once, and each round
prints this process's and PostgreSQL's CPU per delivered turn.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._cgroup import budget_available, cpu_budget, throttled_seconds
from bench._worker_queue import run_queue_only
from tests.support.memory_service import memory_service
from tests.support.servers import ServiceProcess

from engram_voice.credentials.secret import Secret
from engram_voice.memory.tokens import MemoryTokenSigner

_TEXT = "Tell me more about the trip to Lisbon we planned last spring, and the museums."


def _metric(text: str, name: str) -> float:
    """Return the value of an unlabelled sample ``name`` in a Prometheus text page (0 if none)."""
    match = re.search(rf"^{re.escape(name)}\s+([0-9.e+-]+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


class Sample(NamedTuple):
    """One worker's counters and CPU at one moment."""

    delivered: float
    calls: float
    call_seconds: float
    cpu: float


def _cpu_seconds(pid: int) -> float:
    """Return the CPU time (user + system) process ``pid`` used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pid(process: ServiceProcess) -> int:
    return process.process.pid if process.process else 0


def _sample(worker: ServiceProcess) -> Sample:
    """Read the worker's delivery counters from ``/metrics`` and its CPU time."""
    text = httpx.get(f"{worker.base_url}/metrics", timeout=5).text
    return Sample(
        _metric(text, "engram_memory_turns_delivered_total"),
        _metric(text, "engram_memory_delivery_seconds_count"),
        _metric(text, "engram_memory_delivery_seconds_sum"),
        _cpu_seconds(_pid(worker)),
    )


class Bench:
    """The stand-in, the service and the sessions every round shares."""

    def __init__(
        self, args: argparse.Namespace, service: ServiceProcess, zep: ServiceProcess
    ) -> None:
        self.args = args
        self.service = service
        self.zep = zep
        self.signer = MemoryTokenSigner([("bench", Secret(args.secret))])
        self.sessions = [f"vs_{s}" for s in range(args.sessions)]
        self.tokens = [
            self.signer.issue(session_id=sid, user_id=f"user{s}", agent="elena").token
            for s, sid in enumerate(self.sessions)
        ]

    async def fill(self, tag: str, turns: int) -> int:
        """Queue ``turns`` turns per session (``--per-post`` per request); return accepted.

        A 503 (the service opens a PostgreSQL queue in the background after it answers
        ``/healthz``) is tried again, for up to 10 s.
        """
        per_post = self.args.per_post
        posts = [(s, at) for at in range(0, turns, per_post) for s in range(len(self.sessions))]
        limit = asyncio.Semaphore(32)
        accepted = 0
        async with httpx.AsyncClient(base_url=self.service.base_url, timeout=30) as client:

            async def post(s: int, start: int) -> None:
                nonlocal accepted
                ids = range(start, min(turns, start + per_post))
                body = {
                    "session_id": self.sessions[s],
                    "messages": [
                        {"id": f"{tag}_{i}", "role": "user", "text": f"{_TEXT} {i}"} for i in ids
                    ],
                }
                headers = {"Authorization": f"Bearer {self.tokens[s]}"}
                for _ in range(50):  # 503 while the service still opens its queue: 10 s
                    async with limit:
                        answer = await client.post("/memory/enrich", json=body, headers=headers)
                    if answer.status_code != httpx.codes.SERVICE_UNAVAILABLE:
                        break
                    await asyncio.sleep(0.2)
                answer.raise_for_status()
                accepted += answer.json()["accepted"]

            await asyncio.gather(*(post(s, start) for s, start in posts))
        return accepted

    async def active(self) -> int:
        """Return how many sessions still have turns queued (each session's progress read).

        Eight reads at a time; a 503 (the read gave up under load) is tried again, 5 times.
        """
        limit = asyncio.Semaphore(8)
        async with httpx.AsyncClient(base_url=self.service.base_url, timeout=30) as client:

            async def queued(s: int) -> int:
                for _ in range(5):
                    async with limit:
                        answer = await client.get(
                            f"/memory/sessions/{self.sessions[s]}/progress",
                            headers={"Authorization": f"Bearer {self.tokens[s]}"},
                        )
                    if answer.status_code != httpx.codes.SERVICE_UNAVAILABLE:
                        break
                    await asyncio.sleep(0.2)
                answer.raise_for_status()
                count: int = answer.json()["queued"]
                return count

            counts = await asyncio.gather(*(queued(s) for s in range(len(self.sessions))))
        return sum(1 for count in counts if count > 0)

    def depth(self) -> int:
        """Return the queue depth as the service reports it."""
        status: dict[str, Any] = httpx.get(f"{self.service.base_url}/status", timeout=5).json()
        depth: int = status["memory"]["queue"]["depth"] or 0
        return depth


class Round(NamedTuple):
    """One measured round (rates in turns/s, CPU in µs per delivered turn)."""

    steady: float
    active: int
    empty_seconds: float
    ninety_seconds: float
    empty_rate: float
    worker_us: list[float]
    worker_cores: list[float]
    throttled: list[float | None]
    zep_us: float
    postgres_us: float
    call_ms: float


def _empty_within(bench: Bench, timeout: float, queued: int = 0) -> tuple[float, float]:
    """Poll the depth until the queue is empty (bounded); return when it was (perf_counter).

    Also returns when 90 % of ``queued`` had been delivered (the depth first at or under a
    tenth of it): the time between the two is the tail, where sessions run out one by one.
    """
    deadline = time.perf_counter() + timeout
    ninety: float | None = None
    while (depth := bench.depth()) > 0:
        if ninety is None and depth <= queued // 10:
            ninety = time.perf_counter()
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the queue did not empty within {timeout:.0f} s")
        time.sleep(0.05)
    emptied = time.perf_counter()
    return emptied, emptied if ninety is None else ninety


@contextlib.contextmanager
def _budgets(workers: list[ServiceProcess], cpus: float | None) -> Iterator[list[Path | None]]:
    """Put each worker in a cgroup of its own with ``cpus`` CPUs (none when ``cpus`` is None)."""
    with contextlib.ExitStack() as stack:
        groups: list[Path | None] = [
            None if cpus is None else stack.enter_context(cpu_budget(_pid(w), cpus, label="worker"))
            for w in workers
        ]
        yield groups


def _round(bench: Bench, count: int, queued: int, cpus: float | None, log: Path) -> Round:
    """Start ``count`` workers on the queued backlog; measure the steady window and the drain."""
    args = bench.args
    env = {**args.worker_env}
    workers = [
        ServiceProcess(["worker"], env, log_path=log / f"worker{n}.log") for n in range(count)
    ]
    with ThreadPoolExecutor(count) as pool:
        list(pool.map(lambda w: w.start(timeout=60), workers))
    try:
        ready = time.perf_counter()
        with _budgets(workers, cpus) as groups:
            throttled0 = [throttled_seconds(g) for g in groups]
            time.sleep(args.settle)
            first, zep0 = [_sample(w) for w in workers], _cpu_seconds(_pid(bench.zep))
            pg0, started = _tree_cpu(args.postgres_pid), time.perf_counter()
            time.sleep(args.window)
            last, zep1 = [_sample(w) for w in workers], _cpu_seconds(_pid(bench.zep))
            pg1 = _tree_cpu(args.postgres_pid)
            window = time.perf_counter() - started
            throttled1 = [throttled_seconds(g) for g in groups]
            active = asyncio.run(bench.active())
            emptied, ninety = _empty_within(bench, args.drain_timeout, queued)
    finally:
        for worker in workers:
            worker.stop(timeout=30)
    turns = [b.delivered - a.delivered for a, b in zip(first, last, strict=True)]
    calls = sum(b.calls - a.calls for a, b in zip(first, last, strict=True))
    call_s = sum(b.call_seconds - a.call_seconds for a, b in zip(first, last, strict=True))
    cpu = [b.cpu - a.cpu for a, b in zip(first, last, strict=True)]
    total = sum(turns) or 1.0
    return Round(
        steady=sum(turns) / window,
        active=active,
        empty_seconds=emptied - ready,
        ninety_seconds=ninety - ready,
        empty_rate=queued / (emptied - ready),
        worker_us=[c / max(t, 1.0) * 1e6 for c, t in zip(cpu, turns, strict=True)],
        worker_cores=[c / window for c in cpu],
        throttled=[
            None if a is None or b is None else b - a
            for a, b in zip(throttled0, throttled1, strict=True)
        ],
        zep_us=(zep1 - zep0) / total * 1e6,
        postgres_us=(pg1 - pg0) / total * 1e6,
        call_ms=call_s / calls * 1e3 if calls else 0.0,
    )


def _print_round(index: int, count: int, queued: int, result: Round, sessions: int) -> None:
    steady = "steady" if result.active == sessions else "NOT steady (raise --turns)"
    throttled = ", ".join("-" if t is None else f"{t:.1f}" for t in result.throttled)
    print(
        f"  round {index}: {count} worker(s), {queued} queued: steady {result.steady:6.0f} "
        f"turns/s ({result.active}/{sessions} sessions active at the window's end: {steady}); "
        f"empty after {result.empty_seconds:.1f} s = {result.empty_rate:.0f} turns/s "
        f"(90 % after {result.ninety_seconds:.1f} s)\n"
        f"           CPU per turn: workers "
        + ", ".join(f"{us:.0f} µs" for us in result.worker_us)
        + " (cores "
        + ", ".join(f"{c:.2f}" for c in result.worker_cores)
        + f"; throttled s {throttled}), Zep stand-in {result.zep_us:.0f} µs"
        + (f", PostgreSQL {result.postgres_us:.0f} µs" if result.postgres_us else "")
        + "; "
        f"delivery call mean {result.call_ms:.1f} ms"
    )


def _series(bench: Bench, cpus: float | None, log: Path) -> dict[int, list[Round]]:
    """Run ``--rounds`` rounds of one worker and of two; return the rounds by worker count."""
    args = bench.args
    label = "unbudgeted" if cpus is None else f"budgeted {cpus:g} CPU per worker"
    print(f"{label}:")
    rounds: dict[int, list[Round]] = {1: [], 2: []}
    for index in range(2 * args.rounds):
        count = 1 + index % 2
        queued = asyncio.run(bench.fill(f"r{label[0]}{index}", args.turns))
        result = _round(bench, count, queued, cpus, log)
        rounds[count].append(result)
        _print_round(index + 1, count, queued, result, args.sessions)
    one, two = rounds[1], rounds[2]
    steady = max(r.steady for r in two) / max(r.steady for r in one)
    empty = max(r.empty_rate for r in two) / max(r.empty_rate for r in one)
    pairs = ", ".join(f"{b.steady / a.steady:.2f}" for a, b in zip(one, two, strict=True))
    print(
        f"  {label}: two workers / one worker = {steady:.2f} steady (best of each; pairs "
        f"{pairs}), {empty:.2f} by time to empty (goal >= 1.80)"
    )
    return rounds


def _warm_up(bench: Bench, log: Path) -> None:
    """Deliver one turn per session unmeasured, so Zep's users and threads exist."""
    asyncio.run(bench.fill("warm", 1))
    worker = ServiceProcess(["worker"], bench.args.worker_env, log_path=log / "warm.log")
    worker.start(timeout=60)
    try:
        _empty_within(bench, bench.args.drain_timeout)
    finally:
        worker.stop(timeout=30)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--sessions", type=int, default=100, help="active sessions")
    parser.add_argument("--turns", type=int, default=900, help="turns per session per round")
    parser.add_argument("--per-post", type=int, default=10, help="turns per enrich request")
    parser.add_argument("--latency-ms", type=int, default=20, help="Zep stand-in latency")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds before the window")
    parser.add_argument("--window", type=float, default=5.0, help="steady window in seconds")
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="bound on a drain")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each worker count")
    parser.add_argument("--concurrency", type=int, default=4, help="MEMORY_WORKER_CONCURRENCY")
    parser.add_argument("--queue-dir", type=Path, help="directory of the SQLite queue file")
    parser.add_argument("--replica-cpus", type=float, help="CPU budget of each worker process")
    parser.add_argument(
        "--also-unbudgeted", action="store_true", help="with --replica-cpus: unbudgeted too"
    )
    parser.add_argument(
        "--local-postgres", action="store_true", help="queue on a throw-away local PostgreSQL"
    )
    parser.add_argument(
        "--queue-only",
        action="store_true",
        help="the queue path alone: one in-process worker, a sink that answers at once",
    )
    return parser.parse_args()


def _queue_env() -> dict[str, str]:
    """Return the queue selection from this process's environment (children inherit none)."""
    return {
        k: v
        for k, v in os.environ.items()
        if k in {"MEMORY_QUEUE", "MEMORY_SQLITE_SYNCHRONOUS"}
        or k.startswith(("MEMORY_POSTGRES_", "PG"))
    }


@contextlib.contextmanager
def _queue(args: argparse.Namespace, state: Path) -> Iterator[tuple[dict[str, str], int | None]]:
    """Yield the queue settings and the PostgreSQL server's PID when this bench started one."""
    if not args.local_postgres:
        queue_file = {"MEMORY_SQLITE_PATH": str((args.queue_dir or state) / "q.sqlite3")}
        yield {**queue_file, **_queue_env()}, None
        return
    from engram_voice.devpostgres import start_local_postgres  # noqa: PLC0415 - optional

    server = start_local_postgres(database="bench_workers")
    try:
        yield server.env("bench_workers"), server.pid
    finally:
        server.stop()


def _tree_cpu(pid: int | None) -> float:
    """Return the CPU seconds of ``pid`` and its live descendants (PostgreSQL's backends)."""
    if pid is None:
        return 0.0
    total = 0.0
    with contextlib.suppress(OSError):
        total = _cpu_seconds(pid)
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            for child in task.read_text().split():
                total += _tree_cpu(int(child))
    return total


def main() -> None:
    """Run the benchmark and print its report."""
    args = _parse()
    args.secret, zep_key = secrets.token_hex(32), secrets.token_hex(16)
    if args.queue_only and args.replica_cpus is not None:
        print("--queue-only runs in this process: --replica-cpus does not apply", file=sys.stderr)
        raise SystemExit(2)
    if args.replica_cpus is not None and not budget_available():
        print(
            "no writable cgroup hierarchy here: --replica-cpus cannot be applied", file=sys.stderr
        )
        raise SystemExit(2)
    # The stand-in stores on tmpfs: it commits on its event loop, and a disk's fsync there
    # would serialise every worker's calls (the stand-in is the fixture, not what is measured).
    shm = Path("/dev/shm") if Path("/dev/shm").is_dir() else None  # noqa: S108 - tmpfs, private dir
    with (
        tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp,
        tempfile.TemporaryDirectory(prefix="bench-workers-zep-", dir=shm) as zep_tmp,
        _queue(args, Path(tmp)) as (queue, postgres_pid),
    ):
        state = Path(tmp)
        if args.queue_only:
            run_queue_only(args, queue, lambda: _tree_cpu(postgres_pid))
            return
        memory = {
            "MEMORY_TOKEN_KEYS": f"bench:{args.secret}",
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
        args.postgres_pid = postgres_pid
        args.worker_env = {**memory, "ZEP_API_URL": zep.base_url, "ZEP_API_KEY": zep_key}
        print(
            f"queue {queue.get('MEMORY_QUEUE', 'sqlite')}, Zep stand-in {args.latency_ms} ms per "
            f"call, {args.sessions} sessions x {args.turns} turns per round, worker concurrency "
            f"{args.concurrency}, window {args.window:g} s after {args.settle:g} s"
        )
        try:
            bench = Bench(args, service, zep)
            _warm_up(bench, state)
            if args.replica_cpus is not None:
                _series(bench, args.replica_cpus, state)
            if args.replica_cpus is None or args.also_unbudgeted:
                _series(bench, None, state)
        finally:
            service.stop()
            zep.stop()


if __name__ == "__main__":
    main()
