"""How many whole calls the PostgreSQL usage store's buffer holds while the database is away.

Feeds the real :class:`~engram_voice.usage.pending.PendingWrites` (10,000 entries, as the
store builds it) whole calls — a start, ``N`` token writes, an end — until a write is
dropped, for several ``N`` (the meter hands a call's tokens over at most once a second,
so ``N`` is about the call's seconds with speech, e.g. 60 for a 3-minute call answering
every 3 s). Prints the calls held with merging (a call's waiting token counts share one
entry) beside the arithmetic without it (``10,000 // (N + 2)``), and the process CPU of
one ``record`` of a token write with 500 live calls. No database is needed: this is the
buffer alone, as it is while PostgreSQL does not answer.

    .venv/bin/python bench/bench_usage_buffer.py
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engram_voice.usage.buffered import WriteCounts
from engram_voice.usage.pending import PendingWrites
from engram_voice.usage.records import CallEnded, CallStarted, TokensUsed

CAPACITY = 10_000
"""The store's buffer (``PostgresUsageStore(max_pending=…)``'s default)."""
DAY = "2027-01-01"
TOKENS = {"input_audio": 50, "output_audio": 30, "input_text": 5, "output_text": 3}


def calls_held(token_writes: int) -> int:
    """Return the whole calls the buffer took before its first dropped write."""
    counts = WriteCounts()
    pending = PendingWrites(CAPACITY, counts)
    calls = 0
    while True:
        call = f"c{calls}"
        pending.put(CallStarted(call, "u", "elena", "azure-openai", DAY, 1.0))
        for _ in range(token_writes):
            pending.put(TokensUsed(call, "u", DAY, TOKENS))
        pending.put(CallEnded(call, "u", DAY, 60.0, "client_hangup", 2.0))
        if counts.dropped:
            return calls
        calls += 1


def cpu_per_record(writes: int = 200_000, live_calls: int = 500) -> float:
    """Return process CPU microseconds per ``put`` of a token write (merged)."""
    pending = PendingWrites(CAPACITY, WriteCounts())
    batch = [TokensUsed(f"c{n % live_calls}", "u", DAY, TOKENS) for n in range(writes)]
    started = time.process_time()
    for write in batch:
        pending.put(write)
    return (time.process_time() - started) / writes * 1e6


def main() -> None:
    """Print the report."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    print(f"buffer: {CAPACITY} entries; whole calls held before the first dropped write")
    print("token writes/call  merged  without merging (arithmetic)")
    for token_writes in (1, 20, 60, 200):
        print(
            f"{token_writes:17d}  {calls_held(token_writes):6d}  {CAPACITY // (token_writes + 2)}"
        )
    print(f"record() of a token write, 500 live calls: {cpu_per_record():.2f} us process CPU")


if __name__ == "__main__":
    main()
