"""``bench_workers.py --queue-only``: the worker's queue path alone, CPU per delivered turn.

One process fills the queue (``--sessions`` x ``--turns`` turns, ``--per-post`` per
enqueue), then a real :class:`~engram_voice.memory.worker.DeliveryWorker` drains it into a
sink that answers at once, in this process: claims, lease checks, ``mark_delivered`` and
``release`` are all that is left of a delivery, so the figures are the queue's own. Per
round it prints the turns delivered, this process's CPU per turn (``time.process_time``,
the drain only) and PostgreSQL's (its processes together, when this bench started the
server). CPU per turn is robust to neighbours; the turns per second printed beside it
are not. The queue is built by the service's own factory from the environment.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from engram_voice.envreader import EnvReader
from engram_voice.memory.backends import build_queue
from engram_voice.memory.circuit import CircuitBreaker
from engram_voice.memory.delivery import Deliverer, InlineRetryPolicy
from engram_voice.memory.queue import EnqueueBatch, TurnQueue
from engram_voice.memory.settings import MemorySettings
from engram_voice.memory.sink import Keepalive, SinkMessage, SinkSession
from engram_voice.memory.worker import DeliveryWorker, WorkerOptions

__all__ = ["run_queue_only"]

_TEXT = "Tell me more about the trip to Lisbon we planned last spring, and the museums."


class _AtOnceSink:
    """A sink that takes every batch at once (the queue is what is measured)."""

    kind = "at-once"
    batch_limit = 30
    max_chars = 4096

    async def deliver(
        self, session: SinkSession, messages: Sequence[SinkMessage], keepalive: Keepalive
    ) -> int:
        """Take the batch; nothing was there already."""
        del session, messages, keepalive
        return 0

    def describe(self) -> dict[str, Any]:
        """Describe the sink."""
        return {"kind": self.kind}

    async def aclose(self) -> None:
        """Nothing to close."""


async def _fill(queue: TurnQueue, tag: str, sessions: int, turns: int, per_post: int) -> None:
    """Queue ``turns`` turns in each of ``sessions`` sessions, 32 enqueues at a time."""
    limit = asyncio.Semaphore(32)

    async def post(s: int, start: int) -> None:
        ids = range(start, min(turns, start + per_post))
        batch = EnqueueBatch(
            session_id=f"vs_{s}",
            user_id=f"user{s}",
            agent="elena",
            turns=[(f"{tag}_{i}", "user", f"{_TEXT} {i}", None) for i in ids],
        )
        async with limit:
            await queue.enqueue(batch)

    await asyncio.gather(
        *(post(s, start) for start in range(0, turns, per_post) for s in range(sessions))
    )


async def _round(
    settings: MemorySettings, tag: str, args: Any, pg_cpu: Callable[[], float]
) -> tuple[int, float, float, float]:
    """Fill, then drain with one worker; return turns, seconds, this and PostgreSQL's CPU."""
    filler = build_queue(settings)
    await filler.open()
    try:
        await _fill(filler, tag, args.sessions, args.turns, args.per_post)
    finally:
        await filler.close()
    queue = build_queue(settings)
    await queue.open()
    try:
        options = WorkerOptions(concurrency=args.concurrency, lease_seconds=15.0)
        worker = DeliveryWorker(
            queue,
            Deliverer(_AtOnceSink(), InlineRetryPolicy()),
            CircuitBreaker(failures=5, cooldown=30.0),
            options,
        )
        cpu0, pg0, wall0 = time.process_time(), pg_cpu(), time.perf_counter()
        report = await worker.drain()
        cpu1, pg1, wall1 = time.process_time(), pg_cpu(), time.perf_counter()
        await worker.retention.stop()
    finally:
        await queue.close()
    return report.delivered, wall1 - wall0, cpu1 - cpu0, pg1 - pg0


def run_queue_only(args: Any, env: Mapping[str, str], pg_cpu: Callable[[], float]) -> None:
    """Run ``--rounds`` rounds of fill-then-drain and print CPU per delivered turn."""
    reader = EnvReader({**env, "MEMORY_TOKEN_KEYS": f"bench:{args.secret}"})
    settings = MemorySettings.from_env(reader)
    if reader.problems:
        raise SystemExit("; ".join(reader.problems))
    print(
        f"queue-only: queue {env.get('MEMORY_QUEUE', 'sqlite')}, one in-process worker "
        f"(concurrency {args.concurrency}) and a sink that answers at once, "
        f"{args.sessions} sessions x {args.turns} turns per round"
    )
    for index in range(args.rounds):
        turns, wall, cpu, pg = asyncio.run(_round(settings, f"q{index}", args, pg_cpu))
        per = max(turns, 1)
        print(
            f"  round {index + 1}: {turns} turns in {wall:.1f} s ({turns / wall:.0f} turns/s, "
            f"wall clock: noise on a shared machine); CPU per turn: worker process "
            f"{cpu / per * 1e6:.1f} µs" + (f", PostgreSQL {pg / per * 1e6:.1f} µs" if pg else "")
        )
