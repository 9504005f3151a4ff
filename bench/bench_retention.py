"""Retention benchmark: a long steady run with a short retention, on the real SQLite queue.

One process holds the queue (WAL, group commit, ``synchronous=FULL``) as the service with
its in-process worker does: open-loop enqueues at ``--rate`` turns/s across
``--sessions`` active sessions, a delivery loop that marks what is ready as delivered,
and the worker's :class:`~engram_voice.memory.retention.Retention` purging every
``--interval`` seconds with a retention of ``--retain`` seconds. The file starts with
``--preload`` delivered turns that are already past the retention, so the first purge
has a large backlog to remove while writes go on.

It prints, once per ``--report`` seconds, the file size, its free pages, the WAL size and
the rows, then the enqueue latency (from each request's scheduled start, so stalls are
not hidden) split by whether a purge was running at the time, in the same run; and the
longest enqueue wait during the first (backlog) purge. ``--unbatched`` also times the
previous version's one-statement purge of the same backlog with the same load, for
comparison. Loopback only, no network; every loop is bounded in count and time.

    .venv/bin/python bench/bench_retention.py                      # ~2 minutes
    .venv/bin/python bench/bench_retention.py --seconds 600 --retain 60 --interval 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._load import client_gc_paused, percentile

from engram_voice.logs import configure_logging
from engram_voice.memory.queue import EnqueueBatch
from engram_voice.memory.retention import Retention
from engram_voice.memory.sqlite_queue import SqliteTurnQueue

_TEXT = "Tell me more about the trip to Lisbon we planned last spring, and the museums. " * 2
_PRELOAD_SESSION_TURNS = 100


class Windows:
    """Time windows (perf_counter) during which a purge ran."""

    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []
        self._open: float | None = None

    def begin(self) -> None:
        """Mark the start of a purge."""
        self._open = time.perf_counter()

    def end(self) -> None:
        """Mark the end of the purge that began last."""
        if self._open is not None:
            self.spans.append((self._open, time.perf_counter()))
            self._open = None

    def overlaps(self, start: float, end: float) -> bool:
        """Return True when [start, end] overlaps a purge (one still running counts)."""
        if self._open is not None and end >= self._open:
            return True
        return any(s <= end and start <= e for s, e in self.spans)


def _batch(session: str, ids: list[str]) -> EnqueueBatch:
    return EnqueueBatch(
        session_id=session,
        user_id=f"user-{session}",
        agent="elena",
        turns=[(i, "user", _TEXT, None) for i in ids],
    )


async def _preload(queue: SqliteTurnQueue, turns: int, *, delivered_at: float) -> None:
    """Store ``turns`` turns and mark them delivered at ``delivered_at`` (past the retention)."""
    sessions = max(1, turns // _PRELOAD_SESSION_TURNS)
    for n in range(sessions):
        ids = [f"old{n}_{i}" for i in range(_PRELOAD_SESSION_TURNS)]
        await queue.enqueue(_batch(f"vs_old{n}", ids))
    while claims := await queue.claim(
        owner="preload", sessions=64, turns=10_000, lease_seconds=600, now=time.time()
    ):
        for claim in claims:
            seqs = [t.seq for t in claim.turns]
            await queue.mark_delivered(
                owner="preload", session_id=claim.session_id, seqs=seqs, now=delivered_at
            )
            await queue.release(owner="preload", session_id=claim.session_id)


async def _deliver_loop(queue: SqliteTurnQueue, stop: asyncio.Event) -> None:
    """Mark everything ready as delivered, five times a second (a sink that never fails)."""
    while not stop.is_set():
        claims = await queue.claim(
            owner="bench", sessions=64, turns=300, lease_seconds=30, now=time.time()
        )
        for claim in claims:
            seqs = [t.seq for t in claim.turns]
            await queue.mark_delivered(
                owner="bench", session_id=claim.session_id, seqs=seqs, now=time.time()
            )
            await queue.release(owner="bench", session_id=claim.session_id)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.2):
                await stop.wait()


def _sizes(path: Path) -> tuple[int, int, int, int]:
    """Return (file bytes, free pages, WAL bytes, turn rows) of the queue file."""
    wal = path.with_name(path.name + "-wal")
    with contextlib.closing(sqlite3.connect(path, timeout=5)) as conn:
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        rows = conn.execute("SELECT COUNT(*) FROM turns").fetchone()[0]
    return path.stat().st_size, free, wal.stat().st_size if wal.exists() else 0, rows


async def _report_loop(path: Path, every: float, stop: asyncio.Event, started: float) -> None:
    print(f"{'t (s)':>7} {'file MiB':>9} {'free pages':>10} {'WAL MiB':>8} {'turn rows':>10}")
    while not stop.is_set():
        size, free, wal, rows = await asyncio.to_thread(_sizes, path)
        print(
            f"{time.perf_counter() - started:7.0f} {size / 2**20:9.2f} {free:10d} "
            f"{wal / 2**20:8.2f} {rows:10d}"
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(every):
                await stop.wait()


async def _load(
    queue: SqliteTurnQueue, *, rate: float, seconds: float, sessions: int, prefix: str
) -> list[tuple[float, float]]:
    """Enqueue one turn per request at ``rate``/s; return (scheduled, done) per request."""
    results: list[tuple[float, float]] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(index: int, scheduled: float) -> None:
        await queue.enqueue(_batch(f"vs_{prefix}{index % sessions}", [f"{prefix}{index}"]))
        results.append((scheduled, time.perf_counter()))

    total = int(rate * seconds)
    start = time.perf_counter() + 0.05
    for index in range(total):
        scheduled = start + index / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(index, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    async with asyncio.timeout(60):
        await asyncio.gather(*tasks)
    return results


def _summary(name: str, latencies: list[float]) -> str:
    if not latencies:
        return f"  {name:28s} no requests"
    return (
        f"  {name:28s} n={len(latencies):6d}  p50 {percentile(latencies, 50):6.2f} ms  "
        f"p99 {percentile(latencies, 99):6.2f} ms  max {max(latencies):7.2f} ms"
    )


def _timed(
    windows: Windows, purge: Callable[[], Awaitable[object]]
) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        windows.begin()
        try:
            await purge()
        finally:
            windows.end()

    return run


async def _steady(args: argparse.Namespace, path: Path) -> None:
    queue = SqliteTurnQueue(path)
    await queue.open()
    try:
        print(f"preloading {args.preload} delivered turns past the retention ...")
        await _preload(queue, args.preload, delivered_at=time.time() - 10 * args.retain)
        retention = Retention(queue, retain_seconds=args.retain, batch=args.batch)
        windows = Windows()
        stop = asyncio.Event()
        started = time.perf_counter()

        async def purge_loop() -> None:
            run = _timed(windows, retention.purge)
            while not stop.is_set():
                await run()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(args.interval):
                        await stop.wait()

        helpers = [
            asyncio.create_task(_deliver_loop(queue, stop)),
            asyncio.create_task(_report_loop(path, args.report, stop, started)),
            asyncio.create_task(purge_loop()),
        ]
        with client_gc_paused():
            results = await _load(
                queue, rate=args.rate, seconds=args.seconds, sessions=args.sessions, prefix="s"
            )
        stop.set()
        await asyncio.gather(*helpers)
        size, free, wal, rows = await asyncio.to_thread(_sizes, path)
        print(
            f"end: file {size / 2**20:.2f} MiB, {free} free pages, "
            f"WAL {wal / 2**20:.2f} MiB, {rows} turn rows"
        )
        during = [(e - s) * 1000 for s, e in results if windows.overlaps(s, e)]
        outside = [(e - s) * 1000 for s, e in results if not windows.overlaps(s, e)]
        first = windows.spans[0] if windows.spans else (0.0, 0.0)
        backlog = [(e - s) * 1000 for s, e in results if s <= first[1] and first[0] <= e]
        print(f"enqueue latency at {args.rate:.0f} turns/s over {args.seconds:.0f} s (same run):")
        print(_summary("with a purge running", during))
        print(_summary("without a purge running", outside))
        print(
            f"  first purge ({args.preload} backlog rows) took {first[1] - first[0]:.2f} s in "
            f"steps of {args.batch}; longest enqueue wait meanwhile "
            f"{max(backlog, default=0.0):.2f} ms"
        )
        print(f"  purges: {len(windows.spans)}, last: {retention.last}")
    finally:
        await queue.close()


async def _unbatched(args: argparse.Namespace, path: Path) -> None:
    """Time the previous one-statement purge of the same backlog under the same load."""
    queue = SqliteTurnQueue(path)
    await queue.open()
    try:
        await _preload(queue, args.preload, delivered_at=time.time() - 10 * args.retain)
        windows = Windows()
        older_than = time.time() - args.retain

        def delete_all(conn: sqlite3.Connection) -> int:
            with conn:
                return conn.execute(
                    "DELETE FROM turns WHERE state=1 AND delivered_at < ?", (older_than,)
                ).rowcount

        async def purge() -> None:
            await asyncio.sleep(0.5)
            await _timed(windows, lambda: queue._run(delete_all))()

        task = asyncio.create_task(purge())
        with client_gc_paused():
            results = await _load(
                queue, rate=args.rate, seconds=3.0, sessions=args.sessions, prefix="u"
            )
        await task
        span = windows.spans[0]
        during = [(e - s) * 1000 for s, e in results if windows.overlaps(s, e)]
        print(f"previous version, one DELETE of {args.preload} rows: {span[1] - span[0]:.2f} s")
        print(_summary("enqueue while it ran", during))
    finally:
        await queue.close()


def main() -> None:
    """Run the benchmark and print its report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rate", type=float, default=200.0, help="enqueued turns per second")
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--sessions", type=int, default=100, help="active sessions")
    parser.add_argument("--retain", type=float, default=10.0, help="retention in seconds")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between purges")
    parser.add_argument("--batch", type=int, default=1000, help="rows per purge step")
    parser.add_argument("--preload", type=int, default=200_000, help="expired rows at start")
    parser.add_argument("--report", type=float, default=10.0, help="seconds between size lines")
    parser.add_argument("--unbatched", action="store_true", help="also time the old purge")
    args = parser.parse_args()
    configure_logging(level="WARNING", json=True)
    with tempfile.TemporaryDirectory(prefix="bench-retention-") as tmp:
        asyncio.run(_steady(args, Path(tmp) / "queue.sqlite3"))
        if args.unbatched:
            asyncio.run(_unbatched(args, Path(tmp) / "unbatched.sqlite3"))


if __name__ == "__main__":
    main()
