"""Calls on Azure OpenAI: an ephemeral key minted and spent server-side, hangup over REST.

:meth:`AzureOpenAICalls.open` mints a single-use key with the agent's session (the same
:class:`UpstreamMinter` as ``POST /realtime/sessions``: endpoint failover, Key Vault
re-read on 401), posts the browser's offer to ``{endpoint}/openai/v1/realtime/calls``
with ``Authorization: Bearer ek_...`` and reads the call id from ``Location``. The key
never leaves this module. The call it returns
(:class:`~engram_voice.realtime.calls.azure_openai_call.AzureOpenAICall`, re-exported
here) hangs up with the service's own credential (:meth:`AzureOpenAICalls.post_hangup`).

When the upstream was built with ``sideband=True`` each call also holds a sideband and a
transcript capture (:meth:`AzureOpenAICalls.hold_sideband`): in the service's capture
process when it runs and is ready, else on this loop.
"""

from __future__ import annotations

import math
import time
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import structlog

from engram_voice.agents import Agent
from engram_voice.credentials import CredentialSource
from engram_voice.errors import (
    AppError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamRejectedError,
    UpstreamThrottledError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    ValidationError,
)
from engram_voice.httppolicy import is_transient, parse_retry_after
from engram_voice.realtime.calls.azure_openai_call import SIDEBAND_RECONNECTS, AzureOpenAICall
from engram_voice.realtime.calls.capture import (
    CAPTURED_EVENTS,
    TurnCapture,
    UsageHook,
)
from engram_voice.realtime.calls.capture_process import CaptureProcess
from engram_voice.realtime.calls.capture_proxy import RemoteCapture, RemoteSideband
from engram_voice.realtime.calls.sideband import Sideband
from engram_voice.realtime.endpoints import Endpoint
from engram_voice.realtime.session_config import client_secret_request
from engram_voice.realtime.upstream import UpstreamMinter

__all__ = ["AzureOpenAICall", "AzureOpenAICalls"]

NAME = "azure-openai"
_logger = structlog.get_logger("engram_voice.realtime.calls")
_AUTH_STATUSES = frozenset({401, 403})


