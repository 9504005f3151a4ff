"""A captured session whose server-side record has a gap hands the session to the browser.

For a captured session the browser's posts store nothing: turns the server did not store
are ``not_heard`` and the page does not post them again. So whenever the server is known
not to hold a turn that was said (its sideband dropped and was reopening; a heard turn
could not be stored: the store failed, the writer's queue was full, the hang-up cut the
writer short), the browser must be the source again, or a real turn is lost for good.
A call the upstream ended (the drop was its end) stays captured for good. Turns said
before the sideband first came up were heard by no one here either: the session is
captured only once the sideband's first item shows it heard the conversation begin.

The runtimes run on a SQLite file; the sideband talks to a loopback aiohttp server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from engram_voice.credentials import Secret, StaticKeySource
from engram_voice.errors import CapturePendingError
from engram_voice.memory import MemoryClaims, MemoryRuntime, build_memory_runtime
from engram_voice.memory.captured import LEASE_SECONDS, CaptureAuthority
from engram_voice.memory.schemas import EnrichMessage
from engram_voice.memory.sqlite_queue import SqliteTurnQueue
from engram_voice.realtime.calls import capture as capture_module
from engram_voice.realtime.calls.azure_openai import AzureOpenAICall
from engram_voice.realtime.calls.capture import TurnCapture
from engram_voice.realtime.calls.sideband import Sideband
from engram_voice.realtime.endpoints import Endpoint
from tests.support.clock import FakeClock
from tests.support.memory import FakeSink
from tests.support.polling import async_poll_until
from tests.support.servers import free_port
from tests.unit.test_memory_worker import KEYS, _settings

SESSION = "vs_gap"


def _claims() -> MemoryClaims:
    return MemoryClaims(
        session_id=SESSION, user_id="alice", agent="elena", expires_at=0, key_id="test"
    )


def _turn(item_id: str) -> EnrichMessage:
    return EnrichMessage(id=item_id, role="user", text=f"said {item_id}")


def _item(
    item_id: str, previous: str | None, *, kind: str = "message", role: str = "assistant"
) -> dict[str, Any]:
    """Return a sideband ``conversation.item.added`` event (a message of ``role``, or ``kind``)."""
    item: dict[str, Any] = {"id": item_id, "type": kind}
    if kind == "message":
        item["role"] = role
    return {"type": "conversation.item.added", "item": item, "previous_item_id": previous}


async def _capture_up(
    runtime: MemoryRuntime, call: AzureOpenAICall, *, window: float = 60.0
) -> Sideband:
    """Expect capture at set-up, bind the call to ``runtime`` and wait for its sideband."""
    assert await runtime.expect_capture(SESSION, "alice", "elena", window=window)
    call.bind_owner(runtime, session_id=SESSION, user_id="alice", agent_id="elena")
    sideband = call.sideband
    assert sideband is not None
    await async_poll_until(sideband.connected.is_set, timeout=10, what="sideband up")
    return sideband


async def _post(runtime: MemoryRuntime, item_id: str) -> tuple[int, int]:
    """Post one turn as the browser would; return (accepted, not heard)."""
    await runtime.captured.settle(5)  # the marks made so far are stored
    result, not_heard = await runtime.accept_browser(_claims(), [_turn(item_id)])
    return result.accepted, not_heard


class Upstream:
    """A loopback sideband: the first socket closes on ``drop``; later upgrades as told."""

    def __init__(self) -> None:
        self.drop = asyncio.Event()
        self.reopen = asyncio.Event()
        self.reopen_status = 101
        self.first = asyncio.Event()
        self.first.set()
        self.upgrades = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Upgrade (the first time at once, then once ``reopen`` is set)."""
        self.upgrades += 1
        first = self.upgrades == 1
        await self.first.wait()
        if not first:
            await self.reopen.wait()
            if self.reopen_status != 101:
                return web.Response(status=self.reopen_status)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if first:
            await self.drop.wait()
            await ws.close()
            return ws
        async for _ in ws:
            pass
        return ws


class Owner:
    """The parts of AzureOpenAICalls a call uses."""

    sideband_timeout = 30.0

    async def post_hangup(self, endpoint: Endpoint, call_id: str) -> None:
        """Pretend Azure ended the call."""


