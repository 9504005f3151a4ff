"""Retention benchmark on PostgreSQL: the queue's size under steady traffic over time.

A throwaway local PostgreSQL (``engram_voice.devpostgres``, loopback only, removed at the
end) holds the queue. One process enqueues ``--rate`` turns/s across ``--sessions``
sessions, a delivery loop marks what is ready as delivered (a sink that never fails), and
the worker's :class:`~engram_voice.memory.retention.Retention` purges every
``--interval`` seconds with a retention of ``--retain`` seconds, as the worker does.
Every ``--report`` seconds it prints the on-disk size of the queue's tables and indexes
(``pg_total_relation_size``, so dead rows not yet reused count too) and the live rows.
Autovacuum runs with PostgreSQL's defaults. Every loop is bounded in time.

    .venv/bin/python bench/bench_retention_pg.py                  # ~2.5 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_retention import _batch, _deliver_loop

from engram_voice.devpostgres import start_local_postgres
from engram_voice.logs import configure_logging
from engram_voice.memory.postgres_queue import PostgresTurnQueue
from engram_voice.memory.retention import Retention

_SIZE_SQL = (
    "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0), "
    "(SELECT COUNT(*) FROM memory_turns) FROM pg_class c "
    "WHERE c.relkind = 'r' AND c.relname LIKE 'memory%%'"
)


async def _report_loop(conninfo: str, every: float, stop: asyncio.Event) -> list[int]:
    """Print (and return) the queue tables' size every ``every`` seconds until ``stop``."""
    sizes: list[int] = []
    started = time.perf_counter()
    print(f"{'t (s)':>7} {'tables MiB':>11} {'turn rows':>10}")
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        while not stop.is_set():
            row = await (await conn.execute(_SIZE_SQL)).fetchone()
            assert row is not None  # noqa: S101 - an aggregate always returns one row
            size, rows = int(row[0]), int(row[1])
            sizes.append(size)
            print(f"{time.perf_counter() - started:7.0f} {size / 2**20:11.2f} {rows:10d}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await stop.wait()
    return sizes


async def _enqueue_loop(
    queue: PostgresTurnQueue, rate: float, sessions: int, stop: asyncio.Event
) -> None:
    """Enqueue one turn every ``1 / rate`` seconds, round robin over the sessions."""
    index = 0
    next_at = time.perf_counter()
    while not stop.is_set():
        await queue.enqueue(_batch(f"s{index % sessions}", [f"m{index}"]))
        index += 1
        next_at += 1.0 / rate
        delay = next_at - time.perf_counter()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()


async def _run(args: argparse.Namespace) -> None:
    server = start_local_postgres(database="bench_retention")
    try:
        conninfo = server.conninfo("bench_retention")
        queue = PostgresTurnQueue(conninfo)
        await queue.open()
        retention = Retention(queue, retain_seconds=args.retain, interval=args.interval)
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(_enqueue_loop(queue, args.rate, args.sessions, stop)),
            asyncio.create_task(_deliver_loop(queue, stop)),  # type: ignore[arg-type]
        ]
        report = asyncio.create_task(_report_loop(conninfo, args.report, stop))
        deadline = time.perf_counter() + args.seconds
        while time.perf_counter() < deadline:
            retention.start_if_due(time.time())
            await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks)
        sizes = await report
        await retention.stop()
        await queue.close()
        half = sizes[len(sizes) // 2 :]
        print(
            f"\nsecond half of the run ({args.seconds / 2:.0f} s at {args.rate:.0f} turns/s, "
            f"retention {args.retain:.0f} s): tables {half[0] / 2**20:.2f} MiB at its start, "
            f"{half[-1] / 2**20:.2f} MiB at the end, at most {max(half) / 2**20:.2f} MiB"
        )
    finally:
        server.stop()


def main() -> None:
    """Parse the options and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="length of the run")
    parser.add_argument("--rate", type=float, default=200.0, help="turns enqueued per second")
    parser.add_argument("--sessions", type=int, default=100, help="active sessions")
    parser.add_argument("--retain", type=float, default=20.0, help="retention, seconds")
    parser.add_argument("--interval", type=float, default=5.0, help="purge every N seconds")
    parser.add_argument("--report", type=float, default=15.0, help="print every N seconds")
    configure_logging(level="WARNING", json=False)
    asyncio.run(_run(parser.parse_args()))


if __name__ == "__main__":
    main()
