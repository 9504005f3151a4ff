"""Both capture hosts (the service's own loop, the capture process) capture a call alike.

Each case joins a call's sideband on a loopback upstream through
``AzureOpenAICalls.hold_sideband``, drives the upstream's side of the socket (events,
drops, refusals, the hang-up) and checks what the call's owner sees: the turns stored in
a SQLite memory runtime, the session's capture record, usage, the call's end, the
credential re-read, ``session.update``. The process host must behave exactly as the
in-process one; its own failure (the capture process killed) is tested at the end, and
its other faults in ``test_capture_process_faults.py``.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from engram_voice.memory import MemoryRuntime
from engram_voice.realtime.calls.capture_proxy import RemoteSideband
from engram_voice.realtime.endpoints import Endpoint
from tests.support.capture_hosts import (
    CALL,
    SESSION,
    Host,
    RotatingKeys,
    Upstream,
    bound,
    item_added,
    memory_runtime,
    post_turn,
    said,
    serve_upstream,
    stored_turns,
    usage_done,
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


@pytest.fixture(name="host", params=["inprocess", "process"])
async def fixture_host(request: pytest.FixtureRequest) -> AsyncIterator[Host]:
    """Yield each capture host in turn."""
    host = Host(request.param, RotatingKeys())
    try:
        yield host
    finally:
        await host.close()


async def test_heard_turns_are_stored_once_in_conversation_order_and_usage_is_reported(
    host: Host, upstream: Upstream, runtime: MemoryRuntime
) -> None:
    """Turns are stored in item order (a late user transcript included), usage under rc_."""
    call = await host.open(upstream.url)
    await bound(runtime, call)
    await upstream.send(
        item_added("item_a", None, "user"),
        item_added("item_b", "item_a", "assistant"),
        said("item_b", "assistant", "Hello Alice."),
        usage_done(10),
        said("item_a", "user", "Hi there."),
        said("item_a", "user", "Hi there."),  # a repeat changes nothing
    )
    assert await stored_turns(runtime, 2) == [
        ("item_a", "user", "Hi there."),
        ("item_b", "assistant", "Hello Alice."),
    ]
    await async_poll_until(lambda: bool(host.usage), timeout=15, what="usage")
    assert host.usage[0][0] == "rc_host"
    assert host.usage[0][1]["total_tokens"] == 10
    assert await post_turn(runtime, "item_forged") == (0, 1)  # captured: nothing unheard
    await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)
    assert await call.wait_closed() == "client_hangup"
    assert upstream.hung_up.is_set()


async def test_a_refused_key_is_re_read_once_and_the_new_one_opens_the_sideband(
    host: Host, upstream: Upstream, runtime: MemoryRuntime
) -> None:
    """A 401 on the upgrade makes the service's credential source move to the rotated key."""
    call = await host.open(upstream.url)
    await bound(runtime, call)
    assert host.credentials.invalidated == 1
    assert upstream.refused_keys == 1
    await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)


async def test_session_update_reaches_the_upstream_over_the_sideband(
    host: Host, upstream: Upstream, runtime: MemoryRuntime
) -> None:
    """``update_instructions`` sends one ``session.update`` with the new instructions."""
    call = await host.open(upstream.url)
    await bound(runtime, call)
    assert await call.update_instructions("Remember: Alice likes tea.")
    await async_poll_until(lambda: bool(upstream.received), timeout=15, what="update")
    assert upstream.received[0]["type"] == "session.update"
    assert upstream.received[0]["session"]["instructions"] == "Remember: Alice likes tea."
    await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)
    assert not await call.update_instructions("too late")


@pytest.mark.parametrize(("reopen", "ends"), [(404, "upstream_closed"), (500, None)])
async def test_a_dropped_sideband_reopens_once_then_ends_the_call_or_hands_over(
    host: Host, upstream: Upstream, runtime: MemoryRuntime, reopen: int, ends: str | None
) -> None:
    """404 on reopening means the call is over upstream; any other refusal loses capture."""
    call = await host.open(upstream.url)
    await bound(runtime, call)
    await upstream.send(item_added("item_a", None, "user"))
    await async_poll_until(
        lambda: call.capture is not None and call.capture.began is True, timeout=15, what="began"
    )
    upstream.status = reopen
    await upstream.drop()
    sideband = call.sideband
    assert sideband is not None
    target = "call_over" if ends else "lost"
    await async_poll_until(lambda: sideband.state == target, timeout=15, what=target)
    if ends:
        assert await asyncio.wait_for(call.wait_closed(), timeout=5) == ends
    else:
        assert await post_turn(runtime, "item_browser") == (1, 0)  # the browser is the source
    await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)


