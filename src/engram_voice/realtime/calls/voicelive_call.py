"""A Voice Live call once answered: the held control WebSocket and the task reading it.

:class:`VoiceLiveCall` keeps reading control events (an ``error`` is logged; every event
is fed to the call's :class:`~engram_voice.realtime.calls.capture.TurnCapture`, which
keeps transcripts only if the channel carries them — Voice Live documents them on the
data channel only, so the session counts as captured from the first transcript the
channel delivers), :meth:`VoiceLiveCall.hangup` closes it (that ends the media session),
and :meth:`VoiceLiveCall.wait_closed` returns ``upstream_closed`` or ``upstream_error``
when Voice Live closes or drops it. Set-up is
:class:`~engram_voice.realtime.calls.voicelive.VoiceLiveCalls`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

import aiohttp
import structlog

from engram_voice.realtime.calls.capture import CAPTURED_EVENTS, CaptureSink, TurnCapture
from engram_voice.realtime.calls.sideband import decode_event
from engram_voice.realtime.calls.voicelive_events import log_control_error
from engram_voice.realtime.voicelive_socket import CLOSE_TIMEOUT_SECONDS

__all__ = ["UPSTREAM_CLOSED", "UPSTREAM_ERROR", "VoiceLiveCall"]

UPSTREAM_CLOSED = "upstream_closed"
UPSTREAM_ERROR = "upstream_error"
_CLOSING = frozenset({aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED})
_READ_EVENTS = CAPTURED_EVENTS | {"error"}
"""What the control reader decodes in full: capture's events and ``error`` (logged)."""
_logger = structlog.get_logger("engram_voice.realtime.calls")


class VoiceLiveCall:
    """One Voice Live call: the held control socket and the task that reads it."""

    def __init__(
        self,
        *,
        ws: aiohttp.ClientWebSocketResponse,
        sdp_answer: str,
        upstream_call_id: str,
        session_id: str,
        capture: TurnCapture | None = None,
    ) -> None:
        self.capture = capture
        self.sdp_answer = sdp_answer
        self.upstream_call_id = upstream_call_id
        self._ws = ws
        self._session_id = session_id
        self._closed = asyncio.Event()
        self._reason: str | None = None
        self._hangup: asyncio.Task[None] | None = None
        self._on_end: Callable[[], None] | None = None
        self._authority = True
        """False once :meth:`forgo_authority` ran: the session stays the browser's."""
        self._reader = asyncio.create_task(self._read(), name="voicelive-control-reader")

    def __repr__(self) -> str:
        return f"VoiceLiveCall(rtc_call_id={self.upstream_call_id!r})"

    async def hangup(self, reason: str) -> None:
        """Close the control channel once (later calls wait for the first); bounded."""
        if self._hangup is None:
            if self._reason is None:
                self._reason = reason
            self._hangup = asyncio.create_task(self._close(), name="voicelive-hangup")
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
        """Send the control channel's turns to ``sink`` (captured from the first one heard)."""
        capture = self.capture
        if capture is None:
            return
        kept = capture.bind_owner(
            sink, session_id=session_id, user_id=user_id, agent_id=agent_id, call_id=call_id
        )
        if not kept or sink is None:  # memory disabled: usage only
            return

        def heard() -> None:
            if self._authority:
                sink.mark_captured(session_id, captured=True, user_id=user_id, agent=agent_id)

        capture.on_heard = heard

        def gap() -> None:  # a heard turn could not be stored: the browser is the source
            if self._authority:
                sink.mark_captured(session_id, captured=False, user_id=user_id, agent=agent_id)

        capture.on_gap = gap
        if capture.heard:
            heard()

        def ended() -> None:
            if capture.heard and self._authority:  # captured until the end: for good
                sink.mark_captured(
                    session_id, captured=True, user_id=user_id, agent=agent_id, final=True
                )

        self._on_end = ended

    def forgo_authority(self) -> None:
        """Never mark the session captured (its set-up record could not be stored).

        Transcripts the channel carries are still stored (same key as the browser's
        posts); the browser's posts stay the session's source.
        """
        self._authority = False

    async def update_instructions(self, instructions: str) -> bool:
        """Send ``session.update`` with new ``instructions`` on the control channel (bounded)."""
        if self._closed.is_set() or self._hangup is not None or self._ws.closed:
            return False
        event = {"type": "session.update", "session": {"instructions": instructions}}
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await self._ws.send_str(json.dumps(event))
        except (TimeoutError, aiohttp.ClientError, OSError, ConnectionError):
            return False
        return True

    async def wait_closed(self) -> str:
        """Return once the channel closed: ``upstream_closed``/``upstream_error`` or the hang-up."""
        await self._closed.wait()
        return self._reason or UPSTREAM_CLOSED

    async def _close(self) -> None:
        try:
            if self._reader is not asyncio.current_task():
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reader
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                    await self._ws.close()
        finally:
            if self._on_end is not None:
                self._on_end()
            if self.capture is not None:
                await self.capture.close()
            self._closed.set()

    def _deliver(self, data: str) -> None:
        # The type is read first (msgspec): only capture's events and errors are decoded.
        event = decode_event(data, _READ_EVENTS)
        if event is None:
            return
        if event.get("type") == "error":
            log_control_error(event, self.upstream_call_id)
        elif self.capture is not None:
            self.capture.feed(event)

    async def _read(self) -> None:
        reason = UPSTREAM_CLOSED
        try:
            while True:
                message = await self._ws.receive()
                if message.type == aiohttp.WSMsgType.TEXT:
                    self._deliver(message.data)
                elif message.type in _CLOSING:
                    break
                elif message.type == aiohttp.WSMsgType.ERROR:
                    reason = UPSTREAM_ERROR
                    break
        except (aiohttp.ClientError, OSError):
            reason = UPSTREAM_ERROR
        if self._reason is None:
            self._reason = reason
            _logger.info(
                "realtime.voicelive_channel_closed",
                rtc_call_id=self.upstream_call_id,
                session_id=self._session_id,
                reason=reason,
                close_code=self._ws.close_code,
            )
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                await self._ws.close()
        if self.capture is not None:
            await self.capture.close()
        self._closed.set()
