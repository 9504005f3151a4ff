"""Service CPU per captured turn on the ``store`` path: capture pipe in, SQLite queue out.

Runs the service's side of the capture process for real in this process: a
:class:`CaptureProcess` reading frames from a pipe (its ``_handle`` / answer path), the
calls' :class:`RemoteCapture` mirrors bound to a real memory runtime (SQLite queue, WAL,
``MEMORY_WORKER=off``, as ``bench/bench_capture.py`` runs it) and its group-commit writer
thread. A stand-in for the capture child runs on its own thread and event loop and sends
``store`` requests over the pipe exactly as the child does (one request per transcript
turn, one row each; requests within ``FLUSH_SECONDS`` share a frame), then waits for all
replies before the next frame.

For each frame size (store requests per frame: ``1`` is the baseline of one turn per
wake-up, ``--calls / 3 * 0.025 * 2`` is what 500 calls with a turn every 3 s give) it
prints the CPU per captured turn of the service's event-loop thread and of the queue's
writer thread, read from each thread's own CPU clock (``pthread_getcpuclockid``: the
kernel's per-thread accounting that ``/proc/PID/task/TID/stat`` shows, at ns
resolution), so neighbours on a shared machine do not count. The stand-in child's thread
is excluded. Compare two versions by running the same command on each tree
(``PYTHONPATH=<tree>/src``).

    .venv/bin/python bench/bench_store_path.py --turns 3000 --frames 13,40 --repeat 3

At 500 calls with a turn every 3 s (about 333 transcript turns/s) the capture process's
frames carry about 13 ``store`` requests each (25 frames/s). The queue's writer thread
pays mostly per commit (the WAL write and its fsync with ``synchronous=FULL``, the thread
hand-off), so its cost per turn falls with the frame's size; the event-loop thread's
cost per frame is mostly its wake-ups (the frame, the writer's answer, the replies).
Last, it prints the CPU of one lease renewal of ``--calls`` captures awaiting their first
item, against the same marks written one by one.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engram_voice.envreader import EnvReader
from engram_voice.memory import MemorySettings, build_memory_runtime
from engram_voice.realtime.calls import capture_process as cp
from engram_voice.realtime.calls.capture_proxy import RemoteCapture, RemoteSideband
from engram_voice.realtime.calls.capture_wire import Channel, Request

FLUSH_SECONDS = 0.025


def _thread_cpu(ident: int) -> float:
    """Return the CPU seconds the thread ``ident`` used so far (its kernel CPU clock)."""
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


async def _pipe_channel(read_fd: int, write_fd: int, flush_delay: float) -> Channel:
    """Return a :class:`Channel` reading ``read_fd`` and writing ``write_fd`` on this loop."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_fd, "rb", 0)
    )
    transport, protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(write_fd, "wb", 0)
    )
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return Channel(reader, writer, flush_delay=flush_delay)


async def _child(calls: int, frames: list[int], turns: int) -> None:
    """Run the stand-in capture child (its own process): send each phase's store requests.

    Each phase is framed by a ``phase`` request, so the service snapshots its CPU clocks
    exactly around it.
    """
    loop = asyncio.get_running_loop()
    channel = await _pipe_channel(sys.stdin.fileno(), sys.stdout.fileno(), FLUSH_SECONDS)
    reading = loop.create_task(channel.run(lambda _message: None))
    names = [f"rtc_bench_{i}" for i in range(calls)]
    at = dt.datetime.now(dt.UTC).isoformat()
    n = 0
    for phase, per_frame in enumerate(frames):
        count = min(turns, 200) if phase == 0 else turns  # phase 0 warms up
        if per_frame == 1:
            count = min(count, 400)  # the baseline: one frame (25 ms) per turn
        await channel.request("phase", "", ["start", per_frame], within=30.0)
        stored, sent = 0, 0
        while sent < count:
            size = min(per_frame, count - sent)
            requests = []
            for _ in range(size):
                row = [f"item_{n}", "user" if n % 2 == 0 else "assistant", f"turn {n}.", at]
                requests.append(channel.request("store", names[n % calls], [row], within=30.0))
                n += 1
            for accepted, _duplicates in await asyncio.gather(*requests):
                stored += int(accepted)
            sent += size
        await channel.request("phase", "", ["end", per_frame, count, stored], within=30.0)
    channel.close()
    reading.cancel()


async def _writer_ident(runtime: Any) -> int:
    """Return the thread ident of the SQLite queue's writer thread (it runs the writes)."""
    executor = runtime.queue._executor
    return int(await asyncio.get_running_loop().run_in_executor(executor, threading.get_ident))


