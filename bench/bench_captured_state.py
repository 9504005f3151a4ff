"""What the shared captured-session record costs a browser's post, per backend.

In one process, a real memory runtime (no sink, no worker) on SQLite, then on a local
PostgreSQL (``engram_voice.devpostgres``, skipped with ``--sqlite-only``), answers
``accept_browser`` for three kinds of session:

- ``browser``: minted for the browser alone, never marked; after its first post this
  replica answers from its cache (no read). Compared with ``accept`` alone (the enrich
  path before the record existed) on the same sessions.
- ``captured``: marked captured, the server stored the turns; every post is one read
  (state plus which posted ids are stored), nothing written.
- ``first``: a browser session's first post (one read that finds no record, then the
  enqueue).
- ``expect_capture``: the record a call set-up writes before its memory token (one
  durable write, awaited by ``POST /realtime/calls``).

Reports CPU time per post of this process (``time.process_time``: neighbours on a shared
machine do not count; PostgreSQL's own backend CPU is not included; the median of
``--rounds`` interleaved rounds) and wall p50/p99, and the nanoseconds the cached answer
itself adds to a browser session's post.

    .venv/bin/python bench/bench_captured_state.py --posts 2000
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engram_voice.credentials.secret import Secret
from engram_voice.devpostgres import start_local_postgres
from engram_voice.envreader import EnvReader
from engram_voice.memory import MemoryRuntime, MemorySettings, build_memory_runtime
from engram_voice.memory.schemas import EnrichMessage
from engram_voice.memory.tokens import MemoryClaims

KEYS = [("k1", Secret("b" * 64))]


def _settings(env: dict[str, str]) -> MemorySettings:
    reader = EnvReader({"MEMORY_WORKER": "off", "MEMORY_RATE_PER_MINUTE": "1000000", **env})
    settings = MemorySettings.from_env(reader)
    reader.raise_if_invalid()
    return settings


def _claims(runtime: MemoryRuntime, session: str) -> MemoryClaims:
    return runtime.verify(runtime.grant(session, "alice", "elena")["token"])


Post = Callable[[int], Awaitable[object]]


async def _rounds(kinds: dict[str, Post], posts: int, rounds: int) -> None:
    """Run each kind's posts in ``rounds`` interleaved rounds; print per-post medians.

    Interleaving spreads a neighbour's burst over every kind instead of one.
    """
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    per_round = max(1, posts // rounds)
    done = dict.fromkeys(kinds, 0)
    for _ in range(rounds):
        for kind, one in kinds.items():
            started_cpu = time.process_time()
            for _ in range(per_round):
                started = time.perf_counter()
                await one(done[kind])
                walls[kind].append(time.perf_counter() - started)
                done[kind] += 1
            cpu[kind].append((time.process_time() - started_cpu) / per_round)
    for kind in kinds:
        ordered = sorted(walls[kind])
        print(
            f"  {kind:<30} CPU {statistics.median(cpu[kind]) * 1e6:7.1f} µs/post "
            f"(rounds {min(cpu[kind]) * 1e6:.0f}-{max(cpu[kind]) * 1e6:.0f})   "
            f"wall p50 {statistics.median(ordered) * 1e3:6.2f} ms  "
            f"p99 {ordered[int(len(ordered) * 0.99) - 1] * 1e3:6.2f} ms"
        )


def _fast_path_ns(runtime: MemoryRuntime, session: str, repeat: int = 200_000) -> float:
    """Return the ns the cached answer adds to a post (``known_browser``), timed in a loop."""
    check = runtime.captured.known_browser
    started = time.process_time()
    for _ in range(repeat):
        check(session)
    return (time.process_time() - started) / repeat * 1e9


async def _run(name: str, env: dict[str, str], posts: int, rounds: int) -> None:
    runtime = build_memory_runtime(_settings(env), token_keys=KEYS)
    await runtime.start()
    print(f"{name}:")
    try:
        sessions = 50
        browser = [_claims(runtime, f"vs_b{s}") for s in range(sessions)]
        first = [_claims(runtime, f"vs_f{n}") for n in range(posts)]
        captured = _claims(runtime, "vs_cap")
        runtime.mark_captured("vs_cap", captured=True, user_id="alice", agent="elena")
        await runtime.captured.settle(10)
        heard = [EnrichMessage(id=f"item_{i}", role="user", text="said") for i in range(4)]
        await runtime.accept_captured("vs_cap", "alice", "elena", heard)
        for claims in browser:  # warm: each browser session's one read
            await runtime.accept_browser(claims, [EnrichMessage(id="w", role="user", text="x")])
        posted = [*heard[:2], EnrichMessage(id="item_forged", role="user", text="x")]

        def msg(tag: str, n: int) -> list[EnrichMessage]:
            return [EnrichMessage(id=f"{tag}{n}", role="user", text="hello")]

        await _rounds(
            {
                "accept (no record, before)": lambda n: runtime.accept(
                    browser[n % sessions], msg("a", n)
                ),
                "accept_browser: browser": lambda n: runtime.accept_browser(
                    browser[n % sessions], msg("b", n)
                ),
                "accept_browser: first post": lambda n: runtime.accept_browser(
                    first[n], msg("f", n)
                ),
                "accept_browser: captured": lambda _: runtime.accept_browser(captured, posted),
                "expect_capture (call set-up)": lambda n: runtime.expect_capture(
                    f"vs_call{n}", "alice", "elena", window=21.0
                ),
            },
            posts,
            rounds,
        )
        print(f"  cached answer (known_browser): {_fast_path_ns(runtime, 'vs_b0'):.0f} ns/post")
    finally:
        await runtime.stop()


async def _main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        await _run(
            "sqlite", {"MEMORY_SQLITE_PATH": str(Path(tmp) / "q.sqlite3")}, args.posts, args.rounds
        )
        if args.sqlite_only:
            return
        server = start_local_postgres(database="bench_captured")
        try:
            await _run(
                "postgres",
                server.env("bench_captured", MEMORY_SQLITE_PATH=str(Path(tmp) / "unused.sqlite3")),
                args.posts,
                args.rounds,
            )
        finally:
            server.stop()


def main() -> None:
    """Parse arguments and run the measurement."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=2000, help="posts per measured kind")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
