"""The service's answers to the capture process's ``store`` requests, a frame at a time.

The capture process sends one ``store`` request per transcript turn, and the requests of
about 25 ms share one frame (hundreds of calls: tens per frame). :class:`StoreAnswers`
answers all the requests the service's reader handed over before it next yields (a frame,
or several read at once) with one task and one queue write
(``MemoryRuntime.accept_captured_many``: one ``enqueue_many``, one group commit, one
time bound), instead of one task, one bound and one queue wait per turn. Each request
still gets its own answer, with the same body as before: ``[accepted, duplicates]``, or
a failure naming the error's type. One session's failure (another owner's session, a
call the service no longer holds, rows that do not parse) fails only its request; a
storage failure fails the frame's requests, as it would have failed each alone. A sink
without ``accept_captured_many`` (a stand-in) is asked per request, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol, cast

from engram_voice.realtime.calls.capture import StoreTurns
from engram_voice.realtime.calls.capture_proxy import RemoteCapture, to_messages
from engram_voice.realtime.calls.capture_wire import Channel, Request

__all__ = ["BatchSink", "StoreAnswers"]


class BatchSink(Protocol):
    """A capture sink that stores many sessions' turns in one write."""

    async def accept_captured_many(self, stores: Sequence[Any]) -> Sequence[Any]:
        """Store ``(session id, user id, agent, turns)`` each; one result or error each."""
        ...


Spawn = Callable[[Coroutine[Any, Any, None]], None]


def _counts(result: Any) -> list[int]:
    return [int(getattr(result, "accepted", 0)), int(getattr(result, "duplicates", 0))]


class StoreAnswers:
    """Collects ``store`` requests as the reader hands them over; answers them together."""

    def __init__(self, lookup: Callable[[str], RemoteCapture | None], spawn: Spawn) -> None:
        self._lookup = lookup
        self._spawn = spawn
        self._waiting: list[tuple[Request, Channel]] = []
        self.writes = 0
        """Batched queue writes made (each answers one or more requests)."""

    def add(self, request: Request, channel: Channel) -> None:
        """Take a ``store`` request; it is answered on ``channel`` with the others."""
        self._waiting.append((request, channel))
        if len(self._waiting) == 1:  # runs after the reader's current frame(s)
            self._spawn(self._answer_waiting())

    async def _answer_waiting(self) -> None:
        requests, self._waiting = self._waiting, []
        groups: dict[tuple[int, int], tuple[Channel, BatchSink, list[Request], list[Any]]] = {}
        for request, channel in requests:
            capture = self._lookup(request.call)
            store = capture.store if capture is not None else None
            if capture is None or store is None:
                channel.reply(request, ok=False, body=LookupError.__name__)
                continue
            try:
                messages = to_messages(request.body)
            except Exception as exc:  # noqa: BLE001 - answered as this request's failure
                channel.reply(request, ok=False, body=type(exc).__name__)
                continue
            owner = capture.owner
            batch: BatchSink | None = None
            if owner is not None and hasattr(owner[0], "accept_captured_many"):
                batch = cast("BatchSink", owner[0])
            if owner is None or batch is None:
                self._spawn(self._answer_one(channel, request, store, messages))
                continue
            key = (id(channel), id(batch))
            if key not in groups:
                groups[key] = (channel, batch, [], [])
            groups[key][2].append(request)
            groups[key][3].append((owner[1], owner[2], owner[3], messages))
        for channel, sink, asked, stores in groups.values():
            await self._answer_group(channel, sink, asked, stores)

    async def _answer_group(
        self, channel: Channel, sink: BatchSink, asked: list[Request], stores: list[Any]
    ) -> None:
        self.writes += 1
        try:
            results = await sink.accept_captured_many(stores)
        except Exception as exc:  # noqa: BLE001 - each is answered as a failure; they retry
            for request in asked:
                channel.reply(request, ok=False, body=type(exc).__name__)
            return
        for request, result in zip(asked, results, strict=True):
            if isinstance(result, BaseException):
                channel.reply(request, ok=False, body=type(result).__name__)
            else:
                channel.reply(request, body=_counts(result))

    @staticmethod
    async def _answer_one(
        channel: Channel, request: Request, store: StoreTurns, messages: Sequence[Any]
    ) -> None:
        try:
            result = await store(messages)
        except Exception as exc:  # noqa: BLE001 - answered as a failure; the other side retries
            channel.reply(request, ok=False, body=type(exc).__name__)
            return
        channel.reply(request, body=_counts(result))
