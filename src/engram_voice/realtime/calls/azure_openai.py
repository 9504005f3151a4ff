"""Calls on Azure OpenAI: an ephemeral key minted and spent server-side, hangup over REST.

:meth:`AzureOpenAICalls.open` mints a single-use key with the agent's session (the same
:class:`UpstreamMinter` as ``POST /realtime/sessions``: endpoint failover, Key Vault
re-read on 401), posts the browser's offer to ``{endpoint}/openai/v1/realtime/calls``
with ``Authorization: Bearer ek_...`` and reads the call id from ``Location``. The key
never leaves this module. :meth:`AzureOpenAICall.hangup` posts
``.../calls/{call_id}/hangup`` with the service's own credential.

Each call holds a sideband (:mod:`engram_voice.realtime.calls.sideband`) when the upstream
was built with ``sideband=True``: its events feed the call's
:class:`~engram_voice.realtime.calls.capture.TurnCapture` (transcripts to the memory
queue once :meth:`AzureOpenAICall.bind_owner` named the store; ``response.done`` usage to
the ``on_usage`` hook). :meth:`wait_closed` returns the hang-up's reason, or
``upstream_closed`` when the sideband learnt that the call ended upstream (the browser
left). The hang-up closes the sideband and flushes the capture.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
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
from engram_voice.realtime.calls.capture import (
    CAPTURED_EVENTS,
    CaptureSink,
    TurnCapture,
    UsageHook,
)
from engram_voice.realtime.calls.capture_process import CaptureProcess
from engram_voice.realtime.calls.capture_proxy import RemoteCapture, RemoteSideband
from engram_voice.realtime.calls.sideband import UPSTREAM_CLOSED, Sideband
from engram_voice.realtime.endpoints import Endpoint
from engram_voice.realtime.session_config import client_secret_request
from engram_voice.realtime.upstream import UpstreamMinter

__all__ = ["AzureOpenAICall", "AzureOpenAICalls"]

NAME = "azure-openai"
SIDEBAND_RECONNECTS = 1
"""The sideband reopens once if it drops while the call lives."""
_logger = structlog.get_logger("engram_voice.realtime.calls")
_AUTH_STATUSES = frozenset({401, 403})


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
