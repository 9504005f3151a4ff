"""CPU the service spends per captured turn: sideband JSON in, durable SQLite queue out.

In one process, builds the events of ``--turns`` conversation turns with the emulator's
own event factory (every event the sideband carries for a turn, as JSON text), then feeds
them to a :class:`TurnCapture` exactly as the sideband reader does (``decode_event``
with ``CAPTURED_EVENTS``, then ``feed``), storing through a real memory runtime (SQLite
queue, no sink). Reports the CPU time per turn (process time, so neighbours on a shared
machine do not count), and that of the former reader (``json.loads`` of every message)
on the same events. The goal is at most 2 ms per turn.

    .venv/bin/python bench/bench_capture_cpu.py --turns 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engram_voice.emulator.events import EventFactory, new_id
from engram_voice.envreader import EnvReader
from engram_voice.memory import MemorySettings, build_memory_runtime
from engram_voice.realtime.calls.capture import CAPTURED_EVENTS, TurnCapture
from engram_voice.realtime.calls.sideband import decode_event


def _turn_events(events: EventFactory, previous: str | None, n: int) -> tuple[list[str], str]:
    """Return one turn's sideband messages (JSON) and the id of its last item."""
    user, answer, response = new_id("item"), new_id("item"), new_id("resp")
    text = f"This is the assistant's answer number {n}, a sentence of ordinary length."
    done = EventFactory.assistant_item(answer, text)
    sent = [
        events.speech_started(user, 0),
        events.speech_stopped(user, 1500),
        events.committed(user, previous),
        events.item_added(EventFactory.user_item(user), previous),
        events.item_done(EventFactory.user_item(user), previous),
        events.response_created(response, "marin"),
        events.item_added(EventFactory.assistant_item(answer), user),
        *(events.transcript_delta(response, answer, w + " ") for w in text.split(" ")[:5]),
        events.transcription_completed(user, f"This is what the user said in turn {n}."),
        events.transcript_done(response, answer, text),
        events.item_done(done, user),
        events.response_done(response, "marin", done),
    ]
    return [json.dumps(e) for e in sent if e is not None], answer


def _sideband(raw: str) -> dict[str, Any] | None:
    return decode_event(raw, CAPTURED_EVENTS)


def _former(raw: str) -> dict[str, Any] | None:
    event = json.loads(raw)
    return event if isinstance(event, dict) else None


async def _capture_cpu(
    messages: list[list[str]], decode: Callable[[str], dict[str, Any] | None], tmp: Path
) -> tuple[float, dict[str, int], int]:
    """Feed every message through ``decode`` into a capture; return CPU s, outcomes, depth."""
    reader = EnvReader({"MEMORY_SQLITE_PATH": str(tmp / "q.db"), "MEMORY_WORKER": "off"})
    runtime = build_memory_runtime(MemorySettings.from_env(reader))
    await runtime.start()
    capture = TurnCapture(upstream="bench", call_id="rtc_bench", session_id="vs_bench")
    capture.bind(lambda m: runtime.accept_captured("vs_bench", "user", "elena", m))
    started = time.process_time()
    for batch in messages:
        for raw in batch:
            event = decode(raw)
            if event is not None:
                capture.feed(event)
        await asyncio.sleep(0.002)  # turns are seconds apart in a call; the writer keeps up
    await capture.close()
    cpu = time.process_time() - started
    stats = await runtime.queue.stats()
    await runtime.stop()
    return cpu, capture.counts, stats.depth


async def main(turns: int) -> None:
    """Run the benchmark and print its report."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    events, previous, messages = EventFactory("conv_1"), None, []
    for n in range(turns):
        batch, previous = _turn_events(events, previous, n)
        messages.append(batch)
    stored = 2 * turns
    for label, decode in (("sideband (decode_event)", _sideband), ("former (json.loads)", _former)):
        with tempfile.TemporaryDirectory() as tmp:
            cpu, counts, depth = await _capture_cpu(messages, decode, Path(tmp))
        print(
            f"{label:<24} turns (user+assistant) {stored}, queued {depth}, outcomes {counts}: "
            f"CPU per captured turn {cpu / stored * 1000:.3f} ms (goal <= 2 ms)"
        )
    print(f"sideband messages per conversation turn: {len(messages[0])}")
    raw = [m for batch in messages for m in batch]
    for label, decode in (("decode_event", _sideband), ("json.loads", _former)):
        started = time.process_time()
        for message in raw:
            decode(message)
        per = (time.process_time() - started) / len(raw) * 1e6
        print(f"decoding alone, {label:<13} {per:.2f} us per message")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=2000)
    asyncio.run(main(parser.parse_args().turns))
