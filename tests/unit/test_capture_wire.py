"""The capture wire survives what the other side may write: bad frames, failing handlers."""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engram_voice.realtime.calls.capture_wire import (
    MAX_FRAME_BYTES,
    Channel,
    ChannelClosedError,
    Counts,
    Gap,
    Request,
    State,
)

_HEADER = struct.Struct(">I")
_ENCODER = msgspec.msgpack.Encoder()


def _frame(payload: bytes) -> bytes:
    return _HEADER.pack(len(payload)) + payload


async def _run(raw: bytes, handle: Any) -> tuple[list[BaseException], BaseException | None]:
    """Feed ``raw`` to a channel's reader over a loopback socket pair.

    Returns what ``run`` raised, and how a request sent before the frames ended.
    """
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    channel = Channel(reader, writer)
    pending = asyncio.ensure_future(channel.request("send", "rtc_x", within=30))
    raised: list[BaseException] = []
    try:
        theirs.settimeout(0.0)  # non-blocking, for sock_sendall
        await asyncio.get_running_loop().sock_sendall(theirs, raw)
        theirs.shutdown(socket.SHUT_WR)  # then end of file: the other side is gone
        try:
            async with asyncio.timeout(10):
                await channel.run(handle)
        except Exception as exc:  # noqa: BLE001 - recorded for the assertion
            raised.append(exc)
    finally:
        theirs.close()
        channel.close()
    (outcome,) = await asyncio.gather(pending, return_exceptions=True)
    return raised, outcome if isinstance(outcome, BaseException) else None


# Payloads that are not a frame of this wire: garbage, other msgpack shapes, unknown tags.
_NOT_MESSAGES = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.builds(
        _ENCODER.encode,
        st.one_of(
            st.integers(min_value=-(2**63), max_value=2**64 - 1),
            st.text(max_size=8),
            st.lists(st.dictionaries(st.sampled_from(["type", "call", "x"]), st.text(max_size=4))),
        ),
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=_NOT_MESSAGES)
def test_a_frame_that_does_not_decode_ends_the_run_and_fails_pending_requests(
    payload: bytes,
) -> None:
    """Any undecodable frame ends ``run`` without raising; requests waiting fail as closed."""
    handled: list[Any] = []
    try:
        decodes_as_list = isinstance(msgspec.msgpack.decode(payload), list)
    except (msgspec.DecodeError, ValueError):
        decodes_as_list = False

    frames = _frame(payload) + _frame(_ENCODER.encode([Gap(call="after")]))
    raised, pending = asyncio.run(_run(frames, handled.append))
    assert raised == []
    assert isinstance(pending, ChannelClosedError)
    if not decodes_as_list:
        assert handled == []  # nothing after a bad frame is trusted


def test_an_oversized_frame_ends_the_run_without_reading_it() -> None:
    """A length above the bound is refused at the header (a stray write, not a message)."""
    raised, pending = asyncio.run(_run(_HEADER.pack(MAX_FRAME_BYTES + 1), lambda _: None))
    assert raised == []
    assert isinstance(pending, ChannelClosedError)


@pytest.mark.parametrize(
    "failure", [ValueError("labels"), KeyError("call"), RuntimeError("hook"), TypeError("x")]
)
def test_a_message_the_handler_fails_on_is_skipped_and_reading_goes_on(
    failure: Exception,
) -> None:
    """A handler raising on one message neither stops the reader nor loses later messages."""
    handled: list[Any] = []

    def handle(message: Any) -> None:
        if isinstance(message, Counts):
            raise failure
        handled.append(message)

    frames = _frame(_ENCODER.encode([Counts(counts=[]), State(call="a", state="connected")]))
    frames += _frame(_ENCODER.encode([Request(id=1, op="store", call="a"), Gap(call="a")]))
    raised, _ = asyncio.run(_run(frames, handle))
    assert raised == []
    assert handled == [
        State(call="a", state="connected"),
        Request(id=1, op="store", call="a"),
        Gap(call="a"),
    ]


async def _pair() -> tuple[Channel, Channel, socket.socket, socket.socket]:
    a, b = socket.socketpair()
    ra, wa = await asyncio.open_connection(sock=a, limit=2**26)
    rb, wb = await asyncio.open_connection(sock=b, limit=2**26)
    return Channel(ra, wa), Channel(rb, wb), a, b


@pytest.mark.parametrize(
    ("sizes", "refused"),
    [
        ([MAX_FRAME_BYTES + 1], [0]),  # one request alone over the bound
        ([MAX_FRAME_BYTES // 3] * 7, []),  # a batch over the bound, each message under it
        ([10, MAX_FRAME_BYTES * 2, 10, MAX_FRAME_BYTES // 2, MAX_FRAME_BYTES // 2], [1]),
    ],
)
async def test_messages_over_the_frame_bound_fail_alone_and_the_pipe_stays_up(
    sizes: list[int], refused: list[int]
) -> None:
    """A frame is never sent over the bound: batches split, a too-large request fails alone."""
    ours, theirs, a, b = await _pair()
    answered: list[int] = []

    def handle(message: Any) -> None:
        if isinstance(message, Request):
            answered.append(len(message.body))
            theirs.reply(message, body=len(message.body))

    reader = asyncio.create_task(theirs.run(handle))
    replies = asyncio.create_task(ours.run(lambda _: None))
    try:
        requests = [
            asyncio.ensure_future(ours.request("send", "rtc_x", "x" * size, within=20))
            for size in sizes
        ]  # queued in the same loop turn: one flush
        outcomes = await asyncio.gather(*requests, return_exceptions=True)
        for index, (size, outcome) in enumerate(zip(sizes, outcomes, strict=True)):
            if index in refused:
                assert isinstance(outcome, RuntimeError)
            else:
                assert outcome == size
        assert await ours.request("send", "rtc_x", "after", within=20) == len("after")
        assert not reader.done()  # the other side still reads
    finally:
        ours.close()
        theirs.close()
        a.close()
        b.close()
        await asyncio.gather(reader, replies, return_exceptions=True)
