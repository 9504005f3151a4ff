"""One Voice Live control WebSocket after the upgrade: signalling, then the call's life.

The connection waits (bounded) for the client's ``rtc.call.sdp.create``; a missing or
unparseable offer, or a session Voice Live would refuse (a bad voice object), is answered
with ``rtc.call.error`` and the socket stays open for another try. On success it sends
``session.created``, ``session.updated`` (when a ``session`` came inline, applied first)
and ``rtc.call.sdp.created``; afterwards client events on the socket reach the call like
those on its data channel (``session.update`` -> ``session.updated`` or ``error``).

The socket and the peer end together: the socket closing closes the peer, the peer
closing first closes the socket (1000), and the maximum connection length force-closes
both. Injected faults (:class:`~engram_voice.emulator.faults.VoiceLiveFault`) are played
here: ``rtc_call_error`` (before ``session.created``), ``error_event`` (instead of the
answer), ``slow_answer``, ``never_answer``, ``drop_mid_call`` (1011 after the answer,
``latency_ms`` later) and ``mirror_events``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
import structlog
from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect

from engram_voice.emulator.callmode import voice_live_mode
from engram_voice.emulator.events import EventFactory, new_id
from engram_voice.emulator.faults import VoiceLiveFault
from engram_voice.emulator.keys import AuthSlot
from engram_voice.emulator.peer import OfferRejectedError, RealtimeCall
from engram_voice.emulator.schemas import VoiceLiveFaultMode
from engram_voice.emulator.state import EmulatorState
from engram_voice.emulator.voicelive_session import (
    SessionRejectedError,
    default_session,
    merged_session,
)

__all__ = ["OFFER_WAIT_SECONDS", "VoiceLiveConnection"]

OFFER_WAIT_SECONDS = 30.0
"""How long a connection may stay open without a successful ``rtc.call.sdp.create``."""
_CLOSE_WAIT_SECONDS = 5.0
_MAX_SDP_CHARS = 64 * 1024
_MAX_MESSAGE_CHARS = 1_000_000
_SEND_ERRORS = (WebSocketDisconnect, RuntimeError, OSError)
_FAULT_MODES: tuple[VoiceLiveFaultMode, ...] = (
    "rtc_call_error",
    "error_event",
    "drop_mid_call",
    "slow_answer",
    "never_answer",
    "mirror_events",
)
_logger = structlog.get_logger("engram_voice.emulator")
State = Literal["waiting_offer", "negotiating", "answered", "failed", "ended"]


@dataclass(frozen=True)
class _Close:
    code: int
    reason: str


class VoiceLiveConnection:
    """The emulator's side of one Voice Live control channel (and the call it sets up)."""

    def __init__(
        self,
        socket: WebSocket[Any, Any, Any],
        emulator: EmulatorState,
        *,
        model: str | None,
        agent: str | None,
        api_version: str,
        auth: AuthSlot,
    ) -> None:
        self.model, self.agent, self.api_version, self.auth = model, agent, api_version, auth
        self.rtc_call_id: str | None = None
        self.state: State = "waiting_offer"
        self.ended_reason: str | None = None
        self.session_received: Any = None
        self.session_updates: list[Any] = []
        self.session = default_session(model, agent)
        self.errors: list[str] = []
        self.events_sent: Counter[str] = Counter()
        self.client_events: Counter[str] = Counter()
        self.mirror = emulator.config.voicelive_mirror_events
        self.answer_withheld = False
        self.opened_at = time.time()
        self.ended_at: float | None = None
        self.call: RealtimeCall | None = None
        self._socket = socket
        self._emulator = emulator
        self._events = EventFactory(new_id("conv"))
        self._outbox: asyncio.Queue[dict[str, Any] | _Close] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()

    def describe(self) -> dict[str, Any]:
        """Return this connection's record as plain data (never a credential)."""
        return {
            "rtc_call_id": self.rtc_call_id,
            "model": self.model,
            "agent": self.agent,
            "api_version": self.api_version,
            "auth": self.auth,
            "session": self.session_received,
            "session_updates": list(self.session_updates),
            "voice": self.session.get("voice"),
            "state": self.state,
            "ended_reason": self.ended_reason,
            "errors": list(self.errors),
            "mirror_events": self.mirror,
            "answer_withheld": self.answer_withheld,
            "events_sent": dict(self.events_sent),
            "client_events": dict(self.client_events),
            "opened_at": self.opened_at,
            "ended_at": self.ended_at,
            "peer": None if self.call is None else self.call.describe(),
        }

    async def run(self) -> None:
        """Serve the accepted socket until it or its call ends; then close both."""
        await self._socket.accept()
        writer = asyncio.create_task(self._write(), name="voicelive-writer")
        self._spawn(self._read(), "voicelive-reader")
        self._spawn(self._cap(), "voicelive-cap")
        try:
            await writer
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=_CLOSE_WAIT_SECONDS)
            if self.call is not None:
                await self.call.close(self.ended_reason or "control_closed")
            self.ended_at = time.time()
            if self.state != "failed":
                self.state = "ended"
            self._emulator.counters["voicelive_outcomes"][f"ended:{self.ended_reason}"] += 1
            _logger.info(
                "emulator.voicelive_ended", rtc_call_id=self.rtc_call_id, reason=self.ended_reason
            )

    def end(self, reason: str, *, code: int = 1000) -> None:
        """End the connection (idempotent): the socket closes with ``code``, the peer too."""
        if self.ended_reason is not None:
            return
        self.ended_reason = reason
        self._outbox.put_nowait(_Close(code, reason))

    # -- socket I/O ----------------------------------------------------------------------

    def _emit(self, event: dict[str, Any]) -> None:
        if self.ended_reason is None:
            self._outbox.put_nowait(event)

    async def _write(self) -> None:
        while True:
            item = await self._outbox.get()
            try:
                if isinstance(item, _Close):
                    await self._socket.close(code=item.code, reason=item.reason)
                    return
                await self._socket.send_text(msgspec.json.encode(item).decode())
                self.events_sent[item["type"]] += 1
            except _SEND_ERRORS:
                if isinstance(item, _Close):
                    return
                self.end("control_closed")

    async def _read(self) -> None:
        deadline = time.monotonic() + OFFER_WAIT_SECONDS
        while True:
            wait = None if self.state == "answered" else deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(self._socket.receive(), wait)
            except TimeoutError:
                self.end("no_offer", code=1008)
                return
            except WebSocketDisconnect:
                self.end("control_closed")
                return
            if message["type"] == "websocket.disconnect":
                self.end("control_closed")
                return
            data = message.get("text") or message.get("bytes") or ""
            await self._handle(data if isinstance(data, str | bytes) else "")

    async def _cap(self) -> None:
        await asyncio.sleep(self._emulator.config.voicelive_max_seconds)
        _logger.info("emulator.voicelive_max_duration", rtc_call_id=self.rtc_call_id)
        self.end("max_duration")

    # -- signalling ----------------------------------------------------------------------

    async def _handle(self, text: str | bytes) -> None:
        if len(text) > _MAX_MESSAGE_CHARS:
            self._error(None, "Client event is too large.", "invalid_value")
            return
        try:
            event = json.loads(text)
        except (ValueError, UnicodeDecodeError):
            self._error(None, "Client event is not valid JSON.", "invalid_json")
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self._error(None, "Client event must be an object with a 'type'.", "invalid_value")
            return
        self.client_events[event["type"]] += 1
        client_event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        if event["type"] == "rtc.call.sdp.create":
            if self.state in {"negotiating", "answered"}:
                self._rtc_error("call_already_started", "The call was already negotiated.")
                return
            await self._negotiate(event)
        elif self.call is not None and self.state == "answered":
            self.call.handle_client_event(event)
        else:
            self._error(
                client_event_id, "Send rtc.call.sdp.create to start the call.", "call_not_started"
            )

    async def _negotiate(self, event: dict[str, Any]) -> None:
        fault = self._emulator.faults.take_voicelive(*_FAULT_MODES)
        offer = event.get("sdp_offer")
        if not isinstance(offer, str) or not offer.strip():
            self._rtc_error("missing_sdp", "SDP offer is required")
            return
        if len(offer) > _MAX_SDP_CHARS or not offer.lstrip().startswith("v=0") or "m=" not in offer:
            self._rtc_error("invalid_sdp", "The SDP offer could not be parsed.")
            return
        session = self.session
        if "session" in event:
            self.session_received = event["session"]
            try:
                session = merged_session(self.session, event["session"], started=False)
            except SessionRejectedError as exc:
                self._rtc_error("invalid_session", f"{exc.message} (param: {exc.param})")
                return
        if fault is not None and fault.mode == "rtc_call_error":
            self._rtc_error(
                fault.code or "agent_initialization_failed",
                "Injected failure: the call could not be initialised.",
                error_type="server_error",
            )
            return
        if self._emulator.full():
            self._rtc_error("too_many_calls", "Too many concurrent calls.", "server_error")
            return
        self.state = "negotiating"
        self.session = session
        self._emit(self._events.session_created(self.session))
        if "session" in event:
            self._emit(self._events.session_updated(self.session))
        if fault is not None and fault.mode == "error_event":
            self.state = "failed"
            self.errors.append(fault.code or "server_error")
            self._emulator.counters["voicelive_outcomes"]["error_event"] += 1
            self._emit(
                self._events.error(
                    "Injected VoiceLive backend error.",
                    fault.code or "server_error",
                    None,
                    error_type="server_error",
                )
            )
            return
        await self._answer(offer, fault)

    async def _answer(self, offer: str, fault: VoiceLiveFault | None) -> None:
        self.mirror = self.mirror or (fault is not None and fault.mode == "mirror_events")
        rtc_call_id = new_id("rtc")
        call = self._emulator.open_call(
            rtc_call_id,
            self.session,
            filtered=False,
            mode=voice_live_mode(mirror=self.mirror),
            control=self._emit,
            on_closed=self._peer_closed,
            max_seconds=self._emulator.config.voicelive_max_seconds,
        )
        call.session_handler = self._update_session
        self.call, self.rtc_call_id = call, rtc_call_id
        try:
            answer = await call.answer(offer)
        except OfferRejectedError:
            self.call = None
            self.state = "waiting_offer"
            self._rtc_error("invalid_sdp", "The SDP offer could not be applied.")
            return
        if fault is not None and fault.mode == "never_answer":
            self.answer_withheld = True
            _logger.info("emulator.voicelive_answer_withheld", rtc_call_id=rtc_call_id)
            return
        if fault is not None and fault.mode == "slow_answer" and fault.latency_ms > 0:
            await asyncio.sleep(fault.latency_ms / 1000)
        self.state = "answered"
        self._emulator.counters["voicelive_outcomes"]["answered"] += 1
        self._emit(self._events.rtc_call_sdp_created(rtc_call_id, answer))
        _logger.info("emulator.voicelive_answered", rtc_call_id=rtc_call_id, auth=self.auth)
        if fault is not None and fault.mode == "drop_mid_call":
            self._spawn(self._drop(fault.latency_ms), "voicelive-drop")

    async def _drop(self, latency_ms: int) -> None:
        if latency_ms > 0:
            await asyncio.sleep(latency_ms / 1000)
        self._emulator.counters["voicelive_outcomes"]["dropped"] += 1
        self.end("dropped", code=1011)

    def _update_session(self, update: Any, client_event_id: str | None) -> None:
        self.session_updates.append(update)
        try:
            session = merged_session(self.session, update, started=True)
        except SessionRejectedError as exc:
            self._error(client_event_id, exc.message, "invalid_value", param=exc.param)
            return
        self.session = session
        if self.call is not None:
            self.call.apply_session(session)
        self._emit(self._events.session_updated(session))

    def _peer_closed(self, call: RealtimeCall) -> None:
        if call is self.call and self.state == "answered":
            self.end(f"peer_{call.end_reason}")

    # -- answers -------------------------------------------------------------------------

    def _rtc_error(
        self, code: str, message: str, error_type: str = "invalid_request_error"
    ) -> None:
        self.errors.append(code)
        if self.state == "waiting_offer":
            self.state = "failed" if error_type == "server_error" else "waiting_offer"
        self._emulator.counters["voicelive_outcomes"]["rtc_call_error"] += 1
        _logger.info("emulator.voicelive_rtc_call_error", code=code)
        self._emit(
            self._events.rtc_call_error(
                code, message, error_type=error_type, rtc_call_id=self.rtc_call_id
            )
        )

    def _error(
        self, client_event_id: str | None, message: str, code: str, *, param: str | None = None
    ) -> None:
        self._emit(self._events.error(message, code, client_event_id, param=param))

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            _logger.error(
                "emulator.voicelive_task_failed",
                task=task.get_name(),
                error=type(error).__name__,
                exc_info=error,
            )
            self.end("internal_error", code=1011)
