"""One Azure OpenAI call the service set up: its hang-up, its end, and its capture rules.

:class:`AzureOpenAICall` is what :class:`~engram_voice.realtime.calls.azure_openai.AzureOpenAICalls`
returns for each call: the SDP answer, the upstream call id, and the call's sideband and
transcript capture (held on this loop, or mirrored from the capture process: the same
attributes either way). :meth:`AzureOpenAICall.bind_owner` holds the rules that decide,
from the sideband's state and the capture's first item, whether the session is captured
server-side or the browser's posts are its source; :meth:`AzureOpenAICall.hangup` posts
``.../calls/{call_id}/hangup`` with the service's own credential, closes the sideband and
flushes the capture.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from engram_voice.realtime.calls.capture import CaptureSink, TurnCapture
from engram_voice.realtime.calls.capture_proxy import RemoteCapture, RemoteSideband
from engram_voice.realtime.calls.sideband import UPSTREAM_CLOSED, Sideband
from engram_voice.realtime.endpoints import Endpoint

if TYPE_CHECKING:
    from engram_voice.realtime.calls.azure_openai import AzureOpenAICalls

__all__ = ["SIDEBAND_RECONNECTS", "AzureOpenAICall"]

SIDEBAND_RECONNECTS = 1
"""The sideband reopens once if it drops while the call lives."""


class AzureOpenAICall:
    """One Azure OpenAI call the service created; hangs up with the service credential."""

    def __init__(
        self,
        *,
        sdp_answer: str,
        upstream_call_id: str,
        endpoint: Endpoint,
        owner: AzureOpenAICalls,
        capture: TurnCapture | RemoteCapture | None = None,
        sideband: Sideband | RemoteSideband | None = None,
    ) -> None:
        self.sdp_answer = sdp_answer
        self.upstream_call_id = upstream_call_id
        self.capture = capture
        self.sideband = sideband
        self._endpoint = endpoint
        self._owner = owner
        self._closed = asyncio.Event()
        """Set by the hang-up once done, or by the sideband learning the call ended upstream."""
        self._reason = "hangup"
        self._hangup: asyncio.Task[None] | None = None
        self._on_end: Callable[[], None] | None = None
        self._authority = True
        self._release: Callable[[], None] | None = None
        if sideband is not None:  # one event to wait on: no waiter task per source per call
            sideband.on_ended = self._closed.set
            if sideband.ended.is_set():
                self._closed.set()

    def __repr__(self) -> str:
        return (
            f"AzureOpenAICall(call_id={self.upstream_call_id!r}, endpoint={self._endpoint.host!r})"
        )

    async def hangup(self, reason: str) -> None:
        """Post ``/hangup`` once (later calls wait for the first); bounded, never raises."""
        if self._hangup is None:
            self._reason = reason
            self._hangup = asyncio.create_task(self._post_hangup(), name="azure-openai-hangup")
        await asyncio.shield(self._hangup)

    def bind_owner(
        self,
        sink: CaptureSink | None,
        *,
        session_id: str,
        user_id: str,
        agent_id: str,
        call_id: str | None = None,
    ) -> None:
        """Send this call's captured turns to ``sink`` for its owner; mark the session.

        The session counts as captured once the sideband is connected *and* its first
        item showed it heard the conversation from the start (no ``previous_item_id``),
        and after a call that ended so; until that first item it stays ``expected`` (the
        browser's posts are held back, 503 ``capture_pending``). A first item that follows
        items said before the sideband came up (heard by no one here), a sideband lost for
        good, reopened after a drop (it heard nothing meanwhile), a call that ended before
        any item, or a turn heard but not stored hands the session back to the browser
        for good; while a dropped sideband reopens, the browser's posts are stored.
        """
        capture, sideband = self.capture, self.sideband
        if capture is None or sideband is None:
            return
        kept = capture.bind_owner(
            sink, session_id=session_id, user_id=user_id, agent_id=agent_id, call_id=call_id
        )
        if not kept or sink is None:  # memory disabled: usage only
            return

        dropped = False

        def follow(state: str) -> None:
            nonlocal dropped
            if not self._authority:  # the set-up record was not stored: the browser's
                return
            if state == "dropped":  # nobody hears the call now: the browser's posts count
                dropped = True
                sink.mark_captured(
                    session_id, captured=True, user_id=user_id, agent=agent_id, suspended=True
                )
                return
            if state == "connected" and not dropped and capture.began is None:
                # captured only once the first item shows nothing was said before; until
                # then the browser's posts stay held back (on a lease this replica renews)
                sink.mark_captured(
                    session_id, captured=True, user_id=user_id, agent=agent_id, pending=True
                )
                return
            # Reopened after a drop: what was said meanwhile was never heard here, so the
            # server's record has a gap and the browser is the source for good. So too
            # when the first item followed items said before the sideband came up.
            captured = state == "connected" and not dropped and capture.began is True
            sink.mark_captured(session_id, captured=captured, user_id=user_id, agent=agent_id)

        def began(_: bool) -> None:
            if not dropped and sideband.state == "connected":
                follow("connected")

        sideband.on_state = follow
        capture.on_gap = lambda: follow("lost")  # a heard turn could not be stored
        capture.on_began = began
        if sideband.connected.is_set():
            follow("connected" if sideband.state != "lost" else "lost")

        def release() -> None:
            sink.mark_captured(session_id, captured=False, user_id=user_id, agent=agent_id)

        self._release = release

        def ended() -> None:
            if not self._authority:
                return
            if not sideband.connected.is_set() or capture.began is None:
                # ended before capture came up, or before an item showed that the sideband
                # heard the conversation from its start: the browser's turns count
                follow("lost")
            elif capture.began is False:
                return  # marked lost at the first item already
            elif dropped and sideband.state != "call_over":
                follow("lost")  # hung up while reopening: what was said meanwhile is unheard
            elif sideband.state != "lost":  # captured until the end: for good
                sink.mark_captured(
                    session_id, captured=True, user_id=user_id, agent=agent_id, final=True
                )

        self._on_end = ended

    def forgo_authority(self) -> None:
        """Never claim the session: its set-up record could not be stored.

        The browser keeps its memory token and its posts are the session's source (the
        sideband still stores what it hears, with the same key). A captured mark already
        sent (the sideband came up during set-up) is overtaken by ``lost``.
        """
        self._authority = False
        if self._release is not None:
            self._release()

    def capture_window(self) -> float | None:
        """Return how long the sideband may take to come up (None: this call has none).

        Each of its attempts (one reconnect) may re-read the credential once and wait the
        connect bound for each upgrade; the session's browser posts wait at most this long.
        """
        if self.sideband is None:
            return None
        return 2 * (1 + SIDEBAND_RECONNECTS) * self._owner.sideband_timeout + 1.0

    async def update_instructions(self, instructions: str) -> bool:
        """Send ``session.update`` with new ``instructions`` over the sideband (bounded).

        False when the call has no sideband, it does not connect within its connect
        timeout, or the call is over.
        """
        sideband = self.sideband
        if sideband is None or self._hangup is not None:
            return False
        try:
            async with asyncio.timeout(self._owner.sideband_timeout):
                await sideband.connected.wait()
        except TimeoutError:
            return False
        session = {"type": "realtime", "instructions": instructions}
        return await sideband.send({"type": "session.update", "session": session})

    async def wait_closed(self) -> str:
        """Return the reason once the call was hung up or the sideband saw it end upstream."""
        await self._closed.wait()
        if self._hangup is None and self.sideband is not None and self.sideband.ended.is_set():
            return UPSTREAM_CLOSED
        return self._reason

    async def _post_hangup(self) -> None:
        if self.sideband is not None:
            self.sideband.stop_reconnecting()  # Azure closes it after the hang-up: expected
        try:
            await self._owner.post_hangup(self._endpoint, self.upstream_call_id)
        finally:
            if self.sideband is not None:
                await self.sideband.finish()
                if self._on_end is not None:
                    self._on_end()
            if self.capture is not None:
                await self.capture.close()
            self._closed.set()