@pytest.fixture(name="upstream")
async def fixture_upstream() -> AsyncIterator[Upstream]:
    """Serve the sideband on 127.0.0.1."""
    upstream = Upstream()
    app = web.Application()
    app.router.add_get("/openai/v1/realtime", upstream.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    upstream.url = f"http://127.0.0.1:{port}"
    try:
        yield upstream
    finally:
        upstream.first.set()
        upstream.drop.set()
        upstream.reopen.set()
        await runner.cleanup()


@pytest.fixture(name="runtime")
async def fixture_runtime(tmp_path: Path) -> AsyncIterator[MemoryRuntime]:
    """Yield a started memory runtime on a SQLite file (a fixed wall clock)."""
    runtime = build_memory_runtime(
        _settings(tmp_path), token_keys=KEYS, sink=FakeSink(), clock=FakeClock()
    )
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


class FailingStore:
    """The runtime as the capture's sink, except that storing heard turns fails or hangs."""

    def __init__(self, runtime: MemoryRuntime, *, hang: bool = False) -> None:
        self._runtime = runtime
        self._hang = hang

    async def accept_captured(self, *args: Any) -> Any:  # noqa: ARG002
        """Fail (or never answer)."""
        if self._hang:
            await asyncio.Event().wait()
        raise RuntimeError("queue down")

    async def expect_capture(self, *args: Any, **kwargs: Any) -> bool:
        """Delegate to the runtime."""
        return await self._runtime.expect_capture(*args, **kwargs)

    def mark_captured(self, session_id: str, **kwargs: Any) -> None:
        """Delegate to the runtime."""
        self._runtime.mark_captured(session_id, **kwargs)


def _call(http: aiohttp.ClientSession, url: str, capture: TurnCapture) -> AzureOpenAICall:
    sideband = Sideband(
        http=http,
        endpoint=Endpoint(url),
        call_id="rtc_gap",
        credentials=StaticKeySource(Secret("k" * 32)),
        connect_timeout=30.0,
        on_event=capture.feed,
        reconnects=1,
    )
    sideband.start()
    return AzureOpenAICall(
        sdp_answer="v=0",
        upstream_call_id="rtc_gap",
        endpoint=Endpoint(url),
        owner=Owner(),  # type: ignore[arg-type]
        capture=capture,
        sideband=sideband,
    )


@pytest.mark.parametrize("then", ["reopened", "hung_up_while_reopening", "call_over", "lost"])
async def test_a_turn_said_while_the_sideband_was_down_is_never_refused(
    upstream: Upstream, runtime: MemoryRuntime, then: str
) -> None:
    """While a dropped sideband reopens the browser's posts are stored; after a gap, for good.

    Only a drop that was the call's end upstream (404 on reopening) keeps it captured.
    """
    async with aiohttp.ClientSession() as http:
        capture = TurnCapture(upstream="azure-openai", call_id="rtc_gap", session_id=SESSION)
        call = _call(http, upstream.url, capture)
        sideband = await _capture_up(runtime, call)
        capture.feed(_item("item_greeting", None))  # the conversation begins on the sideband
        assert await _post(runtime, "item_forged") == (0, 1)  # captured: nothing unheard

        upstream.drop.set()
        await async_poll_until(lambda: sideband.state == "reconnecting", timeout=10, what="dropped")
        assert await _post(runtime, "item_during_gap") == (1, 0)

        if then == "hung_up_while_reopening":
            await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)
        else:
            upstream.reopen_status = {"reopened": 101, "call_over": 404, "lost": 500}[then]
            upstream.reopen.set()
            target = {"reopened": "connected", "call_over": "call_over", "lost": "lost"}[then]
            await async_poll_until(lambda: sideband.state == target, timeout=10, what=target)
            await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)
    after = await _post(runtime, "item_after_gap")
    assert after == ((0, 1) if then == "call_over" else (1, 0))


