"""``engram-voice serve`` with two probes, for the capture bench: event-loop lag and GC pauses.

    python -m bench._probe <report.jsonl> serve
    python -m bench._probe <report.jsonl> emulator

Runs the service (or the emulator) exactly as ``python -m engram_voice serve`` does, plus:

- a task on the service's event loop that sleeps :data:`TICK_S` at a time and records how
  late each wake-up was (the lag every request on the loop waits out at that moment);
- a ``gc.callbacks`` hook timing each collection by generation.

With ``BENCH_GC_FREEZE_EVERY=<seconds>`` (the capture bench's ``--fair-upstream``, for the
emulator only) the process also freezes everything alive at that interval: the collector
then never rescans the held calls (a full pass over 500 calls' objects took 100+ ms of
the stand-in's loop), at the price of never freeing a reference cycle made before the
last freeze (a few MB over a bench run).

``SIGUSR1`` appends a census of the tracked objects by type (it walks them all: a
stall of a few ms, so only on demand, never each second). Every second one JSON line
goes to the report: wall time, the lag percentiles of that
second (libuv's timers have 1 ms steps, so lags below ~1 ms are noise), and per GC
generation ``[collections, total ms, longest ms, longest
CPU ms]`` (wall time includes being preempted; CPU time does not). The bench reads each
phase's lines.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import engram_voice.app
import engram_voice.emulator.app
from engram_voice.cli import main

__all__ = ["TICK_S"]

TICK_S = 0.005
_gc_started: list[tuple[float, float]] = []
_gc_pauses: list[tuple[int, float, float]] = []


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    # Wall time counts a collection that was preempted by another process; CPU time not.
    if phase == "start":
        _gc_started.append((time.perf_counter(), time.thread_time()))
    elif _gc_started:
        wall, cpu = _gc_started.pop()
        generation = int(info["generation"])
        _gc_pauses.append((generation, time.perf_counter() - wall, time.thread_time() - cpu))


async def _lag_probe(report: Path) -> None:
    lags: list[float] = []
    second = time.time() // 1
    with report.open("a") as out:
        while True:
            due = time.perf_counter() + TICK_S
            await asyncio.sleep(TICK_S)
            lags.append(max(0.0, time.perf_counter() - due) * 1000)
            now = time.time()
            if now // 1 == second:
                continue
            lags.sort()
            collections: dict[int, list[float]] = {}
            for generation, wall, cpu in _gc_pauses:
                count, total, longest, longest_cpu = collections.get(generation, [0, 0, 0, 0])
                collections[generation] = [
                    count + 1,
                    total + wall * 1000,
                    max(longest, wall * 1000),
                    max(longest_cpu, cpu * 1000),
                ]
            _gc_pauses.clear()
            line = {
                "t": second,
                "ticks": len(lags),
                "lag_p50_ms": lags[len(lags) // 2],
                "lag_p99_ms": lags[min(len(lags) - 1, int(len(lags) * 0.99))],
                "lag_max_ms": lags[-1],
                "gc": {g: [round(v, 3) for v in c] for g, c in sorted(collections.items())},
            }
            out.write(json.dumps(line) + "\n")
            out.flush()
            lags.clear()
            second = now // 1


async def _freeze_every(seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        gc.freeze()


def _census(report: Path) -> None:
    """Append the 40 commonest types among the tracked objects (on SIGUSR1)."""
    counts = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    with report.open("a") as out:
        census = {"t": time.time(), "tracked": counts.total(), "census": counts.most_common(40)}
        out.write(json.dumps(census) + "\n")


def _probed_app_factory(report: Path, build: Any) -> Any:
    tasks: set[asyncio.Task[None]] = set()

    def create(*args: Any, **kwargs: Any) -> Any:
        app = build(*args, **kwargs)

        def start() -> None:
            loop = asyncio.get_running_loop()
            tasks.add(loop.create_task(_lag_probe(report)))
            if every := os.environ.get("BENCH_GC_FREEZE_EVERY"):
                tasks.add(loop.create_task(_freeze_every(float(every))))
            loop.add_signal_handler(signal.SIGUSR1, _census, report)

        app.on_startup.append(start)
        return app

    return create


if __name__ == "__main__":
    _report = Path(sys.argv[1])
    gc.callbacks.append(_on_gc)
    engram_voice.app.create_app_from_env = _probed_app_factory(
        _report, engram_voice.app.create_app_from_env
    )
    engram_voice.emulator.app.create_emulator_app = _probed_app_factory(
        _report, engram_voice.emulator.app.create_emulator_app
    )
    raise SystemExit(main(sys.argv[2:]))
