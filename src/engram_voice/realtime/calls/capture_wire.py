"""The wire between the service and its capture process: framed msgpack messages on a pipe.

Each side writes *frames*: a 4-byte big-endian length, then a msgpack array of tagged
messages (msgspec structs). Messages queued in the same event-loop turn (or, with a
``flush_delay``, within that many seconds) share one frame, so many held calls cost the
reader one wake-up. :class:`Channel` adds requests with replies (``request`` → a
:class:`Reply` with the same ``id``), bounded by a timeout; when the pipe closes every
pending request fails with :class:`ChannelClosedError`.

Service → capture process: :class:`Hold` (join a call's sideband), :class:`Bind` (store
its turns, or only meter usage), :class:`StopReconnecting`, and the requests ``send``
(a client event), ``finish`` (read until the upstream closes, then close) and ``close``
(close and flush what is held). Capture process → service: :class:`State`,
:class:`Ended`, :class:`Began`, :class:`Gap`, :class:`Usage`, :class:`Counts` and the
requests ``credential``, ``invalidate`` (the service owns the credential) and ``store``
(the service owns the queue). A message names the call by its upstream call id.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
from collections.abc import Callable
from typing import Any

import msgspec
import structlog

__all__ = [
    "Began",
    "Bind",
    "Channel",
    "ChannelClosedError",
    "Counts",
    "Ended",
    "Gap",
    "Hold",
    "Message",
    "Reply",
    "Request",
    "State",
    "StopReconnecting",
    "Usage",
]

MAX_FRAME_BYTES = 16 * 1024 * 1024
_HEADER = struct.Struct(">I")
_logger = structlog.get_logger("engram_voice.realtime.calls")


class Hold(msgspec.Struct, tag="hold", frozen=True):
    """Join ``call``'s sideband at ``url`` (the endpoint's base URL) and capture it."""

    call: str
    url: str
    session_id: str
    connect_timeout: float
    reconnects: int


class Bind(msgspec.Struct, tag="bind", frozen=True):
    """The call's owner is known: store its turns (``keep``) or meter its usage only."""

    call: str
    keep: bool


class StopReconnecting(msgspec.Struct, tag="stop", frozen=True):
    """Keep reading ``call``'s sideband but do not reopen it (a hang-up is under way)."""

    call: str


class State(msgspec.Struct, tag="state", frozen=True):
    """The sideband's ``state`` changed; ``told`` is what it told its owner, if anything."""

    call: str
    state: str
    told: str | None = None


class Ended(msgspec.Struct, tag="ended", frozen=True):
    """The sideband learnt that the call is over upstream."""

    call: str


class Began(msgspec.Struct, tag="began", frozen=True):
    """The first item showed whether the sideband heard the conversation from its start."""

    call: str
    began: bool


class Gap(msgspec.Struct, tag="gap", frozen=True):
    """A turn heard on the sideband will not be stored."""

    call: str


class Usage(msgspec.Struct, tag="usage", frozen=True):
    """One ``response.done``'s usage object."""

    call: str
    usage: dict[str, Any]


class Counts(msgspec.Struct, tag="counts", frozen=True):
    """Counter increments since the last report: ``(metric, label values, amount)``."""

    counts: list[tuple[str, list[str], float]]


class Request(msgspec.Struct, tag="req", frozen=True):
    """Ask the other side to do ``op`` for ``call``; answered by a :class:`Reply`."""

    id: int
    op: str
    call: str
    body: Any = None


class Reply(msgspec.Struct, tag="rep", frozen=True):
    """The answer to the :class:`Request` with the same ``id``."""

    id: int
    ok: bool
    body: Any = None


Message = Hold | Bind | StopReconnecting | State | Ended | Began | Gap | Usage | Counts | Request
Handler = Callable[[Any], None]


class ChannelClosedError(ConnectionError):
    """The pipe to the other side is closed (the process exited, or is stopping)."""


