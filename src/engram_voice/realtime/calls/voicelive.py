"""Calls on Azure AI Voice Live: the service holds the WebRTC control WebSocket for the call.

:meth:`VoiceLiveCalls.open` opens ``wss://{resource}/voice-live/realtime/calls?api-version=…
&model=…`` with the configured credential (``api-key`` header, or ``Authorization: Bearer``
for Entra ID), sends ``rtc.call.sdp.create`` with the browser's offer and the agent's
session (:func:`~engram_voice.realtime.voicelive_session.voicelive_session`), and reads
control events until ``rtc.call.sdp.created``. The upgrade is bounded by
``VOICELIVE_CONNECT_TIMEOUT_SECONDS``, the answer by ``VOICELIVE_ANSWER_TIMEOUT_SECONDS``.
A 401/403 at the upgrade makes the credential source re-read once (Key Vault rotation),
as minting does. Failures become the service's errors, never an upstream body or key.

The socket is then the call: :class:`VoiceLiveCall` keeps reading control events (an
``error`` is logged; every event is fed to the call's
:class:`~engram_voice.realtime.calls.capture.TurnCapture`, which keeps transcripts only if
the channel carries them — Voice Live documents them on the data channel only, so the
session counts as captured from the first transcript the channel delivers),
:meth:`VoiceLiveCall.hangup` closes it (that ends the media session), and
:meth:`VoiceLiveCall.wait_closed` returns ``upstream_closed`` or ``upstream_error`` when
Voice Live closes or drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import structlog

from engram_voice.agents import Agent
from engram_voice.credentials import CredentialSource
from engram_voice.errors import (
    AppError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    ValidationError,
)
from engram_voice.realtime.calls.capture import (
    CAPTURED_EVENTS,
    CaptureSink,
    TurnCapture,
    UsageHook,
)
from engram_voice.realtime.calls.sideband import decode_event
from engram_voice.realtime.settings import VoiceLiveSettings
from engram_voice.realtime.voicelive_session import voicelive_session
from engram_voice.realtime.voicelive_socket import (
    CLOSE_TIMEOUT_SECONDS,
    HEARTBEAT_SECONDS,
    open_control_socket,
)

__all__ = [
    "UPSTREAM_CLOSED",
    "UPSTREAM_ERROR",
    "VoiceLiveCall",
    "VoiceLiveCalls",
    "control_session",
]

NAME = "voice-live"
UPSTREAM_CLOSED = "upstream_closed"
UPSTREAM_ERROR = "upstream_error"
_SESSION_EVENTS = frozenset({"session.created", "session.updated"})
_CLOSING = frozenset({aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED})
_READ_EVENTS = CAPTURED_EVENTS | {"error"}
"""What the control reader decodes in full: capture's events and ``error`` (logged)."""
_logger = structlog.get_logger("engram_voice.realtime.calls")


def control_session() -> aiohttp.ClientSession:
    """Return the HTTP session that holds control channels: no pool limit, no total timeout.

    Each held channel keeps one connection for the call's life, so the shared upstream
    pool (with its connection limit and request deadline) would cap or cut live calls.
    """
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=None),
    )


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
            _log_control_error(event, self.upstream_call_id)
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