class _Phases:
    """Snapshots the service's CPU clocks at the child's ``phase`` marks; prints each."""

    def __init__(self, runtime: Any, loop_ident: int, writer_ident: int) -> None:
        self._runtime = runtime
        self._idents = (loop_ident, writer_ident)
        self._before: tuple[float, float, float, float, int] = (0.0, 0.0, 0.0, 0.0, 0)
        self.phases = 0
        self.per_turn: dict[int, list[tuple[float, float, float]]] = {}
        """Per frame size: (loop, writer, process) CPU us per turn of each repetition."""

    def _now(self) -> tuple[float, float, float, float, int]:
        loop, writer = (_thread_cpu(i) for i in self._idents)
        commits = int(self._runtime.queue.commits)
        return loop, writer, time.process_time(), time.perf_counter(), commits

    def mark(self, body: list[Any]) -> None:
        """Start or end a phase (``[start, per_frame]`` / ``[end, per_frame, turns, stored]``)."""
        if body[0] == "start":
            self._before = self._now()
            return
        after = self._now()
        self.phases += 1
        _, per_frame, turns, stored = body
        deltas = (a - b for a, b in zip(after, self._before, strict=True))
        loop, writer, process, wall, commits = deltas
        if self.phases == 1:
            return  # the warm-up
        per = (loop / turns * 1e6, writer / turns * 1e6, process / turns * 1e6)
        self.per_turn.setdefault(per_frame, []).append(per)
        print(
            f"frame {per_frame:>3} store requests: turns {turns} (stored {stored}), "
            f"commits {commits}, wall {wall:.2f} s | CPU per turn: "
            f"event-loop thread {loop / turns * 1e6:.1f} us, "
            f"writer thread {writer / turns * 1e6:.1f} us, "
            f"service process {process / turns * 1e6:.1f} us",
            flush=True,
        )


async def _renewals(runtime: Any, calls: int) -> None:
    """Print the CPU of one lease renewal of ``calls`` captures awaiting their first item.

    The baseline, in the same run: the same marks written one by one (one write each).
    """
    captured = runtime.captured
    for i in range(calls):
        captured.mark(f"vs_wait_{i}", f"u{i}", "elena", captured=True, pending=True)
    await captured.settle(60)
    started = time.process_time()
    await captured.renew()
    together = time.process_time() - started
    started = time.process_time()
    for i in range(calls):
        now = time.time()
        await runtime.queue.mark_capture(
            session_id=f"vs_wait_{i}", user_id=f"u{i}", agent="elena", state="expected",
            now=now, state_until=now + 60,
        )  # fmt: skip
    one_by_one = time.process_time() - started
    print(
        f"lease renewal of {calls} captures awaiting their first item (every 20 s): "
        f"renew() {together * 1000:.1f} ms CPU; the same marks one write each "
        f"{one_by_one * 1000:.1f} ms CPU (service process)"
    )


async def run(turns: int, frames: list[int], calls: int, tmp: Path) -> None:
    """Measure each frame size on one runtime, fed by a stand-in child process."""
    reader = EnvReader({"MEMORY_SQLITE_PATH": str(tmp / "q.db"), "MEMORY_WORKER": "off"})
    runtime = build_memory_runtime(MemorySettings.from_env(reader))
    await runtime.start()
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", "--turns", str(turns), "--calls", str(calls),
        "--frames", ",".join(str(f) for f in [1, *frames]),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=2**26,
    )  # fmt: skip
    assert child.stdout is not None  # noqa: S101 - asked for
    assert child.stdin is not None  # noqa: S101
    process = cp.CaptureProcess(credentials=None)  # type: ignore[arg-type]
    channel = Channel(child.stdout, child.stdin)
    process._channel = channel
    for i in range(calls):
        name = f"rtc_bench_{i}"
        capture = RemoteCapture(process, name, session_id=f"vs_{i}", on_usage=None)
        capture.bind_owner(runtime, session_id=f"vs_{i}", user_id=f"u{i}", agent_id="elena")
        process._calls[name] = cp._Call(capture, RemoteSideband(process, name))
    phases = _Phases(runtime, threading.get_ident(), await _writer_ident(runtime))
    print(
        f"service pid {os.getpid()}, stand-in child pid {child.pid}: {calls} calls, "
        f"{turns} turns per frame size, SQLite synchronous=FULL, MEMORY_WORKER=off",
        flush=True,
    )

    def handle(message: Any) -> None:
        if isinstance(message, Request) and message.op == "phase":
            phases.mark(message.body)
            channel.reply(message, body=True)
            return
        process._handle(message)

    async with asyncio.timeout(1800):
        await channel.run(handle)
        await child.wait()
    print("median over the repetitions, CPU us per captured turn (loop / writer / process):")
    for per_frame, runs in phases.per_turn.items():
        loop, writer, total = (statistics.median(r[i] for r in runs) for i in range(3))
        print(
            f"  frame {per_frame:>3}: event-loop thread {loop:.1f}, writer thread {writer:.1f}, "
            f"service process {total:.1f} ({len(runs)} runs)"
        )
    channel.close()
    await _renewals(runtime, calls)
    await runtime.stop()


def main() -> None:
    """Parse the arguments and run the bench (or, with ``--child``, the stand-in child)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=4000, help="turns per frame size")
    parser.add_argument("--frames", default="1,13,40", help="store requests per frame")
    parser.add_argument("--calls", type=int, default=500, help="calls the turns rotate over")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each frame size")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    frames = [int(f) for f in args.frames.split(",")]
    if not args.child:
        frames = frames * args.repeat  # interleaved: a neighbour's burst hits every size
    if args.child:
        asyncio.run(_child(args.calls, frames, args.turns))
        return
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args.turns, frames, args.calls, Path(tmp)))


if __name__ == "__main__":
    main()
