"""The Azure OpenAI sideband: the service's own WebSocket onto a WebRTC call it set up.

:class:`Sideband` opens ``wss://{endpoint}/openai/v1/realtime?call_id=…`` with the
server's credential (the minter's :class:`CredentialSource`: ``api-key`` or Entra
``Authorization: Bearer``; one 401/403 makes the source re-read, as minting does), each
upgrade bounded by the connect timeout. It does not wait for ``session.created`` (the
sideband may never send it): each text message whose ``type`` is in ``events`` (every
type when ``events`` is None) is decoded and handed to ``on_event``. The sideband carries
the call's full event stream, about 15 messages per conversation turn, of which capture
reads 5, so :func:`decode_event` reads the ``type`` first (msgspec, no objects built) and
decodes the rest only for the wanted ones. ``permessage-deflate`` is not offered: the
events are small, and inflating each one costs service CPU on the event loop that mints.
If the socket drops while the call lives it reconnects once; a reconnect refused with
404 means the call is over upstream (:attr:`ended` is set with ``upstream_closed``).
:meth:`close` (the call's hang-up) closes it within a bound. Failures are logged as
``realtime.sideband_*`` events and counted in ``engram_realtime_sideband_total``; they
never end the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Container
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec
import structlog

from engram_voice.credentials import CredentialSource, UpstreamCredential
from engram_voice.realtime.calls.metrics import SIDEBAND_EVENTS
from engram_voice.realtime.endpoints import Endpoint

__all__ = ["SIDEBAND_EVENTS", "Sideband", "decode_event", "sideband_url"]

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
HEARTBEAT_SECONDS = 30.0
CLOSE_SECONDS = 5.0
UPSTREAM_CLOSED = "upstream_closed"
_AUTH_STATUSES = frozenset({401, 403})
_NOT_FOUND = 404
_CLOSING = frozenset({aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED})
_logger = structlog.get_logger("engram_voice.realtime.calls")


class _Head(msgspec.Struct):
    """An event's ``type`` alone: decoding it skips the rest without building objects."""

    type: Any = None


_HEAD = msgspec.json.Decoder(_Head)
_EVENT = msgspec.json.Decoder(dict[str, Any])


def decode_event(data: str | bytes, events: Container[str] | None = None) -> dict[str, Any] | None:
    """Return the JSON object in ``data`` if its ``type`` is in ``events`` (None: any), else None.

    Never raises: what is not a JSON object, or not wanted, is None. msgspec refuses a
    few inputs ``json`` accepts (``NaN``, numbers beyond a float, escaped lone
    surrogates); those take the ``json`` path, so the result never depends on the parser.
    """
    try:
        if events is not None:
            kind = _HEAD.decode(data).type
            if not isinstance(kind, str) or kind not in events:
                return None
        return _EVENT.decode(data)
    except (ValueError, RecursionError):  # msgspec.DecodeError is a ValueError
        return _decode_with_json(data, events)


def _decode_with_json(data: str | bytes, events: Container[str] | None) -> dict[str, Any] | None:
    try:
        event = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(event, dict):
        return None
    kind = event.get("type")
    if events is not None and (not isinstance(kind, str) or kind not in events):
        return None
    return event


def sideband_url(endpoint: Endpoint, call_id: str) -> str:
    """Return the sideband WebSocket URL of ``call_id`` on ``endpoint`` (ws/wss)."""
    base = endpoint.url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return f"{base}/openai/v1/realtime?call_id={quote(call_id, safe='')}"


