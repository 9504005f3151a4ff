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
from engram_voice.realtime.calls import capture_proxy
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
