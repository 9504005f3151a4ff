"""The capture process: holds Azure OpenAI sidebands off the service's minting event loop.

Run by the service (:mod:`engram_voice.realtime.calls.capture_process`) as
``python -m engram_voice.realtime.calls.capture_child``, with the wire
(:mod:`~engram_voice.realtime.calls.capture_wire`) on stdin/stdout and logs on stderr.
For each :class:`~engram_voice.realtime.calls.capture_wire.Hold` it runs the same
:class:`~engram_voice.realtime.calls.sideband.Sideband` and
:class:`~engram_voice.realtime.calls.capture.TurnCapture` the service would run itself:
every sideband message is read, filtered and ordered here, and only what the service
acts on crosses the pipe (state changes, ordered turns to store, usage). The credential
and the durable queue stay the service's: the sideband asks for the credential
(``credential`` / ``invalidate``) and turns are stored through the ``store`` request,
so Key Vault rotation, Entra tokens, and the queue's authority rules have one owner.

When the service goes away (stdin closes: a stop, a crash, ``kill -9``) every sideband is
closed, bounded, and the process exits; turns not yet acknowledged by the service were
never acknowledged to anyone. It lowers its own CPU priority (``--priority``, see
:mod:`~engram_voice.realtime.calls.capture_priority`) so that, on a core shared with the
service, minting wins.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, BinaryIO

import aiohttp
import structlog

from engram_voice.credentials.secret import Secret
from engram_voice.credentials.sources import UpstreamCredential
from engram_voice.logs import configure_logging
from engram_voice.memory.schemas import EnrichMessage
from engram_voice.realtime.calls.capture import CAPTURED_EVENTS, TurnCapture
from engram_voice.realtime.calls.capture_priority import PRIORITIES, lower_priority
from engram_voice.realtime.calls.capture_wire import (
    Began,
    Bind,
    Channel,
    Counts,
    Ended,
    Gap,
    Hold,
    Request,
    State,
    StopReconnecting,
    Usage,
)
from engram_voice.realtime.calls.metrics import RELAYED_COUNTERS
from engram_voice.realtime.calls.sideband import Sideband
from engram_voice.realtime.endpoints import Endpoint

__all__ = ["CaptureChild", "main"]

UPSTREAM = "azure-openai"
COUNTS_SECONDS = 1.0
"""How often counter increments are reported to the service."""
FLUSH_SECONDS = 0.025
"""Messages within this window share one frame (one wake-up of the service's loop): state
changes and store requests reach the service at most this much later."""
REQUEST_SECONDS = 30.0
"""Bound on the service answering a credential or store request."""
CLOSE_ALL_SECONDS = 8.0
_logger = structlog.get_logger("engram_voice.realtime.calls")


class _RelayedCredentials:
    """A :class:`CredentialSource` that asks the service for its credential."""

    kind = "relayed"

    def __init__(self, channel: Channel, call: str) -> None:
        self._channel = channel
        self._call = call
        self._tokens: dict[int, int] = {}

    async def get(self) -> UpstreamCredential:
        """Return the service's current credential (one request)."""
        header, secret, kind, version, token = await self._channel.request(
            "credential", self._call, within=REQUEST_SECONDS
        )
        credential = UpstreamCredential(
            header=header, secret=Secret(secret), kind=kind, version=version
        )
        self._tokens[id(credential)] = token
        return credential

    async def invalidate(self, used: UpstreamCredential) -> bool:
        """Tell the service ``used`` was refused; True when it has a different one."""
        token = self._tokens.get(id(used))
        if token is None:
            return False
        return bool(
            await self._channel.request("invalidate", self._call, token, within=REQUEST_SECONDS)
        )


class _StoreResult:
    __slots__ = ("accepted", "duplicates")

    def __init__(self, accepted: int, duplicates: int) -> None:
        self.accepted = accepted
        self.duplicates = duplicates


class _Held:
    __slots__ = ("capture", "sideband")

    def __init__(self, capture: TurnCapture, sideband: Sideband) -> None:
        self.capture = capture
        self.sideband = sideband


class CaptureChild:
    """The calls this process holds, driven by the service's messages."""

    def __init__(self, channel: Channel, http: aiohttp.ClientSession) -> None:
        self._channel = channel
        self._http = http
        self._calls: dict[str, _Held] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._reported: dict[tuple[str, tuple[str, ...]], float] = {}

    def handle(self, message: Any) -> None:
        """Act on one message from the service (never raises)."""
        try:
            if type(message) is Request:
                self._spawn(self._answer(message))
            elif type(message) is Hold:
                self._hold(message)
            elif type(message) is Bind:
                self._bind(message)
            elif type(message) is StopReconnecting:
                held = self._calls.get(message.call)
                if held is not None:
                    held.sideband.stop_reconnecting()
        except Exception:
            _logger.exception("realtime.capture_message_failed", kind=type(message).__name__)

    def _hold(self, hold: Hold) -> None:
        if hold.call in self._calls:
            return
        channel, call = self._channel, hold.call

        def usage(_: str, body: dict[str, Any]) -> None:
            channel.send(Usage(call=call, usage=body))

        capture = TurnCapture(
            upstream=UPSTREAM, call_id=call, session_id=hold.session_id, on_usage=usage
        )
        sideband = Sideband(
            http=self._http,
            endpoint=Endpoint(hold.url),
            call_id=call,
            credentials=_RelayedCredentials(channel, call),  # type: ignore[arg-type]
            connect_timeout=hold.connect_timeout,
            on_event=capture.feed,
            events=CAPTURED_EVENTS,
            reconnects=hold.reconnects,
        )
        sideband.on_state = lambda told: channel.send(
            State(call=call, state=sideband.state, told=told)
        )
        sideband.on_ended = lambda: channel.send(Ended(call=call))
        capture.on_began = lambda began: channel.send(Began(call=call, began=began))
        capture.on_gap = lambda: channel.send(Gap(call=call))
        self._calls[call] = _Held(capture, sideband)
        sideband.start()

    def _bind(self, bind: Bind) -> None:
        held = self._calls.get(bind.call)
        if held is None:
            return
        if not bind.keep:
            held.capture.keep_turns = False
            return
        channel, call = self._channel, bind.call

        async def store(messages: Sequence[EnrichMessage]) -> _StoreResult:
            rows = [[m.id, m.role, m.text, m.at.isoformat() if m.at else None] for m in messages]
            accepted, duplicates = await channel.request(
                "store", call, rows, within=REQUEST_SECONDS
            )
            return _StoreResult(int(accepted), int(duplicates))

        held.capture.bind(store)

    async def _answer(self, request: Request) -> None:
        held = self._calls.get(request.call)
        if held is None:
            self._channel.reply(request, ok=False, body="unknown call")
            return
        try:
            if request.op == "send":
                self._channel.reply(request, body=await held.sideband.send(request.body))
            elif request.op == "finish":
                await held.sideband.finish(float(request.body))
                self._channel.reply(request, body=held.sideband.state)
            elif request.op == "close":
                try:
                    await held.sideband.close()
                finally:  # whatever the socket did: flush what is held, forget the call
                    try:
                        await held.capture.close()
                    finally:
                        self._calls.pop(request.call, None)
                self._channel.reply(request, body=held.sideband.state)
            else:
                self._channel.reply(request, ok=False, body=f"unknown op {request.op}")
        except Exception as exc:
            _logger.exception("realtime.capture_request_failed", op=request.op)
            self._channel.reply(request, ok=False, body=type(exc).__name__)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def report_counts(self) -> None:
        """Send the counter increments since the last report (the service's /metrics).

        Sent even when empty: it tells the service this process is alive.
        """
        counts: list[tuple[str, list[str], float]] = []
        for name, (counter, label_names) in RELAYED_COUNTERS.items():
            for metric in counter.collect():
                for sample in metric.samples:
                    if not sample.name.endswith("_total"):
                        continue
                    labels = tuple(sample.labels[label] for label in label_names)
                    key = (name, labels)
                    delta = sample.value - self._reported.get(key, 0.0)
                    if delta > 0:
                        self._reported[key] = sample.value
                        counts.append((name, list(labels), delta))
        self._channel.send(Counts(counts=counts))

    async def close_all(self) -> None:
        """Close every held sideband and what its capture holds (bounded)."""
        held = list(self._calls.values())
        self._calls.clear()

        async def close(one: _Held) -> None:
            await one.sideband.close()
            await one.capture.close()

        if held:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_ALL_SECONDS):
                    await asyncio.gather(*(close(one) for one in held), return_exceptions=True)


