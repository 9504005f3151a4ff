"""The service answers a frame's ``store`` requests together: one task, one queue write.

A real :class:`CaptureProcess` (no child started: a recording stand-in takes its replies)
hands its reader's messages to ``_handle`` as the pipe would, with the calls' mirrors bound
to a real memory runtime on a SQLite file.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest

from engram_voice.envreader import EnvReader
from engram_voice.memory import MemoryRuntime, MemorySettings, build_memory_runtime
from engram_voice.memory.schemas import EnrichMessage
from engram_voice.realtime.calls import capture_process as cp
from engram_voice.realtime.calls.capture_proxy import RemoteCapture, RemoteSideband
from engram_voice.realtime.calls.capture_wire import Channel, Reply, Request
from tests.support.memory import FakeSink
from tests.support.polling import async_poll_until

AT = "2026-11-30T07:00:00+00:00"


def _turn(item_id: str) -> EnrichMessage:
    return EnrichMessage(id=item_id, role="user", text=item_id)


class RecordingChannel:
    """Stands in for the pipe: keeps what the service sends (replies, binds)."""

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.closed = False

    def send(self, message: Any) -> None:
        """Keep ``message``."""
        self.sent.append(message)

    def reply(self, request: Request, *, ok: bool = True, body: Any = None) -> None:
        """Keep the reply to ``request``."""
        self.sent.append(Reply(id=request.id, ok=ok, body=body))

    def replies(self) -> dict[int, Reply]:
        """Return the replies sent so far, by request id."""
        return {m.id: m for m in self.sent if isinstance(m, Reply)}


@pytest.fixture(name="runtime")
async def fixture_runtime(tmp_path: Path) -> AsyncIterator[MemoryRuntime]:
    """Yield a started memory runtime on a SQLite file, no worker."""
    reader = EnvReader({"MEMORY_SQLITE_PATH": str(tmp_path / "q.db"), "MEMORY_WORKER": "off"})
    runtime = build_memory_runtime(
        MemorySettings.from_env(reader), sink=FakeSink(), run_worker=False
    )
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


def _process(sink: Any, calls: int) -> tuple[cp.CaptureProcess, RecordingChannel]:
    """Return a capture process whose pipe is a recorder, holding ``calls`` bound calls."""
    process = cp.CaptureProcess(credentials=cast("Any", None))
    channel = RecordingChannel()
    process._channel = cast("Channel", channel)
    for i in range(calls):
        name = f"rtc_{i}"
        capture = RemoteCapture(process, name, session_id=f"vs_{i}", on_usage=None)
        capture.bind_owner(sink, session_id=f"vs_{i}", user_id=f"u{i}", agent_id="elena")
        process._calls[name] = cp._Call(capture, RemoteSideband(process, name))
    return process, channel


def _commits(runtime: MemoryRuntime) -> int:
    return int(cast("Any", runtime.queue).commits)


def _store(request_id: int, call: str, *item_ids: str) -> Request:
    rows = [
        [i, "user" if n % 2 == 0 else "assistant", f"text {i}", AT] for n, i in enumerate(item_ids)
    ]
    return Request(id=request_id, op="store", call=call, body=rows)


@pytest.mark.parametrize("seed", range(6))
async def test_a_frame_of_store_requests_is_answered_per_request_with_one_task(
    runtime: MemoryRuntime, seed: int
) -> None:
    """Each store request of a frame gets its own answer; a bad one fails alone; one task."""
    rng = random.Random(seed)
    # vs_5 belongs to someone else already: its requests must fail, the others not.
    await runtime.accept_captured("vs_5", "mallory", "elena", [_turn("z")])
    process, channel = _process(runtime, calls=6)
    expected: dict[int, Any] = {}
    stored: set[tuple[str, str]] = set()
    frame = []
    for n in range(rng.randint(3, 25)):
        kind = rng.choice(["good", "good", "good", "dup", "foreign", "unknown", "malformed"])
        call = f"rtc_{rng.randint(0, 4)}"
        if kind in {"good", "dup"}:
            item = f"m{rng.randint(0, 3)}" if kind == "dup" else f"i{n}"
            key = (call, item)
            expected[n] = [0, 1] if key in stored else [1, 0]
            stored.add(key)
            frame.append(_store(n, call, item))
        elif kind == "foreign":
            expected[n] = "ForbiddenError"
            frame.append(_store(n, "rtc_5", f"f{n}"))
        elif kind == "unknown":
            expected[n] = "LookupError"
            frame.append(_store(n, "rtc_gone", f"u{n}"))
        else:
            expected[n] = "ValueError"
            frame.append(Request(id=n, op="store", call=call, body=[["only", "two"]]))
    commits, tasks = _commits(runtime), len(process._tasks)
    for request in frame:
        process._handle(request)
    assert len(process._tasks) - tasks <= 1
    await async_poll_until(lambda: len(channel.replies()) == len(frame), what="every reply")
    replies = channel.replies()
    for n, want in expected.items():
        reply = replies[n]
        if isinstance(want, str):
            assert (reply.ok, reply.body) == (False, want)
        else:
            assert (reply.ok, reply.body) == (True, want)
    assert _commits(runtime) - commits <= 1
    assert (await runtime.queue.stats()).depth == len(stored) + 1


async def test_a_storage_failure_fails_every_request_of_the_frame(runtime: MemoryRuntime) -> None:
    """When the queue cannot take the frame, every one of its requests is answered a failure."""
    process, channel = _process(runtime, calls=3)
    await runtime.queue.close()
    for n in range(3):
        process._handle(_store(n, f"rtc_{n}", f"i{n}"))
    await async_poll_until(lambda: len(channel.replies()) == 3, what="every reply")
    assert {(r.ok, r.body) for r in channel.replies().values()} == {
        (False, "StorageUnavailableError")
    }


class PerTurnSink:
    """A capture sink with only ``accept_captured`` (no batch method): asked per request."""

    def __init__(self) -> None:
        self.stored: list[tuple[str, list[str]]] = []

    async def accept_captured(
        self, session_id: str, user_id: str, agent: str, messages: Sequence[Any]
    ) -> Any:
        """Record the turns; answer like the queue."""
        del user_id, agent
        self.stored.append((session_id, [m.id for m in messages]))
        await asyncio.sleep(0)
        return type("Result", (), {"accepted": len(messages), "duplicates": 0})()


async def test_a_sink_without_a_batch_method_is_asked_per_request() -> None:
    """A sink that stores one call's turns at a time still gets every request, each answered."""
    sink = PerTurnSink()
    process, channel = _process(sink, calls=4)
    for n in range(4):
        process._handle(_store(n, f"rtc_{n}", f"i{n}", f"j{n}"))
    await async_poll_until(lambda: len(channel.replies()) == 4, what="every reply")
    assert {(r.ok, tuple(r.body)) for r in channel.replies().values()} == {(True, (2, 0))}
    assert sorted(sink.stored) == [(f"vs_{n}", [f"i{n}", f"j{n}"]) for n in range(4)]
