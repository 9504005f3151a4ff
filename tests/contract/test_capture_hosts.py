"""Both capture hosts (the service's own loop, the capture process) capture a call alike.

Each case joins a call's sideband on a loopback upstream through
``AzureOpenAICalls.hold_sideband``, drives the upstream's side of the socket (events,
drops, refusals, the hang-up) and checks what the call's owner sees: the turns stored in
a SQLite memory runtime, the session's capture record, usage, the call's end, the
credential re-read, ``session.update``. The process host must behave exactly as the
in-process one; its own failure (the capture process killed) is tested at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from engram_voice.credentials import Secret, UpstreamCredential
from engram_voice.memory import MemoryClaims, MemoryRuntime, build_memory_runtime
from engram_voice.memory.schemas import EnrichMessage
from engram_voice.realtime.calls import capture_proxy
from engram_voice.realtime.calls.azure_openai import AzureOpenAICall, AzureOpenAICalls
from engram_voice.realtime.calls.capture_process import CaptureProcess
from engram_voice.realtime.calls.capture_proxy import RemoteSideband
from engram_voice.realtime.endpoints import Endpoint
from tests.support.clock import FakeClock
from tests.support.memory import FakeSink
from tests.support.polling import async_poll_until
from tests.support.servers import free_port
from tests.unit.test_memory_worker import KEYS, _settings

SESSION = "vs_host"
CALL = "rtc_host"
KEY_OLD, KEY_NEW = "o" * 32, "n" * 32


class RotatingKeys:
    """A credential source whose key was rotated: the first one it gives is refused."""

    kind = "api-key"

    def __init__(self) -> None:
        self.keys = [KEY_OLD, KEY_NEW]
        self.invalidated = 0

    async def start(self) -> None:
        """Nothing to prepare."""

    async def get(self) -> UpstreamCredential:
        """Return the current key."""
        return UpstreamCredential(header="api-key", secret=Secret(self.keys[0]), kind=self.kind)

    async def invalidate(self, used: UpstreamCredential) -> bool:
        """Move to the next key when ``used`` is the current one."""
        if used.secret.reveal() == self.keys[0] and len(self.keys) > 1:
            self.keys.pop(0)
            self.invalidated += 1
            return True
        return False

    async def check(self) -> None:
        """Succeed: the keys are always there."""

    def describe(self) -> dict[str, Any]:
        """Say nothing of the key."""
        return {"kind": self.kind}

    async def aclose(self) -> None:
        """Nothing to release."""


class Upstream:
    """A loopback Azure OpenAI: the sideband (``api-key`` checked) and ``/hangup``."""

    def __init__(self) -> None:
        self.accepted = {KEY_NEW}
        self.status = 101
        """The answer to the next upgrades (101: upgrade)."""
        self.sockets: list[web.WebSocketResponse] = []
        self.received: list[dict[str, Any]] = []
        self.upgrades = 0
        self.refused_keys = 0
        self.hung_up = asyncio.Event()
        self.url = ""

    async def sideband(self, request: web.Request) -> web.StreamResponse:
        """Upgrade when the key is accepted and no refusal is scripted."""
        if request.headers.get("api-key") not in self.accepted:
            self.refused_keys += 1
            return web.Response(status=401)
        if self.status != 101:
            return web.Response(status=self.status)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.upgrades += 1
        self.sockets.append(ws)
        async for message in ws:
            if message.type is aiohttp.WSMsgType.TEXT:
                self.received.append(json.loads(message.data))
        return ws

    async def hangup(self, _: web.Request) -> web.Response:
        """End the call: the sideband closes."""
        self.hung_up.set()
        for ws in self.sockets:
            await ws.close()
        return web.Response(status=200)

    async def send(self, *events: dict[str, Any]) -> None:
        """Send ``events`` on the live sideband."""
        await async_poll_until(lambda: self._live() is not None, timeout=10, what="sideband")
        ws = self._live()
        assert ws is not None
        for event in events:
            await ws.send_str(json.dumps(event))

    async def drop(self) -> None:
        """Close the live sideband from the upstream's side."""
        ws = self._live()
        assert ws is not None
        await ws.close()

    def _live(self) -> web.WebSocketResponse | None:
        live = [ws for ws in self.sockets if not ws.closed]
        return live[-1] if live else None


def _item(item_id: str, previous: str | None, role: str) -> dict[str, Any]:
    item = {"id": item_id, "type": "message", "role": role}
    return {"type": "conversation.item.added", "item": item, "previous_item_id": previous}


def _said(item_id: str, role: str, text: str) -> dict[str, Any]:
    if role == "user":
        kind = "conversation.item.input_audio_transcription.completed"
        return {"type": kind, "item_id": item_id, "transcript": text}
    return {"type": "response.output_audio_transcript.done", "item_id": item_id, "transcript": text}