async def _serve(wire_in: BinaryIO, wire_out: BinaryIO, priority: str) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), wire_in)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, wire_out)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    channel = Channel(reader, writer, flush_delay=FLUSH_SECONDS)
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
    async with aiohttp.ClientSession(connector=connector) as http:
        child = CaptureChild(channel, http)

        async def counts() -> None:
            while True:
                await asyncio.sleep(COUNTS_SECONDS)
                child.report_counts()

        reporter = asyncio.create_task(counts())
        # the service hands over calls from now on; ``told`` is the CPU priority in effect
        channel.send(State(call="", state="ready", told=priority))
        _logger.info("realtime.capture_process_started", pid=os.getpid(), priority=priority)
        await channel.run(child.handle)  # until the service closes the pipe
        reporter.cancel()
        await child.close_all()
        channel.close()
    _logger.info("realtime.capture_process_stopped", pid=os.getpid())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the capture process until stdin closes; return the exit status."""
    parser = argparse.ArgumentParser(description="engram-voice capture process (internal)")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", choices=("json", "console"), default="json")
    parser.add_argument("--priority", choices=PRIORITIES, default="normal")
    args = parser.parse_args(argv)
    wire_in, wire_out = _take_the_wire()
    configure_logging(level=args.log_level, json=args.log_format == "json")
    # The service's process group gets a terminal's Ctrl-C and a supervisor's stop too:
    # this process ends when the service closes the pipe, after its calls were drained.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    priority = lower_priority(args.priority)  # before any thread starts: threads inherit it
    asyncio.run(_serve(wire_in, wire_out, priority))
    return 0


def _take_the_wire() -> tuple[BinaryIO, BinaryIO]:
    """Move the wire off stdin/stdout: a stray print goes to stderr, not into a frame."""
    wire_in = os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0)
    wire_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, sys.stdin.fileno())
    os.close(devnull)
    return wire_in, wire_out


if __name__ == "__main__":
    sys.exit(main())
