"""Calls on Azure AI Voice Live: the service holds the WebRTC control WebSocket for the call.

:meth:`VoiceLiveCalls.open` opens ``wss://{resource}/voice-live/realtime/calls?api-version=…
&model=…`` with the configured credential (``api-key`` header, or ``Authorization: Bearer``
for Entra ID), sends ``rtc.call.sdp.create`` with the browser's offer and the agent's
session (:func:`~engram_voice.realtime.voicelive_session.voicelive_session`), and reads
control events until ``rtc.call.sdp.created``. The upgrade is bounded by
``VOICELIVE_CONNECT_TIMEOUT_SECONDS``, the answer by ``VOICELIVE_ANSWER_TIMEOUT_SECONDS``.
A 401/403 at the upgrade makes the credential source re-read once (Key Vault rotation),
as minting does. Failures become the service's errors
(:mod:`~engram_voice.realtime.calls.voicelive_events`), never an upstream body or key.

The socket is then the call: :class:`~engram_voice.realtime.calls.voicelive_call.VoiceLiveCall`
(re-exported here) holds and reads it until the hang-up or Voice Live closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp
import structlog

from engram_voice.agents import Agent
from engram_voice.credentials import CredentialSource
from engram_voice.errors import (
    UpstreamRejectedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from engram_voice.realtime.calls.capture import TurnCapture, UsageHook
from engram_voice.realtime.calls.voicelive_call import (
    UPSTREAM_CLOSED,
    UPSTREAM_ERROR,
    VoiceLiveCall,
)
from engram_voice.realtime.calls.voicelive_events import (
    error_field,
    log_session,
    parse_event,
    rtc_call_error,
)
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
_SESSION_EVENTS = frozenset({"session.created", "session.updated"})
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
            event = parse_event(message.data)
            kind = event.get("type")
            if kind == "rtc.call.sdp.created":
                answer, call_id = event.get("sdp_answer"), event.get("rtc_call_id")
                if not isinstance(answer, str) or not answer.startswith("v=0"):
                    raise UpstreamRejectedError(
                        "Voice Live answered the call without an SDP answer."
                    )
                return answer, call_id if isinstance(call_id, str) and call_id else "unknown"
            if kind in _SESSION_EVENTS:
                log_session(event, session_id)
            elif kind == "rtc.call.error":
                raise rtc_call_error(event, session_id)
            elif kind == "error":
                code = error_field(event, "code")
                _logger.warning("realtime.voicelive_error_event", session_id=session_id, code=code)
                raise UpstreamRejectedError(
                    f"Voice Live refused to set up the call (error {code or 'unknown'})."
                )


async def _close_quietly(ws: aiohttp.ClientWebSocketResponse) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
            await ws.close()