def _usage(total: int) -> dict[str, Any]:
    usage = {"total_tokens": total, "input_tokens": total // 2, "output_tokens": total // 2}
    return {"type": "response.done", "response": {"id": "resp", "usage": usage}}


@pytest.fixture(name="upstream")
async def fixture_upstream() -> AsyncIterator[Upstream]:
    """Serve the loopback upstream on 127.0.0.1."""
    upstream = Upstream()
    app = web.Application()
    app.router.add_get("/openai/v1/realtime", upstream.sideband)
    app.router.add_post("/openai/v1/realtime/calls/{call}/hangup", upstream.hangup)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    upstream.url = f"http://127.0.0.1:{port}"
    try:
        yield upstream
    finally:
        await runner.cleanup()


CLOCK = FakeClock()
"""The runtimes' wall clock (fixed: nothing here waits on it)."""


@pytest.fixture(name="runtime")
async def fixture_runtime(tmp_path: Path) -> AsyncIterator[MemoryRuntime]:
    """Yield a started memory runtime on a SQLite file."""
    runtime = build_memory_runtime(
        _settings(tmp_path), token_keys=KEYS, sink=FakeSink(), clock=CLOCK
    )
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()


class Host:
    """One capture host: the calls upstream built with it, and what it reported."""

    def __init__(self, name: str, credentials: RotatingKeys) -> None:
        self.name = name
        self.credentials = credentials
        self.usage: list[tuple[str, dict[str, Any]]] = []
        process = CaptureProcess(credentials=credentials, restart_pause=0.0)
        self.process = process if name == "process" else None
        self.http = aiohttp.ClientSession()
        self.calls = AzureOpenAICalls(
            session=self.http,
            minter=None,  # type: ignore[arg-type] - the cases never mint
            credentials=credentials,
            deployment="gpt-realtime",
            ttl_seconds=60,
            webrtc_filter=True,
            request_timeout=5.0,
            connect_timeout=5.0,
            sideband=True,
            on_usage=lambda call, usage: self.usage.append((call, usage)),
            capture_process=self.process,
        )

    async def open(self, url: str) -> AzureOpenAICall:
        """Join the call's sideband on ``url`` as ``AzureOpenAICalls.open`` does."""
        if self.process is not None:  # a call before it is ready is captured in-process
            assert await self.process.start(wait=30)
        endpoint = Endpoint(url)
        capture, sideband = await self.calls.hold_sideband(endpoint, CALL, SESSION)
        held_remotely = isinstance(sideband, RemoteSideband)
        assert held_remotely == (self.process is not None)
        return AzureOpenAICall(
            sdp_answer="v=0",
            upstream_call_id=CALL,
            endpoint=endpoint,
            owner=self.calls,
            capture=capture,
            sideband=sideband,
        )

    async def close(self) -> None:
        """Stop the capture process (if any) and the HTTP session."""
        if self.process is not None:
            await self.process.aclose()
        await self.http.close()


@pytest.fixture(name="host", params=["inprocess", "process"])
async def fixture_host(request: pytest.FixtureRequest) -> AsyncIterator[Host]:
    """Yield each capture host in turn."""
    host = Host(request.param, RotatingKeys())
    try:
        yield host
    finally:
        await host.close()


async def _bound(runtime: MemoryRuntime, call: AzureOpenAICall) -> None:
    assert await runtime.expect_capture(SESSION, "alice", "elena", window=60.0)
    call.bind_owner(
        runtime, session_id=SESSION, user_id="alice", agent_id="elena", call_id="rc_host"
    )
    sideband = call.sideband
    assert sideband is not None
    await async_poll_until(sideband.connected.is_set, timeout=15, what="sideband up")


async def _post(runtime: MemoryRuntime, item_id: str) -> tuple[int, int]:
    """Post one turn as the browser would; return (accepted, not heard)."""
    await runtime.captured.settle(5)
    claims = MemoryClaims(
        session_id=SESSION, user_id="alice", agent="elena", expires_at=0, key_id="test"
    )
    turn = EnrichMessage(id=item_id, role="user", text=f"said {item_id}")
    result, not_heard = await runtime.accept_browser(claims, [turn])
    return result.accepted, not_heard


async def _stored(runtime: MemoryRuntime, count: int) -> list[tuple[str, str, str]]:
    async def enough() -> bool:
        return (await runtime.progress(SESSION)).queued >= count

    await async_poll_until(enough, timeout=15, what=f"{count} turns stored")
    claimed = await runtime.queue.claim(
        owner="t", sessions=1, turns=100, lease_seconds=30, now=CLOCK.now
    )
    assert claimed
    return [(t.message_id, t.role, t.text) for t in claimed[0].turns]


async def test_heard_turns_are_stored_once_in_conversation_order_and_usage_is_reported(
    host: Host, upstream: Upstream, runtime: MemoryRuntime
) -> None:
    """Turns are stored in item order (a late user transcript included), usage under rc_."""
    call = await host.open(upstream.url)
    await _bound(runtime, call)
    await upstream.send(
        _item("item_a", None, "user"),
        _item("item_b", "item_a", "assistant"),
        _said("item_b", "assistant", "Hello Alice."),
        _usage(10),
        _said("item_a", "user", "Hi there."),
        _said("item_a", "user", "Hi there."),  # a repeat changes nothing
    )
    assert await _stored(runtime, 2) == [
        ("item_a", "user", "Hi there."),
        ("item_b", "assistant", "Hello Alice."),
    ]
    await async_poll_until(lambda: bool(host.usage), timeout=15, what="usage")
    assert host.usage[0][0] == "rc_host"
    assert host.usage[0][1]["total_tokens"] == 10
    assert await _post(runtime, "item_forged") == (0, 1)  # captured: nothing unheard
    await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)
    assert await call.wait_closed() == "client_hangup"
    assert upstream.hung_up.is_set()


