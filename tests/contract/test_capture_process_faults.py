"""The capture process's own faults: what calls see when it dies, stalls or misbehaves.

The contract suite (``test_capture_hosts.py``) holds both capture hosts to the same
behaviour; these cases break the process host in ways the in-process one cannot break
(the process killed or stopped mid-hang-up, signals meant for the service, stray writes
on its stdout) and check that no turn is lost: turns it could not store are the
browser's to post, and a sideband it still holds keeps capturing.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engram_voice.memory import MemoryRuntime
from engram_voice.realtime.calls import capture_process, capture_proxy
from engram_voice.realtime.calls.azure_openai import AzureOpenAICall
from tests.support.capture_hosts import (
    Host,
    RotatingKeys,
    Upstream,
    bound,
    item_added,
    memory_runtime,
    post_turn,
    process_pid,
    said,
    serve_upstream,
    stall_until_lost,
    stored_turns,
)
from tests.support.polling import async_poll_until


@pytest.fixture(name="upstream")
async def fixture_upstream() -> AsyncIterator[Upstream]:
    """Serve the loopback upstream on 127.0.0.1."""
    async with serve_upstream() as upstream:
        yield upstream


@pytest.fixture(name="runtime")
async def fixture_runtime(tmp_path: Path) -> AsyncIterator[MemoryRuntime]:
    """Yield a started memory runtime on a SQLite file."""
    async with memory_runtime(tmp_path) as runtime:
        yield runtime


@pytest.fixture(name="host")
async def fixture_host() -> AsyncIterator[Host]:
    """Yield the capture-process host."""
    host = Host("process", RotatingKeys())
    try:
        yield host
    finally:
        await host.close()


@pytest.mark.parametrize("fate", ["killed", "stalled"])
async def test_a_capture_process_lost_during_the_hang_up_hands_held_turns_to_the_browser(
    host: Host,
    upstream: Upstream,
    runtime: MemoryRuntime,
    monkeypatch: pytest.MonkeyPatch,
    fate: str,
) -> None:
    """Turns it still held when it died (or stopped answering) mid-close are the browser's."""
    monkeypatch.setattr(capture_proxy, "CLOSE_SECONDS", 0.5)  # the stalled close times out
    call = await _held_behind(host, upstream, runtime)
    pid = process_pid(host)
    os.kill(pid, signal.SIGSTOP)
    try:
        hangup = asyncio.create_task(call.hangup("client_hangup"))
        await asyncio.wait_for(upstream.hung_up.wait(), timeout=15)
        if fate == "killed":
            os.kill(pid, signal.SIGKILL)
        await asyncio.wait_for(hangup, timeout=20)
    finally:
        if fate == "stalled":
            os.kill(pid, signal.SIGCONT)
    assert await post_turn(runtime, "item_b") == (1, 0)  # not refused as unheard


@pytest.mark.parametrize(
    "signals", [[signal.SIGINT], [signal.SIGTERM], [signal.SIGINT, signal.SIGTERM]]
)
async def test_signals_meant_for_the_service_leave_the_capture_process_to_drain_its_calls(
    host: Host, upstream: Upstream, runtime: MemoryRuntime, signals: list[signal.Signals]
) -> None:
    """Ctrl-C or a stop signalled to the whole group: the calls' hang-ups still store turns.

    The capture process shares the service's process group, so a terminal's Ctrl-C (or a
    supervisor signalling the group) reaches it too; it must keep its sidebands until the
    service, draining its calls, closes the pipe.
    """
    call = await _held_behind(host, upstream, runtime)
    pid = process_pid(host)
    for signum in signals:
        os.kill(pid, signum)
    await upstream.send(said("item_a", "user", "Question?"))  # still read, still stored
    stored = await stored_turns(runtime, 2)
    assert stored == [("item_a", "user", "Question?"), ("item_b", "assistant", "Answer.")]
    await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)
    assert host.process is not None
    assert host.process.describe()["exits"] == 0
    assert process_pid(host) == pid


async def _held_behind(host: Host, upstream: Upstream, runtime: MemoryRuntime) -> AzureOpenAICall:
    """Open a captured call whose second turn is complete but held behind the first."""
    call = await host.open(upstream.url)
    await bound(runtime, call)
    await upstream.send(
        item_added("item_a", None, "user"),
        item_added("item_b", "item_a", "assistant"),
        said("item_b", "assistant", "Answer."),  # held until item_a's transcript
    )
    await async_poll_until(
        lambda: call.capture is not None and call.capture.began is True,
        timeout=15,
        what="began",
    )
    return call


_NOISY_CHILD = """
import os, sys
from engram_voice.realtime.calls import capture_child

hold = capture_child.CaptureChild._hold

def noisy(self, message):
    {write}
    hold(self, message)

capture_child.CaptureChild._hold = noisy
sys.exit(capture_child.main(sys.argv[1:]))
"""


@pytest.mark.parametrize(
    "write",
    [
        "print('holding', message.call, flush=True)",
        "sys.stdout.write('x' * 5000); sys.stdout.flush()",
        "sys.stdout.buffer.write(bytes(range(256))); sys.stdout.flush()",
        "os.write(1, b'raw write on fd 1')",
    ],
)
async def test_a_stray_write_on_the_capture_process_stdout_does_not_break_the_wire(
    host: Host, upstream: Upstream, runtime: MemoryRuntime, write: str
) -> None:
    """Whatever code in the capture process writes to stdout, its calls are still captured."""
    assert host.process is not None
    argv = host.process._argv  # the same child, with a noisy hold
    module = argv.index("-m")
    argv[module : module + 2] = ["-c", _NOISY_CHILD.format(write=write)]
    call = await host.open(upstream.url)
    await bound(runtime, call)
    await upstream.send(item_added("item_a", None, "user"), said("item_a", "user", "Hi."))
    assert await stored_turns(runtime, 1) == [("item_a", "user", "Hi.")]
    await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)
    assert host.process.describe()["exits"] == 0


async def test_a_stalled_capture_process_is_killed_its_calls_fall_back_and_it_is_restarted(
    upstream: Upstream, runtime: MemoryRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped (SIGSTOP) past the stall bound: killed, its sessions the browser's, restarted."""
    monkeypatch.setattr(capture_process, "STALL_SECONDS", 5.0, raising=False)
    host = Host("process", RotatingKeys())
    try:
        call = await _held_behind(host, upstream, runtime)
        pid = await stall_until_lost(host, call)
        assert await post_turn(runtime, "item_b") == (1, 0)
        await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)
        assert host.process is not None
        assert host.process.describe()["exits"] == 1

        again = await host.open(upstream.url)
        assert again.sideband is not None
        await async_poll_until(again.sideband.connected.is_set, timeout=15, what="again up")
        assert process_pid(host) != pid
        await asyncio.wait_for(again.hangup("client_hangup"), timeout=20)
    finally:
        await host.close()