class _RefusedError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class Sideband:
    """Holds one call's sideband, reconnecting once, and feeds its events to ``on_event``."""

    def __init__(
        self,
        *,
        http: aiohttp.ClientSession,
        endpoint: Endpoint,
        call_id: str,
        credentials: CredentialSource,
        connect_timeout: float,
        on_event: Callable[[dict[str, Any]], None],
        events: Container[str] | None = None,
        reconnects: int = 1,
    ) -> None:
        self._http = http
        self._endpoint = endpoint
        self._call_id = call_id
        self._credentials = credentials
        self._connect_timeout = connect_timeout
        self._on_event = on_event
        self._events = events
        self._reconnects = reconnects
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.connected = asyncio.Event()
        """Set once the first upgrade succeeded."""
        self.ended = asyncio.Event()
        """Set when the sideband learnt that the call is over upstream."""
        self.state = "new"
        """new, connected, reconnecting, lost, call_over or closed."""
        self.on_state: Callable[[str], None] | None = None
        """Told ``connected``, ``dropped`` (reopening) and ``lost`` (the capture's authority
        follows the sideband)."""
        self.on_ended: Callable[[], None] | None = None
        """Called once :attr:`ended` is set (the call's owner waits on one event, not two)."""

    def start(self) -> None:
        """Start holding the sideband in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"sideband-{self._call_id}")

    def stop_reconnecting(self) -> None:
        """Keep reading, but do not reopen once the upstream closes (a hang-up is under way)."""
        self._closing = True

    async def finish(self, grace: float = 2.0) -> None:
        """Read what the upstream still sends until it closes (``grace`` at most), then close."""
        self._closing = True
        task = self._task
        if task is not None and not task.done():
            await asyncio.wait({task}, timeout=grace)
        await self.close()

    async def close(self) -> None:
        """Close the socket and stop (idempotent, bounded)."""
        self._closing = True
        ws, task = self._ws, self._task
        if ws is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_SECONDS):
                    await ws.close()
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.state not in {"lost", "call_over"}:
            self.state = "closed"

    async def send(self, event: dict[str, Any]) -> bool:
        """Send one client event (e.g. ``session.update``); False when not connected."""
        ws = self._ws
        if ws is None or ws.closed or self.state != "connected":
            return False
        try:
            async with asyncio.timeout(CLOSE_SECONDS):
                await ws.send_str(json.dumps(event))
        except (TimeoutError, aiohttp.ClientError, OSError, ConnectionError):
            return False
        return True

    def stopping(self) -> bool:
        """Return True once :meth:`close` was called."""
        return self._closing

    async def _run(self) -> None:
        attempts = 1 + self._reconnects
        for attempt in range(attempts):
            if self._closing:
                return
            try:
                self._ws = await self._connect()
            except _RefusedError as refused:
                if refused.status == _NOT_FOUND and self.connected.is_set():
                    self._call_over()
                    return
                SIDEBAND_EVENTS.labels("refused").inc()
                _logger.warning(
                    "realtime.sideband_refused", call=self._call_id, status=refused.status,
                    endpoint=self._endpoint.host, attempt=attempt + 1,
                )  # fmt: skip
                continue
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                SIDEBAND_EVENTS.labels("failed").inc()
                _logger.warning(
                    "realtime.sideband_failed", call=self._call_id, error=type(exc).__name__,
                    endpoint=self._endpoint.host, attempt=attempt + 1,
                )  # fmt: skip
                continue
            except Exception:  # a credential source failure: logged, the call goes on
                SIDEBAND_EVENTS.labels("failed").inc()
                _logger.exception("realtime.sideband_failed", call=self._call_id)
                continue
            self.state = "connected"
            self.connected.set()
            self._tell("connected")
            SIDEBAND_EVENTS.labels("connected" if attempt == 0 else "reconnected").inc()
            _logger.info(
                "realtime.sideband_connected", call=self._call_id, endpoint=self._endpoint.host,
                attempt=attempt + 1,
            )  # fmt: skip
            close_code = await self._read(self._ws)
            if self.stopping():
                return
            SIDEBAND_EVENTS.labels("dropped").inc()
            _logger.info("realtime.sideband_dropped", call=self._call_id, close_code=close_code)
            self.state = "reconnecting"
            self._tell("dropped")  # nobody hears the call until it is reopened
        if not self.stopping():
            self.state = "lost"
            SIDEBAND_EVENTS.labels("lost").inc()
            _logger.warning("realtime.sideband_lost", call=self._call_id)
            self._tell("lost")

    def _tell(self, state: str) -> None:
        if self.on_state is not None:
            try:
                self.on_state(state)
            except Exception:
                _logger.exception("realtime.sideband_state_hook_failed", state=state)

    def _call_over(self) -> None:
        self.state = "call_over"
        SIDEBAND_EVENTS.labels("call_over").inc()
        _logger.info("realtime.sideband_call_over", call=self._call_id)
        self.ended.set()
        if self.on_ended is not None:
            self.on_ended()

    async def _connect(self) -> aiohttp.ClientWebSocketResponse:
        credential = await self._credentials.get()
        try:
            return await self._upgrade(credential)
        except _RefusedError as refused:
            if refused.status in _AUTH_STATUSES and await self._credentials.invalidate(credential):
                _logger.info("realtime.sideband_credential_reread", status=refused.status)
                return await self._upgrade(await self._credentials.get())
            raise

    async def _upgrade(self, credential: UpstreamCredential) -> aiohttp.ClientWebSocketResponse:
        try:
            async with asyncio.timeout(self._connect_timeout):
                return await self._http.ws_connect(
                    sideband_url(self._endpoint, self._call_id),
                    headers=credential.headers(),
                    heartbeat=HEARTBEAT_SECONDS,
                    max_msg_size=MAX_MESSAGE_BYTES,
                    compress=0,
                    timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_SECONDS),
                )
        except aiohttp.WSServerHandshakeError as exc:
            raise _RefusedError(exc.status) from None

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> int | None:
        receive, deliver, text = ws.receive, self._deliver, aiohttp.WSMsgType.TEXT
        try:
            while True:
                message = await receive()
                if message.type is text:
                    deliver(message.data)
                elif message.type in _CLOSING or message.type is aiohttp.WSMsgType.ERROR:
                    break
        except (aiohttp.ClientError, OSError):
            pass
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_SECONDS):
                await ws.close()
        return ws.close_code

    def _deliver(self, data: str) -> None:
        event = decode_event(data, self._events)
        if event is not None:
            self._on_event(event)
