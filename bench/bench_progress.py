"""Progress benchmark: ``TurnQueue.session_progress`` on a small queue and a deep one.

Two SQLite queue files, written straight with the queue's own schema: **small** holds one
session of ``--turns`` turns; **deep** holds the same session among ``--sessions`` others
with ``--turns`` turns each (1,000,000 turns by default), a third of them delivered and
some dead-lettered. Each run opens the real :class:`SqliteTurnQueue` and reads the
session's progress ``--reads`` times, sequentially. It prints p50/p99 of both and the
deep/small ratio: a read bounded by the session's own turns (an index seek) keeps it
near 1, a scan of the queue would grow it with the depth. Local files only.

    .venv/bin/python bench/bench_progress.py
    .venv/bin/python bench/bench_progress.py --sessions 2000   # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from engram_voice.memory.sqlite_queue import SqliteTurnQueue
from engram_voice.memory.sqlite_schema import SCHEMA

TARGET = "vs_target"


def _fill(path: Path, sessions: int, turns: int) -> None:
    """Write ``sessions`` sessions of ``turns`` turns each (the target session last)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    conn.execute("BEGIN")
    names = [f"vs_{i:07d}" for i in range(sessions - 1)] + [TARGET]
    for name in names:
        conn.execute(
            "INSERT INTO sessions(session_id, user_id, agent, created_at, pending) "
            "VALUES (?, 'u', 'elena', 0, ?)",
            (name, turns),
        )
        conn.executemany(
            "INSERT INTO turns(session_id, message_id, role, text, accepted_at, state) "
            "VALUES (?, ?, 'user', 'some words of a turn', 0, ?)",
            ((name, f"item_{t}", (0, 1, 1, 2)[t % 4] if t % 3 else 0) for t in range(turns)),
        )
    conn.execute("COMMIT")
    conn.close()


async def _measure(path: Path, reads: int) -> list[float]:
    queue = SqliteTurnQueue(path)
    await queue.open()
    try:
        print(f"  {path.stem}: {await queue.session_progress(TARGET)}")
        samples = []
        for _ in range(reads):
            started = time.perf_counter()
            await queue.session_progress(TARGET)
            samples.append((time.perf_counter() - started) * 1000)
        return samples
    finally:
        await queue.close()


def _summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]


def main() -> None:
    """Build both files, read the target session's progress, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--reads", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        small, deep = Path(folder) / "small.sqlite3", Path(folder) / "deep.sqlite3"
        _fill(small, 1, args.turns)
        started = time.perf_counter()
        _fill(deep, args.sessions, args.turns)
        filled = time.perf_counter() - started
        results = {
            name: _summary(asyncio.run(_measure(path, args.reads)))
            for name, path in (("small", small), ("deep", deep))
        }
    print(
        f"deep queue: {args.sessions * args.turns:,} turns in {args.sessions:,} sessions "
        f"(written in {filled:.1f} s); {args.reads} reads of one {args.turns}-turn session"
    )
    for name, (p50, p99) in results.items():
        print(f"  {name:5}  p50 {p50:.3f} ms  p99 {p99:.3f} ms")
    ratio = results["deep"][0] / results["small"][0]
    print(f"  deep/small p50 ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
