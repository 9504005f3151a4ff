"""What the LISTEN/NOTIFY wake-up costs the PostgreSQL queue, and why NOTIFY is not in the commit.

Starts a throwaway PostgreSQL server (``fsync=on``), then:

1. **Commits per second of three concurrent writers**, each transaction one insert, with
   and without a ``NOTIFY`` inside it. PostgreSQL serialises the commits of transactions
   that notify (one lock, held through the WAL flush), so this is the price a NOTIFY in
   the writers' transactions would pay.
2. **The queue as built** (``PostgresTurnQueue``, 64 concurrent one-turn enqueues), with
   its after-commit notifier on and off: this process's CPU per enqueue, group commits
   and notifications sent. Wall-clock rates are printed but are noise on a shared
   machine; compare the CPU figures.

Usage::

    .venv/bin/python bench/bench_pg_notify.py [--rounds 3] [--requests 6000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.postgres import start_postgres

from engram_voice.memory.postgres_queue import PostgresTurnQueue
from engram_voice.memory.queue import EnqueueBatch


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _commits_per_second(conninfo: str, *, notify: bool, writers: int = 3) -> float:
    """Run ``writers`` connections committing one-insert transactions; return commits/s."""
    each = 300
    conns = [
        await psycopg.AsyncConnection.connect(conninfo, autocommit=True) for _ in range(writers)
    ]

    async def write(conn: psycopg.AsyncConnection[tuple[object, ...]], k: int) -> None:
        for i in range(each):
            async with conn.transaction():
                await conn.execute("INSERT INTO t VALUES (%s)", (k * each + i,))
                if notify:
                    await conn.execute("NOTIFY engram_bench")

    started = time.perf_counter()
    await asyncio.gather(*(write(c, k) for k, c in enumerate(conns)))
    elapsed = time.perf_counter() - started
    for conn in conns:
        await conn.close()
    return writers * each / elapsed


async def _queue_round(conninfo: str, *, notify: bool, requests: int) -> str:
    queue = PostgresTurnQueue(conninfo, pool_size=10)
    await queue.open()
    if not notify:
        queue.notifier.committed = lambda: None  # type: ignore[method-assign]
    gate = asyncio.Semaphore(64)
    tag = time.time_ns()

    async def one(k: int) -> None:
        async with gate:
            turn = (f"m{k}-{tag}", "user", "hello", None)
            await queue.enqueue(
                EnqueueBatch(session_id=f"s{k % 500}", user_id="u", agent="a", turns=[turn])
            )

    cpu, started = _cpu(), time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(requests)))
    elapsed, cpu = time.perf_counter() - started, _cpu() - cpu
    await asyncio.sleep(0.2)  # the last notification
    sent, commits = queue.notifier.sent, queue.commits
    await queue.close()
    return (
        f"notify {'on ' if notify else 'off'}: {cpu / requests * 1e6:5.1f} us CPU/enqueue "
        f"(this process), {commits} commits, {sent} notifications, "
        f"{requests / elapsed:6.0f} enqueues/s wall (noise)"
    )


async def main(rounds: int, requests: int) -> None:
    """Start a server, run both measurements ``rounds`` times, print them."""
    server = start_postgres(fsync=True)
    try:
        database = server.new_database("notify")
        conninfo = server.conninfo(database)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
        print("1. three writers, one insert per transaction, fsync=on:")
        for n in range(rounds):
            plain = await _commits_per_second(conninfo, notify=False)
            notifying = await _commits_per_second(conninfo, notify=True)
            print(f"   round {n}: {plain:5.0f} commits/s; with NOTIFY inside {notifying:5.0f}")
        print(f"2. the queue, 64 callers, {requests} one-turn enqueues:")
        for n in range(rounds):
            for notify in (False, True):
                line = await _queue_round(conninfo, notify=notify, requests=requests)
                print(f"   round {n}: {line}")
    finally:
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=6000)
    args = parser.parse_args()
    asyncio.run(main(args.rounds, args.requests))
