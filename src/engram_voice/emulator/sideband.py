"""Azure OpenAI's sideband: ``GET ws /openai/v1/realtime?call_id=…`` for a WebRTC call.

A server joins a call it created (the ``call_id`` from the ``Location`` of the 201) with a
resource credential: ``api-key`` (an ``EMULATOR_API_KEYS`` slot) or ``Authorization:
Bearer`` (an ``EMULATOR_BEARER_TOKENS`` token); an ephemeral key is refused (401). An
unknown or ended call answers 404. The socket then carries the call's FULL server event
stream (the ``webrtcfilter`` applies to the browser's data channel only), accepts client
events (``session.update`` → ``session.updated``) and closes when the call ends. No
``session.created`` is sent. Faults (``POST /_emulator/faults`` with ``target:
"sideband"``): ``refuse`` answers the upgrade with 401, ``drop`` closes the socket
mid-call (after the next server event) while the call goes on, ``late`` holds the upgrade
until the call's first item was said (``latency_ms`` at most) while the conversation goes
on, so the sideband's first item names a ``previous_item_id`` it never saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import msgspec
import structlog
from litestar import WebSocket, websocket
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect

from engram_voice.emulator.azure_errors import AzureApiError
from engram_voice.emulator.keys import AuthSlot
from engram_voice.emulator.peer import RealtimeCall
from engram_voice.emulator.state import EmulatorState
from engram_voice.emulator.voicelive import deny_upgrade

__all__ = ["SIDEBAND", "SidebandConnection", "sideband"]

SIDEBAND = "/openai/v1/realtime"
_QUEUE_LIMIT = 10_000
_MAX_CLIENT_EVENT_BYTES = 1_000_000
_logger = structlog.get_logger("engram_voice.emulator")
Emulator = NamedDependency[EmulatorState]


class SidebandConnection:
    """One server's WebSocket onto a call: every server event, client events accepted."""

    def __init__(
        self, socket: WebSocket[Any, Any, Any], call: RealtimeCall, auth: AuthSlot, *, drop: bool
    ) -> None:
        self.socket = socket
        self.call = call
        self.auth = auth
        self.drop = drop
        self.connected_at = time.time()
        self.closed_at: float | None = None
        self.close_reason: str | None = None
        self.events_sent = 0
        self.client_events = 0
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(_QUEUE_LIMIT)

    def observe(self, event: dict[str, Any]) -> None:
        """Queue one server event of the call for this socket (dropping when far behind).

        ``session.created`` is the browser's greeting and never reaches a sideband, even one
        that joined before the browser's data channel opened.
        """
        if event.get("type") == "session.created":
            return
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(event)

    async def run(self) -> None:
        """Serve the socket until the call ends, the peer closes it or a drop fault fires."""
        await self.socket.accept()
        self.call.observers.append(self.observe)
        tasks = [
            asyncio.create_task(self._write(), name="sideband-write"),
            asyncio.create_task(self._read(), name="sideband-read"),
            asyncio.create_task(self.call.ended.wait(), name="sideband-call-ended"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finished = done.pop()
            reason = {
                "sideband-write": "dropped",
                "sideband-read": "client_closed",
                "sideband-call-ended": "call_ended",
            }[finished.get_name()]
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(ValueError):
                self.call.observers.remove(self.observe)
        if reason == "call_ended":
            await self._drain()
        self.closed_at, self.close_reason = time.time(), reason
        with contextlib.suppress(Exception):
            await self.socket.close(code=1000 if reason != "dropped" else 1011)
        _logger.info(
            "emulator.sideband_closed",
            call_id=self.call.call_id,
            reason=reason,
            events_sent=self.events_sent,
        )

    def describe(self) -> dict[str, Any]:
        """Return this connection as plain data (no credential, only its slot)."""
        return {
            "call_id": self.call.call_id,
            "auth": self.auth,
            "connected_at": self.connected_at,
            "closed_at": self.closed_at,
            "close_reason": self.close_reason,
            "events_sent": self.events_sent,
            "client_events": self.client_events,
        }

    async def _send(self, event: dict[str, Any]) -> None:
        await self.socket.send_text(msgspec.json.encode(event).decode())
        self.events_sent += 1

    async def _write(self) -> None:
        while True:
            await self._send(await self._queue.get())
            if self.drop:
                return

    async def _drain(self) -> None:
        with contextlib.suppress(Exception):
            while not self._queue.empty():
                await self._send(self._queue.get_nowait())

    async def _read(self) -> None:
        while True:
            try:
                message = await self.socket.receive_data(mode="text")
            except WebSocketDisconnect:
                return
            self.client_events += 1
            self._handle(message)

    def _handle(self, message: str | bytes) -> None:
        if len(message) > _MAX_CLIENT_EVENT_BYTES:
            self.call.reject(None, "Client event is too large.", "invalid_value")
            return
        try:
            event = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            self.call.reject(None, "Client event is not valid JSON.", "invalid_json")
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self.call.reject(None, "Client event must be an object with a 'type'.", "invalid_value")
            return
        self.call.handle_client_event(event)


def _checked(socket: WebSocket[Any, Any, Any], emulator: EmulatorState) -> tuple[Any, ...]:
    if "api-version" in socket.query_params:
        raise AzureApiError(
            401, "401", "api-version query parameter is not allowed when using /v1 path"
        )
    if emulator.faults.take_sideband("refuse"):
        raise AzureApiError.invalid_key()
    auth = emulator.keys.authenticate(socket.headers)
    call_id = socket.query_params.get("call_id") or ""
    call = emulator.calls.get(call_id)
    if call is None or not call.active or call.mode.vocabulary.name != "ga":
        raise AzureApiError(
            404, "call_not_found", f"Call '{call_id[:64]}' was not found.", param="call_id"
        )
    return call, auth


async def _until_said(call: RealtimeCall, bound: float) -> None:
    """Hold a late upgrade until the call has an item (the first turn), ``bound`` at most."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(bound):
            await call.item_said.wait()


@websocket(SIDEBAND)
async def sideband(socket: WebSocket[Any, Any, Any], emulator: Emulator) -> None:
    """Serve a server's sideband WebSocket onto one of the emulator's Azure OpenAI calls."""
    try:
        call, auth = _checked(socket, emulator)
    except AzureApiError as exc:
        emulator.count("sideband", exc.status)
        _logger.info("emulator.sideband_refused", status=exc.status, code=exc.code)
        await deny_upgrade(socket, exc)
        return
    if emulator.faults.take_sideband("late"):
        await _until_said(call, emulator.faults.sideband_latency_ms / 1000)
    emulator.count("sideband", 101)
    connection = SidebandConnection(socket, call, auth, drop=emulator.faults.take_sideband("drop"))
    emulator.sidebands.append(connection)
    _logger.info("emulator.sideband_connected", call_id=call.call_id, auth=auth)
    await connection.run()
