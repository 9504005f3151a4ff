"""What a sink must remember durably: its ids for our ids, and what it already delivered.

Zep v4 addresses users and threads by UUIDs it generates, and has no client message id;
so the v4 sink keeps, next to the queue:

- the **id map**: our user id → Zep user UUID, our session id → Zep thread UUID;
- the **batch in flight** per session (its ``Idempotency-Key``, the thread it went to and
  its messages), written *before* the call and cleared after Zep's answer: a redelivery
  after a crash or a timeout re-sends exactly that batch with the same key, however the
  queue packs the turns next time;
- **delivered records**: (session, turn id, part) of every message Zep acknowledged, so
  a turn is never sent again once Zep took it (a replayed dead letter, a browser retry
  after the queue forgot the turn).

:class:`SinkStateStore` is the seam; :mod:`engram_voice.memory.sqlite_sink_state` keeps
it in the queue's SQLite file, :mod:`engram_voice.memory.postgres_sink_state` in the
PostgreSQL queue's database (shared by every replica); the queue backend picks which.
Both keep a batch's messages in the same stored form (:func:`encode_messages`) and purge
in the same bounded steps (:func:`purge_in_steps`), over their own SQL and driver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import msgspec

from engram_voice.memory.sink import SinkMessage

__all__ = [
    "MessageKey",
    "PendingBatch",
    "SinkStateStore",
    "decode_messages",
    "encode_messages",
    "purge_in_steps",
]

MessageKey = tuple[str, int]
"""(turn id, part) of a message within its session."""
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder(list[SinkMessage])


class PendingBatch(msgspec.Struct, frozen=True):
    """A batch sent (or about to be sent) whose answer was not recorded yet."""

    key: str
    """The batch's ``Idempotency-Key``."""
    target: str
    """The Zep thread UUID it was sent to."""
    messages: list[SinkMessage]


class SinkStateStore(Protocol):
    """Durable id map, batch in flight and delivered records of one sink kind."""

    async def open(self) -> None:
        """Open storage (create or migrate its schema)."""

    async def close(self) -> None:
        """Close storage."""

    async def get_id(self, kind: str, our_id: str) -> str | None:
        """Return the sink's id stored for ``(kind, our_id)``, or None."""

    async def put_id(
        self, kind: str, our_id: str, sink_id: str, *, now: float, replacing: str | None = None
    ) -> str:
        """Store ``sink_id`` for ``(kind, our_id)`` unless one is stored; return the one stored.

        An id stored already is kept (the first of two racing writers wins; both use its
        id) unless it is ``replacing`` (the id the caller found gone), which is replaced.
        """

    async def forget_id(self, kind: str, our_id: str) -> None:
        """Drop a stored id (the sink no longer knows it)."""

    async def pending(self, session_id: str) -> PendingBatch | None:
        """Return the session's batch in flight, if any."""

    async def begin(self, session_id: str, batch: PendingBatch, *, now: float) -> None:
        """Record the batch as in flight (durably, before it is sent)."""

    async def abandon(self, session_id: str, key: str) -> None:
        """Drop the batch in flight with this key (the sink refused it for good)."""

    async def complete(
        self, session_id: str, key: str, delivered: Sequence[MessageKey], *, now: float
    ) -> None:
        """In one transaction: drop the batch in flight, record its messages as delivered."""

    async def delivered(self, session_id: str, keys: Sequence[MessageKey]) -> set[MessageKey]:
        """Return which of ``keys`` are recorded as delivered."""

    async def purge(self, *, older_than: float) -> int:
        """Forget delivered records (and batches left in flight) older than ``older_than``.

        In bounded steps (short transactions; a bounded number per call, the rest at the
        next purge). Returns how many delivered records were forgotten.
        """


def encode_messages(messages: list[SinkMessage]) -> bytes:
    """Return the stored form of a batch's messages (msgpack, the same in every store)."""
    return _ENCODER.encode(messages)


def decode_messages(blob: bytes) -> list[SinkMessage]:
    """Return a batch's messages from their stored form."""
    return _DECODER.decode(blob)


async def purge_in_steps(
    step: Callable[[], Awaitable[tuple[int, int]]], *, limit: int, max_steps: int
) -> int:
    """Run ``step`` until it removes fewer than ``limit`` rows of each kind; bounded.

    ``step`` is one short transaction forgetting at most ``limit`` batches left in flight
    and ``limit`` delivered records; it returns how many of each went. At most
    ``max_steps`` steps run (the rest goes at the next purge), yielding to the event loop
    between them. Returns how many delivered records were forgotten.
    """
    removed = 0
    for _ in range(max_steps):
        batches, records = await step()
        removed += records
        if batches < limit and records < limit:
            break
        await asyncio.sleep(0)
    return removed