async def test_a_refused_key_is_re_read_once_and_the_new_one_opens_the_sideband(
    host: Host, upstream: Upstream, runtime: MemoryRuntime
) -> None:
    """A 401 on the upgrade makes the service's credential source move to the rotated key."""
    call = await host.open(upstream.url)
    await _bound(runtime, call)
    assert host.credentials.invalidated == 1
    assert upstream.refused_keys == 1
    await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)


async def test_session_update_reaches_the_upstream_over_the_sideband(
    host: Host, upstream: Upstream, runtime: MemoryRuntime
) -> None:
    """``update_instructions`` sends one ``session.update`` with the new instructions."""
    call = await host.open(upstream.url)
    await _bound(runtime, call)
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
    await _bound(runtime, call)
    await upstream.send(_item("item_a", None, "user"))
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
        assert await _post(runtime, "item_browser") == (1, 0)  # the browser is the source
    await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)


async def test_a_first_item_after_unheard_ones_hands_the_session_to_the_browser(
    host: Host, upstream: Upstream, runtime: MemoryRuntime
) -> None:
    """An item whose previous item the sideband never saw: turns were said before it."""
    call = await host.open(upstream.url)
    await _bound(runtime, call)
    await upstream.send(_item("item_late", "item_unheard", "user"))
    await async_poll_until(
        lambda: call.capture is not None and call.capture.began is False, timeout=15, what="late"
    )
    assert await _post(runtime, "item_browser") == (1, 0)
    await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)


async def test_turns_held_at_the_hang_up_are_stored_before_it_returns(
    host: Host, upstream: Upstream, runtime: MemoryRuntime
) -> None:
    """A turn whose transcript is complete but held behind an earlier one is stored at close."""
    call = await host.open(upstream.url)
    await _bound(runtime, call)
    await upstream.send(
        _item("item_a", None, "user"),
        _item("item_b", "item_a", "assistant"),
        _said("item_b", "assistant", "Answer."),
    )
    await asyncio.sleep(0)
    await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)
    stored = await _stored(runtime, 1)
    assert ("item_b", "assistant", "Answer.") in stored


async def test_a_killed_capture_process_loses_its_sidebands_and_is_started_again(
    upstream: Upstream, runtime: MemoryRuntime
) -> None:
    """Its calls fall back to the browser; a new capture process takes the next call."""
    host = Host("process", RotatingKeys())
    try:
        call = await host.open(upstream.url)
        await _bound(runtime, call)
        await upstream.send(_item("item_a", None, "user"))
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
        assert await _post(runtime, "item_browser") == (1, 0)
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


def _pid(host: Host) -> int:
    assert host.process is not None
    pid = host.process.describe()["pid"]
    assert isinstance(pid, int)
    return pid


@pytest.mark.parametrize("fate", ["killed", "stalled"])
async def test_a_capture_process_lost_during_the_hang_up_hands_held_turns_to_the_browser(
    upstream: Upstream, runtime: MemoryRuntime, monkeypatch: pytest.MonkeyPatch, fate: str
) -> None:
    """Turns it still held when it died (or stopped answering) mid-close are the browser's."""
    monkeypatch.setattr(capture_proxy, "CLOSE_SECONDS", 0.5)  # the stalled close times out
    host = Host("process", RotatingKeys())
    try:
        call = await host.open(upstream.url)
        await _bound(runtime, call)
        await upstream.send(
            _item("item_a", None, "user"),
            _item("item_b", "item_a", "assistant"),
            _said("item_b", "assistant", "Answer."),  # held behind item_a's transcript
        )
        await async_poll_until(
            lambda: call.capture is not None and call.capture.began is True,
            timeout=15,
            what="began",
        )
        pid = _pid(host)
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
        assert await _post(runtime, "item_b") == (1, 0)  # not refused as unheard
    finally:
        await host.close()