@pytest.mark.parametrize("gap", ["store_fails", "writer_queue_full", "hang_up_cuts_writer"])
async def test_a_heard_turn_that_is_not_stored_hands_the_session_to_the_browser(
    upstream: Upstream,
    runtime: MemoryRuntime,
    monkeypatch: pytest.MonkeyPatch,
    gap: str,
) -> None:
    """Whatever keeps a heard turn from the queue, the browser's post of it is stored."""
    monkeypatch.setattr(capture_module, "MAX_READY", 1)
    monkeypatch.setattr(capture_module, "CLOSE_SECONDS", 0.2)
    async with aiohttp.ClientSession() as http:
        capture = TurnCapture(
            upstream="azure-openai", call_id="rtc_gap", session_id=SESSION, retry_seconds=0
        )
        call = _call(http, upstream.url, capture)
        sink = FailingStore(runtime, hang=gap != "store_fails")
        assert await runtime.expect_capture(SESSION, "alice", "elena", window=60.0)
        call.bind_owner(sink, session_id=SESSION, user_id="alice", agent_id="elena")
        sideband = call.sideband
        assert sideband is not None
        await async_poll_until(sideband.connected.is_set, timeout=10, what="sideband up")
        capture.feed(_item("item_1", None, role="user"))  # the conversation begins on the sideband
        assert await _post(runtime, "item_forged") == (0, 1)

        said = ["item_1", "item_2", "item_3"] if gap == "writer_queue_full" else ["item_1"]
        for item_id in said:
            capture.feed(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item_id,
                    "transcript": f"said {item_id}",
                }
            )
        if gap == "store_fails":
            await async_poll_until(
                lambda: capture.counts.get("failed", 0) > 0, timeout=10, what="failed"
            )
        await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)
    for item_id in said:
        assert await _post(runtime, item_id) == (1, 0)


async def test_a_call_whose_set_up_record_was_not_stored_never_refuses_the_browser(
    upstream: Upstream, runtime: MemoryRuntime
) -> None:
    """Forgoing authority overtakes a captured mark the sideband already sent, for good."""
    async with aiohttp.ClientSession() as http:
        capture = TurnCapture(upstream="azure-openai", call_id="rtc_gap", session_id=SESSION)
        call = _call(http, upstream.url, capture)
        call.bind_owner(runtime, session_id=SESSION, user_id="alice", agent_id="elena")
        sideband = call.sideband
        assert sideband is not None
        await async_poll_until(sideband.connected.is_set, timeout=10, what="sideband up")
        call.forgo_authority()  # the set-up mark was not stored in time
        assert await _post(runtime, "item_during_call") == (1, 0)
        await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)
    assert await _post(runtime, "item_after_call") == (1, 0)


EARLIER = {
    "none": [],
    "one": ["item_early"],
    "several": ["item_early_1", "item_early_2", "item_early_3"],
}
"""Items said before the sideband first came up, by case."""


def _first_events(case: str, earlier: list[str]) -> list[dict[str, Any]]:
    """Return the first events the sideband carries once up, after ``earlier`` unheard items."""
    last = earlier[-1] if earlier else None
    if case == "item_follows":
        return [_item("item_answer", last)]
    if case == "tool_call_follows":
        return [_item("item_call", last, kind="function_call")]
    # a transcript whose item was added before the sideband came up (no item event here)
    return [
        {
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": "item_late_transcript",
            "transcript": "said late",
        }
    ]


