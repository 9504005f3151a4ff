"""Compare psycopg 3 (+ psycopg-pool) and asyncpg on the queue's enqueue shape.

Starts a throwaway PostgreSQL server (tests/support/postgres.py), then for each driver
runs N concurrent "requests", each one transaction inserting a few turns with
``ON CONFLICT DO NOTHING`` and bumping a per-session counter, through a pool of 8.
Prints transactions per second and p50/p99 latency. Usage:

    .venv/bin/python bench/bench_pg_drivers.py [--requests 4000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import psycopg
from psycopg_pool import AsyncConnectionPool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.postgres import start_postgres

SCHEMA = """
CREATE TABLE s (id text PRIMARY KEY, pending int NOT NULL DEFAULT 0);
CREATE TABLE t (seq bigserial PRIMARY KEY, sid text NOT NULL, mid text NOT NULL, body text,
                UNIQUE (sid, mid));
"""
INSERT_S = "INSERT INTO s(id) VALUES ($1) ON CONFLICT DO NOTHING"
INSERT_T = (
    "INSERT INTO t(sid, mid, body) SELECT $1, m, $3 FROM unnest($2::text[]) m "
    "ON CONFLICT DO NOTHING"
)
BUMP = "UPDATE s SET pending = pending + 3 WHERE id = $1"


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


async def _drive(
    name: str, one: Callable[[int], Awaitable[None]], requests: int, concurrency: int
) -> None:
    latencies: list[float] = []
    counter = iter(range(requests))

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    print(
        f"{name:10s} {requests / elapsed:8.0f} tx/s  p50 {statistics.median(latencies) * 1000:6.2f}"
        f" ms  p99 {_pct(latencies, 0.99):6.2f} ms"
    )


async def _psycopg(conninfo: str, requests: int, concurrency: int) -> None:
    sql_s, bump = (q.replace("$1", "%(s)s") for q in (INSERT_S, BUMP))
    sql_t = INSERT_T.replace("$1", "%(s)s").replace("$2", "%(m)s").replace("$3", "%(b)s")
    async with AsyncConnectionPool(conninfo, min_size=8, max_size=8, open=False) as pool:
        await pool.open(wait=True)

        async def one(i: int) -> None:
            sid = f"s{i % 500}"
            async with pool.connection() as conn, conn.transaction():
                await conn.execute(sql_s, {"s": sid})
                await conn.execute(sql_t, {"s": sid, "m": [f"{i}a", f"{i}b"], "b": "x" * 200})
                await conn.execute(bump, {"s": sid})

        await _drive("psycopg", one, requests, concurrency)


async def _asyncpg(dsn: dict[str, object], requests: int, concurrency: int) -> None:
    pool = await asyncpg.create_pool(min_size=8, max_size=8, **dsn)  # type: ignore[arg-type]

    async def one(i: int) -> None:
        sid = f"a{i % 500}"
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute(INSERT_S, sid)
            await conn.execute(INSERT_T, sid, [f"{i}a", f"{i}b"], "x" * 200)
            await conn.execute(BUMP, sid)

    await _drive("asyncpg", one, requests, concurrency)
    await pool.close()


def main() -> None:
    """Run both drivers against one fresh server and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    server = start_postgres()
    try:
        database = server.new_database("drivers")
        with psycopg.connect(server.conninfo(database), autocommit=True) as conn:
            conn.execute(SCHEMA)
        dsn = {
            "host": server.host,
            "port": server.port,
            "user": server.user,
            "password": server.password,
            "database": database,
            "ssl": False,
        }
        for _ in range(2):  # the second round runs on a warm server
            asyncio.run(_psycopg(server.conninfo(database), args.requests, args.concurrency))
            asyncio.run(_asyncpg(dsn, args.requests, args.concurrency))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