class VoiceLiveCalls:
    """The ``voice-live`` :class:`~engram_voice.realtime.calls.upstream.CallUpstream`."""

    name = NAME

    def __init__(
        self,
        *,
        settings: VoiceLiveSettings,
        credentials: CredentialSource,
        session: aiohttp.ClientSession,
        heartbeat: float = HEARTBEAT_SECONDS,
        on_usage: UsageHook | None = None,
    ) -> None:
        self._on_usage = on_usage
        self._settings = settings
        self._credentials = credentials
        self._session = session
        self._heartbeat = heartbeat
        self._url = settings.calls_url()

    async def open(self, *, agent: Agent, sdp_offer: str, session_id: str) -> VoiceLiveCall:
        """Open the control channel, relay the offer with ``agent``'s session, return the call."""
        ws = await open_control_socket(
            self._session, self._settings, self._credentials, heartbeat=self._heartbeat
        )
        try:
            event = {
                "type": "rtc.call.sdp.create",
                "sdp_offer": sdp_offer,
                "session": voicelive_session(agent),
            }
            async with asyncio.timeout(self._settings.answer_timeout):
                await ws.send_str(json.dumps(event))
                answer, call_id = await self._answer(ws, session_id)
        except BaseException as exc:
            await _close_quietly(ws)
            if isinstance(exc, TimeoutError):
                _logger.warning(
                    "realtime.voicelive_answer_timeout",
                    host=self._settings.host,
                    session_id=session_id,
                    timeout_s=self._settings.answer_timeout,
                )
                raise UpstreamTimeoutError(
                    f"Voice Live did not answer the call within {self._settings.answer_timeout:g}s."
                ) from exc
            if isinstance(exc, aiohttp.ClientError | OSError):
                raise UpstreamUnavailableError(
                    "Voice Live's control channel failed during call setup.", retry_after=1
                ) from exc
            raise
        capture = TurnCapture(
            upstream=NAME, call_id=call_id, session_id=session_id, on_usage=self._on_usage
        )
        return VoiceLiveCall(
            ws=ws,
            sdp_answer=answer,
            upstream_call_id=call_id,
            session_id=session_id,
            capture=capture,
        )

    async def _answer(
        self, ws: aiohttp.ClientWebSocketResponse, session_id: str
    ) -> tuple[str, str]:
        """Read control events until the answer; raise the mapped error of a failure."""
        while True:
            message = await ws.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                if message.type == aiohttp.WSMsgType.BINARY:
                    continue
                _logger.warning(
                    "realtime.voicelive_closed_before_answer",
                    host=self._settings.host,
                    session_id=session_id,
                    close_code=ws.close_code,
                )
                raise UpstreamUnavailableError(
                    "Voice Live closed the control channel before answering the call.",
                    retry_after=1,
                )
            event = _parsed(message.data)
            kind = event.get("type")
            if kind == "rtc.call.sdp.created":
                answer, call_id = event.get("sdp_answer"), event.get("rtc_call_id")
                if not isinstance(answer, str) or not answer.startswith("v=0"):
                    raise UpstreamRejectedError(
                        "Voice Live answered the call without an SDP answer."
                    )
                return answer, call_id if isinstance(call_id, str) and call_id else "unknown"
            if kind in _SESSION_EVENTS:
                _log_session(event, session_id)
            elif kind == "rtc.call.error":
                raise _rtc_call_error(event, session_id)
            elif kind == "error":
                code = _error_field(event, "code")
                _logger.warning("realtime.voicelive_error_event", session_id=session_id, code=code)
                raise UpstreamRejectedError(
                    f"Voice Live refused to set up the call (error {code or 'unknown'})."
                )


def _parsed(data: str) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}


def _error_field(event: dict[str, Any], name: str) -> str | None:
    error = event.get("error")
    value = error.get(name) if isinstance(error, dict) else None
    return value[:64] if isinstance(value, str) else None


def _rtc_call_error(event: dict[str, Any], session_id: str) -> AppError:
    """Map ``rtc.call.error``: a refused offer is the caller's 400, a server error a 503."""
    kind, code = _error_field(event, "type"), _error_field(event, "code")
    _logger.warning(
        "realtime.voicelive_rtc_call_error", session_id=session_id, type=kind, code=code
    )
    if kind == "server_error":
        return UpstreamUnavailableError(
            f"Voice Live could not set up the call (server_error {code or 'unknown'}).",
            retry_after=1,
        )
    if code is not None and "sdp" in code.lower():
        message = f"Voice Live could not use the SDP offer ({code})"
        return ValidationError(
            f"Invalid request: sdp_offer: {message}",
            extra={"errors": [{"field": "sdp_offer", "message": message}]},
        )
    return UpstreamRejectedError(
        f"Voice Live rejected the call ({kind or 'error'} {code or 'unknown'}); check the "
        "agent's Voice Live session options."
    )


def _log_session(event: dict[str, Any], session_id: str) -> None:
    """Log ``session.created``/``session.updated`` without the instructions."""
    session = event.get("session") if isinstance(event.get("session"), dict) else {}
    voice = session.get("voice") if isinstance(session, dict) else None
    _logger.info(
        "realtime.voicelive_session",
        kind=event.get("type"),
        session_id=session_id,
        upstream_session=session.get("id") if isinstance(session, dict) else None,
        model=session.get("model") if isinstance(session, dict) else None,
        voice=voice.get("name") if isinstance(voice, dict) else voice,
    )


def _log_control_error(event: dict[str, Any], rtc_call_id: str) -> None:
    """Log an ``error`` event arriving on a live call's channel."""
    _logger.warning(
        "realtime.voicelive_call_error",
        rtc_call_id=rtc_call_id,
        code=_error_field(event, "code"),
        type=_error_field(event, "type"),
    )


async def _close_quietly(ws: aiohttp.ClientWebSocketResponse) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
            await ws.close()