@pytest.mark.parametrize("case", ["item_follows", "tool_call_follows", "transcript_first"])
@pytest.mark.parametrize("said_before", sorted(EARLIER))
async def test_a_turn_said_before_the_sideband_first_came_up_is_never_refused(
    upstream: Upstream, runtime: MemoryRuntime, said_before: str, case: str
) -> None:
    """A post held back while capture was pending is stored once capture is up, if unheard.

    The session is captured only once the sideband's first item shows it heard the
    conversation from its start (no ``previous_item_id``); a first item that follows
    items it never saw, or a transcript of an item added before it came up, hands the
    session to the browser, whose posts of the earlier turns are then stored.
    """
    earlier = EARLIER[said_before]
    upstream.first.clear()  # the sideband's first upgrade is slow
    async with aiohttp.ClientSession() as http:
        capture = TurnCapture(upstream="azure-openai", call_id="rtc_gap", session_id=SESSION)
        call = _call(http, upstream.url, capture)
        assert await runtime.expect_capture(SESSION, "alice", "elena", window=60.0)
        call.bind_owner(runtime, session_id=SESSION, user_id="alice", agent_id="elena")
        sideband = call.sideband
        assert sideband is not None
        for item_id in earlier:
            with pytest.raises(CapturePendingError):
                await _post(runtime, item_id)  # said before anyone heard the call
        upstream.first.set()
        await async_poll_until(sideband.connected.is_set, timeout=10, what="sideband up")
        with pytest.raises(CapturePendingError):  # up, but no item yet: still held back
            await _post(runtime, earlier[0] if earlier else "item_forged")
        for event in _first_events(case, earlier):
            capture.feed(event)
        try:
            began_here = not earlier and case != "transcript_first"
            assert capture.began is began_here
            for item_id in earlier:
                assert await _post(runtime, item_id) == (1, 0)  # posted again, as told
            assert await _post(runtime, "item_forged") == ((0, 1) if began_here else (1, 0))
        finally:
            await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)
    assert await _post(runtime, "item_after") == ((0, 1) if began_here else (1, 0))


async def test_a_call_that_ends_before_its_sideband_carried_an_item_is_the_browsers(
    upstream: Upstream, runtime: MemoryRuntime
) -> None:
    """Up but never shown where the conversation began: after the call the browser is the source."""
    async with aiohttp.ClientSession() as http:
        capture = TurnCapture(upstream="azure-openai", call_id="rtc_gap", session_id=SESSION)
        call = _call(http, upstream.url, capture)
        await _capture_up(runtime, call)
        await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)
    assert capture.began is None
    assert await _post(runtime, "item_early") == (1, 0)


async def test_a_sideband_up_without_an_item_holds_the_browser_back_while_its_replica_lives(
    upstream: Upstream, tmp_path: Path
) -> None:
    """Up but silent: posts wait past the set-up window while renewed, then are the browser's.

    No turn posted then can be admitted unheard (the sideband hears every later one), and
    a replica that died before the first item holds the browser back one lease at most.
    """
    clock = FakeClock()
    runtime = build_memory_runtime(
        _settings(tmp_path), token_keys=KEYS, sink=FakeSink(), clock=clock
    )
    await runtime.start()
    try:
        async with aiohttp.ClientSession() as http:
            capture = TurnCapture(upstream="azure-openai", call_id="rtc_gap", session_id=SESSION)
            call = _call(http, upstream.url, capture)
            await _capture_up(runtime, call, window=5.0)
            clock.advance(30)  # past the set-up window, within the lease
            with pytest.raises(CapturePendingError):
                await _post(runtime, "item_forged")
            await runtime.captured.renew()
            clock.advance(LEASE_SECONDS - 10)
            with pytest.raises(CapturePendingError):
                await _post(runtime, "item_forged")
            clock.advance(LEASE_SECONDS)  # nobody renewed it: as if the replica had died
            assert await _post(runtime, "item_forged") == (1, 0)
            await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)
    finally:
        await runtime.stop()


@pytest.mark.parametrize("lag", [0.0, 0.5, 5.0, 30.0, 59.0])
async def test_a_suspended_capture_reads_as_the_browsers_on_a_replica_whose_clock_lags(
    tmp_path: Path, lag: float
) -> None:
    """A dropped sideband's suspension holds on every replica, whose clocks differ a little."""
    holder_clock = FakeClock()
    queue = SqliteTurnQueue(tmp_path / "q.sqlite3", clock=holder_clock)
    await queue.open()
    try:
        holder = CaptureAuthority(queue, clock=holder_clock, timeout=5)
        other = CaptureAuthority(queue, clock=FakeClock(holder_clock.now - lag), timeout=5)
        holder.mark(SESSION, "alice", "elena", captured=True)
        await holder.settle(5)
        assert (await other.decide(SESSION, ["item_1"])).kind == "captured"
        holder.mark(SESSION, "alice", "elena", captured=True, suspended=True)
        await holder.settle(5)
        assert (await other.decide(SESSION, ["item_1"])).kind == "browser"
        assert (await holder.decide(SESSION, ["item_1"])).kind == "browser"
    finally:
        await queue.close()
