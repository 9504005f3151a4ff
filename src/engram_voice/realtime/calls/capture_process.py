"""The capture process the service runs beside itself, and the pipe to it.

Every Azure OpenAI sideband carries the call's whole event stream (about 15 messages per
conversation turn); reading, filtering and ordering them is most of what capture costs,
and on the service's event loop it queues in front of every mint and call set-up. With
``REALTIME_CAPTURE_PROCESS=on`` (the default) the service starts one capture process
(:mod:`~engram_voice.realtime.calls.capture_child`) at its first call, hands it each
call's sideband (:meth:`CaptureProcess.hold`) and keeps only mirrors of its state
(:mod:`~engram_voice.realtime.calls.capture_proxy`). The service still owns the
credential (the capture process asks for it per connect and reports a refused one) and
the durable queue (turns come back in ``store`` requests and go through
``MemoryRuntime.accept_captured``, with its authority rules), so nothing about Key
Vault rotation, Entra or the captured-session record changes.

If the capture process exits, each sideband it held reads as ``lost`` (the sessions fall
back to the browser's posts, as for any lost sideband); it is started again at the next
call, at most once every :data:`RESTART_SECONDS`; meanwhile, or if it cannot be started,
calls are captured on the service's own loop, so a call never goes without capture.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from typing import Any

import structlog

from engram_voice.credentials import CredentialSource
from engram_voice.realtime.calls.capture import UsageHook
from engram_voice.realtime.calls.capture_proxy import (
    RemoteCapture,
    RemoteSideband,
    mirror,
)
from engram_voice.realtime.calls.capture_stores import StoreAnswers
from engram_voice.realtime.calls.capture_watchdog import Watchdog
from engram_voice.realtime.calls.capture_wire import (
    Channel,
    ChannelClosedError,
    Counts,
    Hold,
    Message,
    Request,
    State,
)
from engram_voice.realtime.calls.metrics import RELAYED_COUNTERS
from engram_voice.realtime.calls.relayed_credentials import CredentialRelay, child_environment
from engram_voice.realtime.endpoints import Endpoint

__all__ = ["CaptureProcess"]

RESTART_SECONDS = 5.0
"""Least time between two starts of the capture process."""
STOP_SECONDS = 10.0
"""Bound on the capture process closing its sidebands and exiting at shutdown."""
STALL_SECONDS = 15.0
"""A capture process silent this long (it reports every second) is stuck: it is killed,
its calls read as lost, and the next call starts a new one."""
_logger = structlog.get_logger("engram_voice.realtime.calls")


class _Call:
    __slots__ = ("capture", "sideband")

    def __init__(self, capture: RemoteCapture, sideband: RemoteSideband) -> None:
        self.capture = capture
        self.sideband = sideband


class CaptureProcess:
    """Starts the capture process on demand and routes its messages to the calls' mirrors."""

    def __init__(
        self,
        *,
        credentials: CredentialSource,
        log_level: str = "info",
        log_json: bool = True,
        priority: str = "normal",
        restart_pause: float = RESTART_SECONDS,
        stall_seconds: float | None = None,
    ) -> None:
        self._credentials = CredentialRelay(credentials)
        self._restart_pause = restart_pause
        self._watchdog = Watchdog(STALL_SECONDS if stall_seconds is None else stall_seconds)
        self._argv = [
            sys.executable, "-m", "engram_voice.realtime.calls.capture_child",
            "--log-level", log_level.lower(), "--log-format", "json" if log_json else "console",
        ]  # fmt: skip
        self.priority = priority
        """The CPU priority the next capture process starts at (``capture_priority``)."""
        self._priority_in_effect: str | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._channel: Channel | None = None
        self._reader: asyncio.Task[None] | None = None
        self._calls: dict[str, _Call] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stores = StoreAnswers(self._capture_of, self._spawn)
        """Answers the ``store`` requests of a frame together (one queue write)."""
        self._starting = False
        self._ready = False
        self._ready_event = asyncio.Event()
        self._not_before = 0.0
        self._closed = False
        self.starts = 0
        self.exits = 0

    # -- what calls use ----------------------------------------------------------------------

    async def hold(
        self,
        *,
        endpoint: Endpoint,
        call_id: str,
        session_id: str,
        connect_timeout: float,
        reconnects: int,
        on_usage: UsageHook | None,
    ) -> tuple[RemoteCapture, RemoteSideband] | None:
        """Have the capture process join ``call_id``'s sideband; None if it is not running."""
        channel = await self._ensure_started()
        if channel is None:
            return None
        capture = RemoteCapture(self, call_id, session_id=session_id, on_usage=on_usage)
        sideband = RemoteSideband(self, call_id)
        self._calls[call_id] = _Call(capture, sideband)
        channel.send(
            Hold(
                call=call_id,
                url=endpoint.url,
                session_id=session_id,
                connect_timeout=connect_timeout,
                reconnects=reconnects,
            )
        )
        return capture, sideband

    async def start(self, *, wait: float = 0.0) -> bool:
        """Start the capture process if none runs; wait up to ``wait`` s for it to be ready.

        Returns whether it is ready. Calls start it anyway; this warms it up ahead.
        """
        await self._ensure_started()
        if wait > 0 and not self._ready:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._ready_event.wait()
        return self._ready

    def send(self, message: Message) -> None:
        """Queue ``message`` to the capture process (dropped if it is gone)."""
        if self._channel is not None:
            self._channel.send(message)

    async def request(self, op: str, call: str, body: Any = None, *, within: float) -> Any:
        """Ask the capture process; raises ConnectionError when it is gone."""
        channel = self._channel
        if channel is None:
            raise ChannelClosedError("the capture process is not running")
        return await channel.request(op, call, body, within=within)

    def forget(self, call: str) -> None:
        """Drop ``call`` (its capture is closed)."""
        self._calls.pop(call, None)

    def describe(self) -> dict[str, Any]:
        """Return the capture process's part of ``/status``."""
        process = self._process
        return {
            "mode": "process",
            "pid": process.pid if process is not None and process.returncode is None else None,
            "ready": self._ready,
            "sidebands": len(self._calls),
            "starts": self.starts,
            "exits": self.exits,
            "priority": self._priority_in_effect if self._ready else self.priority,
        }

    async def aclose(self) -> None:
        """Close the pipe and wait for the capture process to exit (bounded, then killed)."""
        self._closed = True
        channel, process, reader = self._channel, self._process, self._reader
        if channel is not None:
            channel.close()
        if process is not None:
            try:
                async with asyncio.timeout(STOP_SECONDS):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if reader is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        for task in list(self._tasks):
            task.cancel()

    # -- the process ----------------------------------------------------------------------

    async def _ensure_started(self) -> Channel | None:
        """Return the channel of a ready capture process; start one if none is running."""
        channel = self._channel
        if channel is not None and not channel.closed:
            return channel if self._ready else None
        if self._closed or time.monotonic() < self._not_before or self._starting:
            return None
        self._starting = True
        self._not_before = time.monotonic() + self._restart_pause
        if self._watchdog.stalls and self.priority != "normal":  # it starved: never again
            _logger.warning("realtime.capture_priority_raised", was=self.priority, now="normal")
            self.priority = "normal"
        try:
            process = await asyncio.create_subprocess_exec(
                *self._argv,
                "--priority",
                self.priority,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=child_environment(os.environ),
                limit=2**26,
            )
        except OSError as exc:
            _logger.exception("realtime.capture_process_failed", error=type(exc).__name__)
            return None
        finally:
            self._starting = False
        assert process.stdin is not None  # noqa: S101 - asked for above
        assert process.stdout is not None  # noqa: S101
        self._process = process
        self._ready = False
        self._channel = Channel(process.stdout, process.stdin)
        self.starts += 1
        self._watchdog.heard()
        self._reader = asyncio.create_task(
            self._read(self._channel, process), name="capture-process-reader"
        )
        self._spawn(self._watchdog.watch(self._channel, process))
        _logger.info("realtime.capture_process_spawned", pid=process.pid)
        return None  # ready in about a second: this call is captured here

    async def _read(self, channel: Channel, process: asyncio.subprocess.Process) -> None:
        await channel.run(self._handle)
        channel.close()
        if self._channel is channel:
            self._channel = None
            self._ready = False
            self._ready_event.clear()
        calls, self._calls = list(self._calls.values()), {}
        for call in calls:
            call.sideband.process_gone()
        if self._closed:
            return
        self.exits += 1
        code = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_SECONDS):
                code = await process.wait()
        _logger.error(
            "realtime.capture_process_exited", pid=process.pid, code=code, sidebands=len(calls)
        )

    # -- messages from the capture process -------------------------------------------------

    def _handle(self, message: Any) -> None:
        self._watchdog.heard()
        kind = type(message)
        if kind is Request:
            channel = self._channel
            if message.op == "store" and channel is not None:
                self._stores.add(message, channel)
            else:
                self._spawn(self._answer(message))
        elif kind is Counts:
            for name, labels, amount in message.counts:
                known = RELAYED_COUNTERS.get(name)
                if known is not None and amount > 0:
                    known[0].labels(*labels).inc(amount)
            return
        call = self._calls.get(message.call)
        if call is None:
            if kind is State and message.state == "ready":
                self._priority_in_effect = message.told
                self._ready = True
                self._ready_event.set()
            return
        mirror(call.capture, call.sideband, message)

    async def _answer(self, request: Request) -> None:
        channel = self._channel
        if channel is None:
            return
        try:
            body = await self._do(request)
        except Exception as exc:  # noqa: BLE001 - answered as a failure; the other side retries
            channel.reply(request, ok=False, body=type(exc).__name__)
            return
        channel.reply(request, body=body)

    async def _do(self, request: Request) -> Any:
        if request.op == "credential":
            return await self._credentials.get()
        if request.op == "invalidate":
            return await self._credentials.invalidate(int(request.body))
        raise ValueError(request.op)

    def _capture_of(self, call: str) -> RemoteCapture | None:
        held = self._calls.get(call)
        return held.capture if held is not None else None

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