class Channel:
    """One side of the pipe: batched sends, requests with replies, and a reader loop."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        flush_delay: float = 0.0,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._flush_delay = flush_delay
        self._out: list[Message | Reply] = []
        self._flush_scheduled = False
        self._pending: dict[int, asyncio.Future[Reply]] = {}
        self._ids = itertools.count(1)
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder(list[Message | Reply])
        self.closed = False

    def send(self, message: Message | Reply) -> None:
        """Queue ``message`` for the next frame (never blocks; dropped once closed)."""
        if self.closed:
            return
        self._out.append(message)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop = asyncio.get_running_loop()
            if self._flush_delay > 0:
                loop.call_later(self._flush_delay, self._flush)
            else:
                loop.call_soon(self._flush)

    async def request(self, op: str, call: str, body: Any = None, *, within: float) -> Any:
        """Send a request and return its reply's body.

        Raises :class:`ChannelClosedError` when the pipe closes first, :class:`TimeoutError`
        after ``within`` seconds, and :class:`RuntimeError` (with the body) when the other
        side answered that it failed.
        """
        if self.closed:
            raise ChannelClosedError("the capture channel is closed")
        request_id = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self.send(Request(id=request_id, op=op, call=call, body=body))
        try:
            async with asyncio.timeout(within):
                reply = await future
        finally:
            self._pending.pop(request_id, None)
        if not reply.ok:
            raise RuntimeError(str(reply.body))
        return reply.body

    def reply(self, request: Request, *, ok: bool = True, body: Any = None) -> None:
        """Answer ``request``."""
        self.send(Reply(id=request.id, ok=ok, body=body))

    async def run(self, handle: Handler) -> None:
        """Read frames until the pipe closes, resolving replies and handing the rest on.

        Never raises: a frame that is too large or does not decode ends the run (the pipe
        can no longer be trusted, so the other side is treated as gone), and a message
        ``handle`` fails on is logged and skipped.
        """
        try:
            while True:
                header = await self._reader.readexactly(_HEADER.size)
                (size,) = _HEADER.unpack(header)
                if size > MAX_FRAME_BYTES:
                    _logger.error("realtime.capture_frame_too_large", size=size)
                    return
                try:
                    messages = self._decoder.decode(await self._reader.readexactly(size))
                except (msgspec.DecodeError, ValueError) as exc:  # bad UTF-8 is a ValueError
                    _logger.exception(
                        "realtime.capture_frame_malformed", size=size, error=type(exc).__name__
                    )
                    return
                for message in messages:
                    self._dispatch(message, handle)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return
        finally:
            self._close_pending()

    def _dispatch(self, message: Message | Reply, handle: Handler) -> None:
        if type(message) is Reply:
            future = self._pending.get(message.id)
            if future is not None and not future.done():
                future.set_result(message)
            return
        try:
            handle(message)
        except Exception:  # one bad message must not stop the reader of every call
            _logger.exception("realtime.capture_message_failed", kind=type(message).__name__)

    def close(self) -> None:
        """Flush what is queued, then close the writing end (the other side reads EOF)."""
        if self.closed:
            return
        self._flush()
        self.closed = True
        with contextlib.suppress(Exception):
            self._writer.close()
        self._close_pending()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out or self.closed:
            self._out.clear()
            return
        out, self._out = self._out, []
        payload = self._encoder.encode(out)
        frames = [payload] if len(payload) <= MAX_FRAME_BYTES else self._split(out)
        try:
            for frame in frames:
                self._writer.write(_HEADER.pack(len(frame)) + frame)
        except (ConnectionError, RuntimeError, OSError):  # the other side is gone
            self.closed = True
            self._close_pending()

    def _split(self, out: list[Message | Reply]) -> list[bytes]:
        """Frames of at most MAX_FRAME_BYTES; a message larger than that alone is refused.

        The reader ends the pipe at a larger frame, which would lose every call's capture
        for one message: that message's request fails instead (a reply is dropped and its
        request times out on the other side).
        """
        frames: list[bytes] = []
        group: list[Message | Reply] = []
        size = 0
        for message in out:
            length = len(self._encoder.encode(message)) + 8  # the array's header at most
            if length > MAX_FRAME_BYTES:
                _logger.error(
                    "realtime.capture_message_too_large", kind=type(message).__name__, size=length
                )
                future = self._pending.pop(message.id, None) if type(message) is Request else None
                if future is not None and not future.done():
                    future.set_exception(RuntimeError("message too large for the capture pipe"))
                continue
            if group and size + length > MAX_FRAME_BYTES:
                frames.append(self._encoder.encode(group))
                group, size = [], 0
            group.append(message)
            size += length
        if group:
            frames.append(self._encoder.encode(group))
        return frames

    def _close_pending(self) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(ChannelClosedError("the capture channel closed"))
