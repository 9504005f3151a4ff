"""CPU of the usage meter per ``response.done`` with 500 calls: batched vs one write each.

In one process, a real :class:`UsageMeter` on the SQLite usage store meters ``--calls``
calls that each report a ``response.done`` every ``--interval`` seconds (as the capture
bench's calls do), for ``--seconds``, twice: as the meter runs now (token counts summed
per call and handed to the store once a second), and as it ran before (each response
handed to the store at once: ``flush_tokens`` after every response, the same writes).
Reports CPU per response: the whole process (the loop plus the store's writer thread)
and the event-loop thread alone, and how many writes reached the store. CPU time, so
neighbours on a shared machine do not count.

    .venv/bin/python bench/bench_capture_usage.py --calls 500 --interval 3 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engram_voice.usage import UsageMeter
from engram_voice.usage.sqlite_store import SqliteUsageStore

USAGE = {
    "total_tokens": 115,
    "input_tokens": 70,
    "output_tokens": 45,
    "input_token_details": {"text_tokens": 20, "audio_tokens": 50, "cached_tokens": 8},
    "output_token_details": {"text_tokens": 15, "audio_tokens": 30},
}


async def _run(
    args: argparse.Namespace, *, batched: bool | None, path: Path
) -> tuple[float, float, int]:
    """Meter the responses (None: pace alone); return process and loop CPU s, responses."""
    store = SqliteUsageStore(path)
    meter = UsageMeter(store)
    await meter.start()
    for index in range(args.calls):
        meter.call_started(f"rc_{index}", f"user{index}", "elena", "azure-openai")
    rate = args.calls / args.interval
    total = int(rate * args.seconds)
    loop = asyncio.get_running_loop()
    process, thread, started = time.process_time(), time.thread_time(), loop.time()
    for sent in range(total):
        if batched is not None:
            meter.response_done(f"rc_{sent % args.calls}", USAGE)
        if batched is False:
            meter.flush_tokens()  # the former path: each response handed over at once
        await asyncio.sleep(max(0.0, started + (sent + 1) / rate - loop.time()))
    await asyncio.sleep(1.5)  # the last batch handed over and committed
    await store.flush()
    cpu, loop_cpu = time.process_time() - process, time.thread_time() - thread
    await meter.close()
    return cpu, loop_cpu, total


async def main(args: argparse.Namespace) -> None:
    """Run both ways and print CPU per response, the pacing loop's own CPU subtracted."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory() as tmp:
        idle, idle_loop, _ = await _run(args, batched=None, path=Path(tmp) / "u.db")
    for label, batched in (("batched (now)", True), ("one write per response", False)):
        with tempfile.TemporaryDirectory() as tmp:
            cpu, loop_cpu, total = await _run(args, batched=batched, path=Path(tmp) / "u.db")
        cpu, loop_cpu = cpu - idle, loop_cpu - idle_loop
        print(
            f"{label:<24} {total} responses on {args.calls} calls: process CPU "
            f"{cpu / total * 1e6:.0f} us per response ({cpu / args.seconds * 100:.1f} % of a "
            f"core), event-loop thread {loop_cpu / total * 1e6:.0f} us per response"
        )
    print(f"(the pacing loop alone, subtracted: {idle / args.seconds * 100:.1f} % of a core)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--interval", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    asyncio.run(main(parser.parse_args()))
