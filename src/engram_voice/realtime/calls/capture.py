"""Server-side transcript capture: a call's upstream events in, ordered turns to the queue.

An upstream (the Azure OpenAI sideband, a Voice Live control channel that mirrors
data-channel events) calls :meth:`TurnCapture.feed` with every decoded server event; the
method is synchronous, cheap and never raises, so a socket reader is never blocked.
Items are placed in conversation order by ``previous_item_id`` (from
``conversation.item.added``, Voice Live's ``conversation.item.created``), transcripts
(user: ``conversation.item.input_audio_transcription.completed``; assistant:
``response.output_audio_transcript.done``, Voice Live ``response.audio_transcript.done``)
are attached to their item, and a turn is released only once every earlier message
turn has its transcript (a user's transcript can arrive after the assistant's answer),
has failed transcription, or is :data:`MAX_HELD` turns behind. Released turns are stored
by a writer task through the injected ``store`` callable (the memory runtime, keyed by
session id + item id: the same key as the browser's posts), with bounded retries; a
failure is logged and counted, never raised into the call. ``response.done`` usage is
handed to the optional ``on_usage`` hook. Memory is bounded: at most :data:`MAX_ITEMS`
items are tracked and :data:`MAX_READY` turns wait for the writer.

The first item a channel carries tells whether it heard the conversation from its start
(:attr:`TurnCapture.began`): an item with no ``previous_item_id`` opened it; one whose
``previous_item_id`` this channel never saw, or a transcript of an item whose item event
it never carried, follows items said before the channel came up, which nobody here heard
(the owner then hands the session to the browser, see ``AzureOpenAICall.bind_owner``).
The realtime API cannot fill that gap: ``conversation.item.retrieved`` carries the item
alone, without its ``previous_item_id``, so the items before it cannot be enumerated.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import re
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import structlog

from engram_voice.memory.schemas import MAX_MESSAGES, MAX_TEXT_CHARS, EnrichMessage
from engram_voice.realtime.calls.metrics import CAPTURED_TURNS

__all__ = [
    "CAPTURED_EVENTS",
    "CAPTURED_TURNS",
    "MAX_HELD",
    "MAX_ITEMS",
    "MAX_READY",
    "CaptureSink",
    "StoreTurns",
    "TurnCapture",
    "UsageHook",
    "owner_store",
]

MAX_ITEMS = 2_000
"""Most conversation items one capture tracks (the oldest released ones are forgotten)."""
MAX_READY = 1_000
"""Most turns waiting for the writer; beyond it new turns are dropped (and counted)."""
MAX_HELD = 4
"""A turn without its transcript is skipped once this many later turns are complete."""
STORE_ATTEMPTS = 3
CLOSE_SECONDS = 5.0
"""Bound on storing what is left when the call ends."""
USER_TRANSCRIPT = "conversation.item.input_audio_transcription.completed"
USER_TRANSCRIPT_FAILED = "conversation.item.input_audio_transcription.failed"
ASSISTANT_TRANSCRIPTS = frozenset(
    {"response.output_audio_transcript.done", "response.audio_transcript.done"}
)
ITEM_EVENTS = frozenset({"conversation.item.added", "conversation.item.created"})
USAGE_EVENT = "response.done"
CAPTURED_EVENTS = (
    ITEM_EVENTS
    | ASSISTANT_TRANSCRIPTS
    | {
        USER_TRANSCRIPT,
        USER_TRANSCRIPT_FAILED,
        USAGE_EVENT,
    }
)
"""Every event type :meth:`TurnCapture.feed` reads; an upstream need not decode the others."""
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


StoreTurns = Callable[[Sequence[EnrichMessage]], Awaitable[Any]]
"""Stores turns durably for the call's session (returns the queue's result or raises)."""


class CaptureSink(Protocol):
    """Where captured turns go: the memory runtime (see ``MemoryRuntime.accept_captured``)."""

    async def accept_captured(
        self, session_id: str, user_id: str, agent: str, messages: Sequence[EnrichMessage]
    ) -> Any:
        """Store ``messages`` durably for the session, keyed by (session id, item id)."""
        ...

    async def expect_capture(
        self, session_id: str, user_id: str, agent: str, *, window: float | None
    ) -> bool:
        """Mark the session at set-up (before its memory token exists); False if unstored."""
        ...

    def mark_captured(
        self,
        session_id: str,
        *,
        captured: bool,
        user_id: str = "",
        agent: str = "",
        final: bool = False,
        suspended: bool = False,
        pending: bool = False,
    ) -> None:
        """Mark the session heard server-side (or fallen back to the browser's posts).

        ``final``: the call ended while captured (the record holds for good).
        ``suspended``: nobody hears the call for now (the browser's posts count meanwhile).
        ``pending``: heard from now on, but turns said before may not have been (the
        browser's posts are held back until the first item tells).
        """
        ...


def owner_store(sink: CaptureSink, *, session_id: str, user_id: str, agent_id: str) -> StoreTurns:
    """Return the :data:`StoreTurns` that stores a call's turns in ``sink`` for its owner."""

    async def store(messages: Sequence[EnrichMessage]) -> Any:
        return await sink.accept_captured(session_id, user_id, agent_id, messages)

    return store


UsageHook = Callable[[str, dict[str, Any]], None]
"""Receives ``(call id, response.done usage)`` for each response (usage metering): the
service's call id (``rc_…``) once the registry holds the call, its session id before."""
_logger = structlog.get_logger("engram_voice.realtime.calls")


class _Item:
    __slots__ = ("failed", "role", "text")

    def __init__(self, role: str | None) -> None:
        self.role = role
        self.text: str | None = None
        self.failed = False


class TurnCapture:
    """One call's transcripts, ordered and handed to the durable queue."""

    def __init__(
        self,
        *,
        upstream: str,
        call_id: str,
        session_id: str,
        store: StoreTurns | None = None,
        on_usage: UsageHook | None = None,
        retry_seconds: float = 0.5,
    ) -> None:
        self.usage_call_id = session_id
        """The id usage is reported under: the session id (``vs_…``), then the service's call
        id (``rc_…``) once bound; the usage meter finds a call by either."""
        self.keep_turns = True
        """False when there is nowhere to store turns (memory disabled): they are not kept."""
        self.on_heard: Callable[[], None] | None = None
        """Called once, at the first transcript heard (Voice Live: the channel carries them)."""
        self.heard = False
        self.began: bool | None = None
        """None until the first item; then True when this channel heard the conversation
        from its first item, False when items were said before it (unheard here)."""
        self.on_began: Callable[[bool], None] | None = None
        """Called once, with :attr:`began`, at the first item this channel carries."""
        self.on_gap: Callable[[], None] | None = None
        """Called when a turn heard here will not be stored (the server's record has a gap:
        the session's browser must be its source again)."""
        self.upstream = upstream
        self.call_id = call_id
        self.session_id = session_id
        self._store = store
        self._on_usage = on_usage
        self._retry = retry_seconds
        self._items: dict[str, _Item | None] = {}
        """Tracked items by id; None once released (stored or skipped): only the id is kept."""
        self._order: list[str] = []
        self._next = 0
        self._ready: deque[EnrichMessage] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._writer: asyncio.Task[None] | None = None
        self.counts: dict[str, int] = {}

    def bind(self, store: StoreTurns) -> None:
        """Set where turns go (once the call's owner is known); turns held so far follow."""
        self._store = store
        self._wake.set()
        self._ensure_writer()

    def bind_owner(
        self,
        sink: CaptureSink | None,
        *,
        session_id: str,
        user_id: str,
        agent_id: str,
        call_id: str | None = None,
    ) -> bool:
        """Report usage under ``call_id`` and store turns in ``sink`` for this owner.

        Returns False when there is no sink (memory disabled: usage only, no turns kept).
        """
        if call_id is not None:
            self.usage_call_id = call_id
        if sink is None:
            self.keep_turns = False
            return False
        self.bind(owner_store(sink, session_id=session_id, user_id=user_id, agent_id=agent_id))
        return True

    def feed(self, event: dict[str, Any]) -> None:
        """Take one server event (synchronous; never raises, never blocks)."""
        try:
            self._feed(event)
        except Exception:  # a malformed event must never break the socket reader
            _logger.warning("realtime.capture_event_skipped", call=self.call_id, exc_info=True)

    async def close(self) -> None:
        """Release every turn still held and store what is ready (bounded), then stop."""
        if self._closing:
            return
        self._closing = True
        self._release(final=True)
        self._wake.set()
        writer = self._writer
        if writer is None and self._ready and self._store is not None:
            writer = self._ensure_writer()
        if writer is not None:
            done, _ = await asyncio.wait({writer}, timeout=CLOSE_SECONDS)
            if not done:
                writer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writer
                self._gap()  # a batch in flight may not have been stored
        if self._ready:
            self._count("failed", len(self._ready))
            _logger.warning(
                "realtime.capture_lost", call=self.call_id, session_id=self.session_id,
                turns=len(self._ready),
            )  # fmt: skip
            self._ready.clear()
            self._gap()

    # -- ordering -------------------------------------------------------------------------

    def _feed(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in ITEM_EVENTS:
            item = event.get("item")
            if isinstance(item, dict):
                self._add_item(item, event.get("previous_item_id"))
        elif kind == USER_TRANSCRIPT:
            self._transcript(event.get("item_id"), "user", event.get("transcript"))
        elif kind in ASSISTANT_TRANSCRIPTS:
            self._transcript(event.get("item_id"), "assistant", event.get("transcript"))
        elif kind == USER_TRANSCRIPT_FAILED:
            item_id = event.get("item_id")
            item = self._items.get(item_id) if isinstance(item_id, str) else None
            if item is not None:
                item.failed = True
                self._release()
        elif kind == USAGE_EVENT and self._on_usage is not None:
            response = event.get("response")
            usage = response.get("usage") if isinstance(response, dict) else None
            if isinstance(usage, dict):
                self._on_usage(self.usage_call_id, usage)

    def _add_item(self, item: dict[str, Any], previous: Any) -> None:
        item_id = item.get("id")
        if not isinstance(item_id, str) or item_id in self._items:
            return
        is_turn = item.get("type") == "message" and item.get("role") in {"user", "assistant"}
        self._items[item_id] = _Item(item.get("role") if is_turn else None)
        previous = previous if isinstance(previous, str) else None
        if self.began is None:  # once per call: did this channel hear the conversation begin?
            self._begin(began=previous is None)
        self._place(item_id, previous)
        self._trim()

    def _place(self, item_id: str, previous: str | None) -> None:
        if previous is not None and previous in self._items:
            with contextlib.suppress(ValueError):
                index = self._order.index(previous, self._next)
                self._order.insert(index + 1, item_id)
                return
        self._order.append(item_id)

    def _transcript(self, item_id: Any, role: str, text: Any) -> None:
        if not isinstance(item_id, str) or not isinstance(text, str):
            return
        if item_id not in self._items:  # a transcript whose item event this channel did not carry
            if self.began is None:  # the item was added before the channel came up
                self._begin(began=False)
            self._items[item_id] = _Item(role)
            self._order.append(item_id)
        item = self._items[item_id]
        if item is not None:  # None: released already, a repeat changes nothing
            if item.role is None:
                item.role = role
            item.text = text
        if not self.heard:
            self.heard = True
            if self.on_heard is not None:
                self.on_heard()
        self._release()

    def _begin(self, *, began: bool) -> None:
        self.began = began
        if not began:
            _logger.info(
                "realtime.capture_began_late", call=self.call_id, session_id=self.session_id
            )
        hook, self.on_began = self.on_began, None
        if hook is not None:
            try:
                hook(began)
            except Exception:
                _logger.exception("realtime.capture_began_hook_failed", call=self.call_id)

    def _release(self, *, final: bool = False) -> None:
        while self._next < len(self._order):
            item_id = self._order[self._next]
            item = self._items[item_id]
            if item is None or item.role is None or item.failed or item.text == "":
                self._advance(item_id)
                continue
            if item.text is None:
                if not final and self._complete_after(self._next) < MAX_HELD:
                    return
                self._count("skipped")
                self._advance(item_id)
                continue
            self._emit(item_id, item)
            self._advance(item_id)
        self._wake.set()

    def _advance(self, item_id: str) -> None:
        # Only the id of a released item is kept (to ignore its repeats): no object per
        # item for the collector to scan on long calls, and no transcript held in memory.
        self._items[item_id] = None
        self._next += 1

    def _complete_after(self, index: int) -> int:
        count = 0
        for item_id in self._order[index + 1 :]:
            item = self._items[item_id]
            if item is not None and item.text is not None:
                count += 1
        return count

    def _emit(self, item_id: str, item: _Item) -> None:
        if not self.keep_turns:
            return
        text = (item.text or "").replace("\x00", "")[:MAX_TEXT_CHARS].strip()
        if not text or not _ID.match(item_id) or item.role not in {"user", "assistant"}:
            self._count("skipped")
            return
        if len(self._ready) >= MAX_READY:
            self._count("dropped")
            self._gap()
            return
        at = dt.datetime.now(dt.UTC)
        if item.role == "user":
            turn = EnrichMessage(id=item_id, role="user", text=text, at=at)
        else:
            turn = EnrichMessage(id=item_id, role="assistant", text=text, at=at)
        self._ready.append(turn)
        self._ensure_writer()

    def _trim(self) -> None:
        if len(self._order) <= MAX_ITEMS:
            return
        cut = min(self._next, len(self._order) - MAX_ITEMS)
        for item_id in self._order[:cut]:
            self._items.pop(item_id, None)
        del self._order[:cut]
        self._next -= cut

    # -- the writer -------------------------------------------------------------------------

    def _ensure_writer(self) -> asyncio.Task[None] | None:
        if self._writer is None and self._store is not None:
            self._writer = asyncio.create_task(self._write(), name=f"capture-{self.call_id}")
        return self._writer

    async def _write(self) -> None:
        while True:
            if not self._ready:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._ready.popleft() for _ in range(min(MAX_MESSAGES, len(self._ready)))]
            await self._store_batch(batch)

    async def _store_batch(self, batch: list[EnrichMessage]) -> None:
        store = self._store
        if store is None:  # the writer starts only once a store is bound
            return
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                result = await store(batch)
            except Exception as exc:  # noqa: BLE001 - never break the call: log and count
                if attempt == STORE_ATTEMPTS:
                    self._count("failed", len(batch))
                    _logger.warning(
                        "realtime.capture_store_failed",
                        call=self.call_id,
                        session_id=self.session_id,
                        turns=len(batch),
                        error=type(exc).__name__,
                    )
                    self._gap()
                    return
                await asyncio.sleep(self._retry * attempt)
                continue
            accepted = int(getattr(result, "accepted", len(batch)))
            duplicates = int(getattr(result, "duplicates", 0))
            self._count("stored", accepted)
            self._count("duplicate", duplicates)
            _logger.debug(
                "realtime.capture_stored", call=self.call_id, accepted=accepted,
                duplicates=duplicates,
            )  # fmt: skip
            return

    def _gap(self) -> None:
        hook, self.on_gap = self.on_gap, None  # once: the fallback is final
        if hook is not None:
            try:
                hook()
            except Exception:
                _logger.exception("realtime.capture_gap_hook_failed", call=self.call_id)

    def _count(self, outcome: str, n: int = 1) -> None:
        if n <= 0:
            return
        self.counts[outcome] = self.counts.get(outcome, 0) + n
        CAPTURED_TURNS.labels(self.upstream, outcome).inc(n)
