"""An Azure OpenAI call's capture marks follow its sideband, including a hang-up before it is up.

A call hung up before its sideband ever connected was heard by no one: its session must
fall back to the browser's posts (``lost``), or the browser would be held back
(``capture_pending``) until the expectation lapsed. A call whose sideband was up and
showed, by its first item, that it heard the conversation from its start stays captured
after the hang-up; one whose sideband carried no item, or a first item following items
said before it came up, is the browser's. The sideband talks to a loopback aiohttp server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from engram_voice.credentials import Secret, StaticKeySource
from engram_voice.realtime.calls.azure_openai import AzureOpenAICall
from engram_voice.realtime.calls.capture import TurnCapture
from engram_voice.realtime.calls.sideband import Sideband
from engram_voice.realtime.endpoints import Endpoint
from tests.support.polling import async_poll_until
from tests.support.servers import free_port


class Marks:
    """Records the marks a call sends, as the memory runtime would receive them."""

    def __init__(self) -> None:
        self.marks: list[tuple[str, str]] = []

    async def accept_captured(self, *args: Any) -> None:
        """Store nothing (no turns are heard here)."""

    async def expect_capture(self, *args: Any, **kwargs: Any) -> bool:  # noqa: ARG002
        """Accept the set-up mark."""
        return True

    def mark_captured(
        self,
        session_id: str,
        *,
        captured: bool,
        user_id: str = "",
        agent: str = "",
        final: bool = False,
        pending: bool = False,
    ) -> None:
        """Record the mark (for alice's elena calls only)."""
        assert (user_id, agent) == ("alice", "elena")
        mark = "lost" if not captured else "pending" if pending else "final" if final else "live"
        self.marks.append((session_id, mark))


class Owner:
    """The parts of :class:`AzureOpenAICalls` a call uses: its bounds and the hang-up post."""

    sideband_timeout = 30.0

    async def post_hangup(self, endpoint: Endpoint, call_id: str) -> None:
        """Pretend Azure ended the call."""


@pytest.fixture(name="upstream")
async def fixture_upstream() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """Serve a sideband on 127.0.0.1 that upgrades only once ``ready`` is set."""
    ready = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        await ready.wait()
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/openai/v1/realtime", handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}", ready
    finally:
        ready.set()
        await runner.cleanup()


FIRST_ITEM = {"none": None, "began_here": None, "follows_earlier": "item_early"}
"""The ``previous_item_id`` of the sideband's first item, by case (``none``: no item)."""
MARKS = {
    "not_connected": [("vs_1", "lost")],
    "none": [("vs_1", "pending"), ("vs_1", "lost")],
    "began_here": [("vs_1", "pending"), ("vs_1", "live"), ("vs_1", "final")],
    "follows_earlier": [("vs_1", "pending"), ("vs_1", "lost")],
}
"""The marks each case sends, in order."""


@pytest.mark.parametrize("case", sorted(MARKS))
async def test_a_hang_up_before_the_sideband_is_up_hands_the_session_to_the_browser(
    upstream: tuple[str, asyncio.Event], case: str
) -> None:
    """Hung up before capture came up: ``lost``; hung up while captured: captured for good.

    Captured means up *and* shown by the first item that nothing was said before it.
    """
    url, ready = upstream
    sink = Marks()
    async with aiohttp.ClientSession() as http:
        capture = TurnCapture(upstream="azure-openai", call_id="rtc_1", session_id="vs_1")
        sideband = Sideband(
            http=http,
            endpoint=Endpoint(url),
            call_id="rtc_1",
            credentials=StaticKeySource(Secret("k" * 32)),
            connect_timeout=30.0,
            on_event=capture.feed,
            reconnects=0,
        )
        call = AzureOpenAICall(
            sdp_answer="v=0",
            upstream_call_id="rtc_1",
            endpoint=Endpoint(url),
            owner=Owner(),  # type: ignore[arg-type]
            capture=capture,
            sideband=sideband,
        )
        sideband.start()
        call.bind_owner(sink, session_id="vs_1", user_id="alice", agent_id="elena")
        if case != "not_connected":
            ready.set()
            await async_poll_until(sideband.connected.is_set, timeout=10, what="up")
            await async_poll_until(lambda: bool(sink.marks), timeout=10, what="a mark")
            assert sink.marks == [("vs_1", "pending")]  # not captured before the first item
        if case in {"began_here", "follows_earlier"}:
            item = {"id": "item_1", "type": "message", "role": "user"}
            capture.feed(
                {
                    "type": "conversation.item.added",
                    "item": item,
                    "previous_item_id": FIRST_ITEM[case],
                }
            )
        assert call.capture_window() == pytest.approx(2 * 2 * 30.0 + 1.0)
        await asyncio.wait_for(call.hangup("client_hangup"), timeout=20)
    assert sink.marks == MARKS[case]