class AzureOpenAICalls:
    """The ``azure-openai`` :class:`CallUpstream`."""

    name = NAME

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        minter: UpstreamMinter,
        credentials: CredentialSource,
        deployment: str,
        ttl_seconds: int,
        webrtc_filter: bool,
        request_timeout: float,
        connect_timeout: float,
        sideband: bool = False,
        sideband_session: aiohttp.ClientSession | None = None,
        on_usage: UsageHook | None = None,
        capture_process: CaptureProcess | None = None,
    ) -> None:
        self._sideband = sideband
        self._capture_process = capture_process
        self._sideband_session = sideband_session or session
        self.sideband_timeout = max(connect_timeout, request_timeout)
        self._on_usage = on_usage
        self._session = session
        self._minter = minter
        self._credentials = credentials
        self._deployment = deployment
        self._ttl = ttl_seconds
        self._webrtc_filter = webrtc_filter
        self._timeout = aiohttp.ClientTimeout(total=request_timeout, sock_connect=connect_timeout)

    async def open(self, *, agent: Agent, sdp_offer: str, session_id: str) -> AzureOpenAICall:
        """Mint a key for ``agent``, post the offer with it, and return the call."""
        payload = client_secret_request(agent, deployment=self._deployment, ttl_seconds=self._ttl)
        minted = await self._minter.mint(payload)
        endpoint = minted.endpoint
        url = endpoint.calls_url(webrtc_filter=self._webrtc_filter)
        headers = {"Authorization": f"Bearer {minted.value}", "Content-Type": "application/sdp"}
        status, answer_headers, body = await self._request(url, headers, sdp_offer.encode())
        if status != 201:  # noqa: PLR2004 - Azure's one success status for /calls
            raise _call_error(status, answer_headers, endpoint.host, session_id)
        call_id = _call_id(answer_headers.get("Location"))
        try:
            answer = body.decode("utf-8")
        except UnicodeDecodeError:
            answer = ""
        if call_id is None or not answer.startswith("v=0"):
            _logger.warning(
                "realtime.call_bad_answer", endpoint=endpoint.host, session_id=session_id
            )
            if call_id is not None:  # a call Azure opened but we cannot use: end it now
                await self.post_hangup(endpoint, call_id)
            raise UpstreamError("Azure OpenAI answered the call with an unreadable answer.")
        capture: TurnCapture | RemoteCapture | None = None
        sideband: Sideband | RemoteSideband | None = None
        if self._sideband:
            capture, sideband = await self.hold_sideband(endpoint, call_id, session_id)
        return AzureOpenAICall(
            sdp_answer=answer,
            upstream_call_id=call_id,
            endpoint=endpoint,
            owner=self,
            capture=capture,
            sideband=sideband,
        )

    async def hold_sideband(
        self, endpoint: Endpoint, call_id: str, session_id: str
    ) -> tuple[TurnCapture | RemoteCapture, Sideband | RemoteSideband]:
        """Join the call's sideband: in the capture process when it runs, else on this loop."""
        if self._capture_process is not None:
            held = await self._capture_process.hold(
                endpoint=endpoint,
                call_id=call_id,
                session_id=session_id,
                connect_timeout=self.sideband_timeout,
                reconnects=SIDEBAND_RECONNECTS,
                on_usage=self._on_usage,
            )
            if held is not None:
                return held
        capture = TurnCapture(
            upstream=NAME, call_id=call_id, session_id=session_id, on_usage=self._on_usage
        )
        sideband = Sideband(
            http=self._sideband_session,
            endpoint=endpoint,
            call_id=call_id,
            credentials=self._credentials,
            connect_timeout=self.sideband_timeout,
            on_event=capture.feed,
            events=CAPTURED_EVENTS,
            reconnects=SIDEBAND_RECONNECTS,
        )
        sideband.start()
        return capture, sideband

    async def post_hangup(self, endpoint: Endpoint, call_id: str) -> None:
        """End ``call_id`` at ``endpoint``; a refused credential is re-read once; never raises."""
        url = f"{endpoint.url}/openai/v1/realtime/calls/{quote(call_id, safe='')}/hangup"
        started = time.monotonic()
        try:
            credential = await self._credentials.get()
            status, _, _ = await self._request(url, credential.headers(), b"")
            if status in _AUTH_STATUSES and await self._credentials.invalidate(credential):
                credential = await self._credentials.get()
                status, _, _ = await self._request(url, credential.headers(), b"")
        except AppError as exc:
            _logger.warning(
                "realtime.call_hangup_failed", endpoint=endpoint.host, call=call_id, code=exc.code
            )
            return
        outcome = "ok" if status < 300 else ("already_ended" if status == 404 else f"http_{status}")  # noqa: PLR2004
        log = _logger.info if outcome != f"http_{status}" else _logger.warning
        log(
            "realtime.call_hangup_sent",
            endpoint=endpoint.host,
            call=call_id,
            outcome=outcome,
            latency_ms=round((time.monotonic() - started) * 1000, 1),
        )

    async def _request(
        self, url: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any, bytes]:
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=self._timeout
            ) as response:
                return response.status, response.headers, await response.read()
        except TimeoutError as exc:
            raise UpstreamTimeoutError("Azure OpenAI did not answer the call in time.") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailableError(
                "Azure OpenAI could not be reached.", retry_after=1
            ) from exc


def _call_id(location: str | None) -> str | None:
    """Return the call id at the end of a ``Location: .../realtime/calls/{call_id}``."""
    if not location:
        return None
    path = urlsplit(location).path.rstrip("/")
    head, _, call_id = path.rpartition("/")
    return call_id if head.endswith("/realtime/calls") and call_id else None


def _call_error(status: int, headers: Any, host: str, session_id: str) -> AppError:
    """Map a refused ``/calls`` answer to the service's errors (never the upstream body)."""
    _logger.warning("realtime.call_refused", endpoint=host, status=status, session_id=session_id)
    if status == 400:  # noqa: PLR2004 - the key was just accepted: Azure refused the offer
        message = "Azure could not use the SDP offer"
        return ValidationError(
            f"Invalid request: sdp_offer: {message}",
            extra={"errors": [{"field": "sdp_offer", "message": message}]},
        )
    if status in _AUTH_STATUSES:
        return UpstreamAuthError(f"Azure OpenAI at {host} refused the call's key ({status}).")
    if status == 429:  # noqa: PLR2004
        seconds = parse_retry_after(headers.get("Retry-After"), now=time.time())
        return UpstreamThrottledError(
            "Azure OpenAI is throttling calls; try again shortly.",
            retry_after=max(1, math.ceil(seconds)) if seconds is not None else 1,
        )
    if is_transient(status):
        return UpstreamUnavailableError(f"Azure OpenAI failed the call ({status}).", retry_after=1)
    return UpstreamRejectedError(
        f"Azure OpenAI at {host} rejected the call ({status}); check the deployment and region."
    )