async def test_a_first_item_after_unheard_ones_hands_the_session_to_the_browser(
    host: Host, upstream: Upstream, runtime: MemoryRuntime
) -> None:
    """An item whose previous item the sideband never saw: turns were said before it."""
    call = await host.open(upstream.url)
    await bound(runtime, call)
    await upstream.send(item_added("item_late", "item_unheard", "user"))
    await async_poll_until(
        lambda: call.capture is not None and call.capture.began is False, timeout=15, what="late"
    )
    assert await post_turn(runtime, "item_browser") == (1, 0)
    await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)


async def test_turns_held_at_the_hang_up_are_stored_before_it_returns(
    host: Host, upstream: Upstream, runtime: MemoryRuntime
) -> None:
    """A turn whose transcript is complete but held behind an earlier one is stored at close."""
    call = await host.open(upstream.url)
    await bound(runtime, call)
    await upstream.send(
        item_added("item_a", None, "user"),
        item_added("item_b", "item_a", "assistant"),
        said("item_b", "assistant", "Answer."),
    )
    await asyncio.sleep(0)
    await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)
    stored = await stored_turns(runtime, 1)
    assert ("item_b", "assistant", "Answer.") in stored


async def test_a_killed_capture_process_loses_its_sidebands_and_is_started_again(
    upstream: Upstream, runtime: MemoryRuntime
) -> None:
    """Its calls fall back to the browser; a new capture process takes the next call."""
    host = Host("process", RotatingKeys())
    try:
        call = await host.open(upstream.url)
        await bound(runtime, call)
        await upstream.send(item_added("item_a", None, "user"))
        await async_poll_until(
            lambda: call.capture is not None and call.capture.began is True,
            timeout=15,
            what="began",
        )
        assert host.process is not None
        pid = host.process.describe()["pid"]
        assert isinstance(pid, int)
        os.kill(pid, signal.SIGKILL)
        sideband = call.sideband
        assert sideband is not None
        await async_poll_until(lambda: sideband.state == "lost", timeout=15, what="lost")
        assert await post_turn(runtime, "item_browser") == (1, 0)
        await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)
        assert host.process.describe()["exits"] == 1

        again = await host.open(upstream.url)
        assert again.sideband is not None
        await async_poll_until(again.sideband.connected.is_set, timeout=15, what="again up")
        assert host.process.describe()["starts"] == 2
        await asyncio.wait_for(again.hangup("client_hangup"), timeout=20)
    finally:
        await host.close()


async def test_a_call_set_up_before_the_capture_process_is_ready_is_captured_in_process(
    upstream: Upstream, runtime: MemoryRuntime
) -> None:
    """The first call starts the capture process and is captured on the service's loop."""
    host = Host("process", RotatingKeys())
    try:
        capture, sideband = await host.calls.hold_sideband(Endpoint(upstream.url), CALL, SESSION)
        assert not isinstance(sideband, RemoteSideband)
        assert host.process is not None
        assert host.process.describe()["starts"] == 1
        await sideband.close()
        await capture.close()
        assert await host.process.start(wait=30)
        assert host.process.describe()["ready"] is True
    finally:
        await host.close()


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_the_capture_counters_reach_the_services_metrics(
    host: Host, upstream: Upstream, runtime: MemoryRuntime
) -> None:
    """Turns stored and the sideband's connect are counted on the service's /metrics."""
    stored = (
        "engram_realtime_captured_turns_total",
        {"upstream": "azure-openai", "outcome": "stored"},
    )
    connected = ("engram_realtime_sideband_total", {"event": "connected"})
    before = _sample(stored[0], **stored[1]), _sample(connected[0], **connected[1])
    call = await host.open(upstream.url)
    await bound(runtime, call)
    await upstream.send(
        item_added("item_a", None, "user"),
        said("item_a", "user", "Hi."),
        item_added("item_b", "item_a", "assistant"),
        said("item_b", "assistant", "Hello."),
    )
    await stored_turns(runtime, 2)

    def counted() -> tuple[float, float]:
        return (
            _sample(stored[0], **stored[1]) - before[0],
            _sample(connected[0], **connected[1]) - before[1],
        )

    await async_poll_until(lambda: counted() == (2.0, 1.0), timeout=15, what="counters")
    await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)
