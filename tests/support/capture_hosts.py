"""A loopback Azure OpenAI sideband and the two capture hosts, for the capture tests.

Shared by the contract suite both hosts pass (``tests/contract/test_capture_hosts.py``)
and the capture process's own faults (``tests/contract/test_capture_process_faults.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from engram_voice.credentials import Secret, UpstreamCredential
from engram_voice.memory import MemoryClaims, MemoryRuntime, build_memory_runtime
from engram_voice.memory.schemas import EnrichMessage
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


def item_added(item_id: str, previous: str | None, role: str) -> dict[str, Any]:
    """Return a ``conversation.item.added`` event for a message item."""
    item = {"id": item_id, "type": "message", "role": role}
    return {"type": "conversation.item.added", "item": item, "previous_item_id": previous}


def said(item_id: str, role: str, text: str) -> dict[str, Any]:
    """Return the event carrying a user or assistant transcript of ``item_id``."""
    if role == "user":
        kind = "conversation.item.input_audio_transcription.completed"
        return {"type": kind, "item_id": item_id, "transcript": text}
    return {"type": "response.output_audio_transcript.done", "item_id": item_id, "transcript": text}


def usage_done(total: int) -> dict[str, Any]:
    """Return a ``response.done`` event with a usage object of ``total`` tokens."""
    usage = {"total_tokens": total, "input_tokens": total // 2, "output_tokens": total // 2}
    return {"type": "response.done", "response": {"id": "resp", "usage": usage}}


CLOCK = FakeClock()
"""The runtimes' wall clock (fixed: nothing here waits on it)."""


class Host:
    """One capture host: the calls upstream built with it, and what it reported."""

    def __init__(self, name: str, credentials: RotatingKeys, *, priority: str = "normal") -> None:
        self.name = name
        self.credentials = credentials
        self.usage: list[tuple[str, dict[str, Any]]] = []
        process = CaptureProcess(credentials=credentials, restart_pause=0.0, priority=priority)
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


async def bound(runtime: MemoryRuntime, call: AzureOpenAICall) -> None:
    """Mark the session expected, bind the call to its owner and wait for the sideband."""
    assert await runtime.expect_capture(SESSION, "alice", "elena", window=60.0)
    call.bind_owner(
        runtime, session_id=SESSION, user_id="alice", agent_id="elena", call_id="rc_host"
    )
    sideband = call.sideband
    assert sideband is not None
    await async_poll_until(sideband.connected.is_set, timeout=15, what="sideband up")


async def post_turn(runtime: MemoryRuntime, item_id: str) -> tuple[int, int]:
    """Post one turn as the browser would; return (accepted, not heard)."""
    await runtime.captured.settle(5)
    claims = MemoryClaims(
        session_id=SESSION, user_id="alice", agent="elena", expires_at=0, key_id="test"
    )
    turn = EnrichMessage(id=item_id, role="user", text=f"said {item_id}")
    result, not_heard = await runtime.accept_browser(claims, [turn])
    return result.accepted, not_heard


async def stored_turns(runtime: MemoryRuntime, count: int) -> list[tuple[str, str, str]]:
    """Wait for ``count`` queued turns of the session; return them in queue order."""

    async def enough() -> bool:
        return (await runtime.progress(SESSION)).queued >= count

    await async_poll_until(enough, timeout=15, what=f"{count} turns stored")
    claimed = await runtime.queue.claim(
        owner="t", sessions=1, turns=100, lease_seconds=30, now=CLOCK.now
    )
    assert claimed
    return [(t.message_id, t.role, t.text) for t in claimed[0].turns]


def process_pid(host: Host) -> int:
    """Return the pid of the host's running capture process."""
    assert host.process is not None
    pid = host.process.describe()["pid"]
    assert isinstance(pid, int)
    return pid


async def stall_until_lost(host: Host, call: AzureOpenAICall) -> int:
    """Stop (SIGSTOP) the host's capture process until ``call``'s sideband reads ``lost``.

    The process is continued afterwards (if it still exists); returns its pid.
    """
    pid = process_pid(host)
    os.kill(pid, signal.SIGSTOP)
    sideband = call.sideband
    assert sideband is not None
    try:
        await async_poll_until(lambda: sideband.state == "lost", timeout=30, what="lost")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    return pid


@asynccontextmanager
async def serve_upstream() -> AsyncIterator[Upstream]:
    """Serve a loopback upstream on 127.0.0.1."""
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


@asynccontextmanager
async def memory_runtime(tmp_path: Path) -> AsyncIterator[MemoryRuntime]:
    """Yield a started memory runtime on a SQLite file in ``tmp_path``."""
    runtime = build_memory_runtime(
        _settings(tmp_path), token_keys=KEYS, sink=FakeSink(), clock=CLOCK
    )
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()
