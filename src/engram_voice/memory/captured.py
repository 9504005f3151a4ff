"""Sessions the server hears itself: for them the server's transcript is authoritative.

A call set up through the service whose upstream gives the server the transcripts (the
Azure OpenAI sideband) is *captured*: its turns are enqueued server-side
(:meth:`MemoryRuntime.accept_captured`) and a browser's ``POST /memory/enrich`` for the
session stores nothing (turns the server stored count as duplicates, any other as
``not_heard``). The record lives in the shared queue (``TurnQueue.mark_capture`` /
``capture_state``), so every replica, and a restarted one, decides alike; the turns the
server stored are the queue's own rows, keyed by (session id, turn id).

The states (:data:`~engram_voice.memory.queue.CAPTURE_STATES`) only move forward:

- At call set-up, *before* the memory token is handed out, the session is marked
  ``expected`` (the sideband is being opened) or ``browser`` (Voice Live: captured only
  from the first transcript its control channel carries). If that mark cannot be stored,
  the call gets no memory token (:class:`CaptureAuthority.expect` raises).
- ``captured`` once the sideband is up; ``lost`` once it is lost for good, or the call
  ended before it ever came up. Then the browser's posts are the source again.
- While ``expected``, a browser's post gets 503 ``capture_pending`` with ``Retry-After``:
  the browser keeps its turns and posts them again, so no turn is lost and none unheard
  is admitted. The expectation lapses at ``expected_until`` (the sideband's connect
  bounds), so a replica that died while connecting never holds the browser back for long.

The one per-replica cache holds only *final* answers: a session with no record (its
record would have been written before its token existed, so none can appear later) and a
``lost`` one. It can be stale only towards "ask the store again", never towards admitting
a turn the server did not hear. Marks after set-up (from the sideband's state hooks) are
written in the background with bounded retries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from engram_voice.memory.queue import QueueUnavailableError, TurnQueue

__all__ = [
    "CAPTURED_UPSTREAMS",
    "MARK_ATTEMPTS",
    "MAX_SESSIONS",
    "CaptureAuthority",
    "CaptureDecision",
]

CAPTURED_UPSTREAMS = {
    "azure-openai": "calls through the service: always (the sideband), unless it was lost",
    "voice-live": "only if its control channel carries transcripts (from the first one)",
    "sessions": "POST /realtime/sessions: never (the browser's posts are the source)",
}
"""Which sessions the server captures, as ``/status`` states it."""
MAX_SESSIONS = 50_000
"""Most sessions whose final answer ("the browser is the source") one replica caches."""
MARK_ATTEMPTS = 5
"""Tries to store a mark from a sideband state change (backoff 0.5, 1, 2, 4 s)."""
_logger = structlog.get_logger("engram_voice.memory")


@dataclass(frozen=True)
class CaptureDecision:
    """What a browser's post for a session gets: stored, held back, or checked against ids."""

    kind: str
    """``browser`` (store the posted turns), ``pending`` (503, post again), ``captured``."""
    stored: frozenset[str] = field(default_factory=frozenset)
    """For ``captured``: which posted ids the server stored (the others were not heard)."""
    retry_after: int = 1


class CaptureAuthority:
    """The shared record of captured sessions, with the one safe per-replica cache."""

    def __init__(
        self,
        queue: TurnQueue,
        *,
        clock: Callable[[], float],
        timeout: float,
        max_sessions: int = MAX_SESSIONS,
        retry_seconds: float = 0.5,
    ) -> None:
        self._queue = queue
        self._clock = clock
        self._timeout = timeout
        self._max = max_sessions
        self._retry = retry_seconds
        self._browser: OrderedDict[str, None] = OrderedDict()
        """Sessions whose browser is the source for good (no record, or capture lost)."""
        self._marks: set[asyncio.Task[None]] = set()
        self._held: OrderedDict[str, str] = OrderedDict()
        """Sessions this replica marked captured (``/status``), the most recent ``max``."""
        self.fallbacks = 0
        self.marks_failed = 0

    async def expect(
        self, session_id: str, user_id: str, agent: str, *, window: float | None
    ) -> None:
        """Mark a session at call set-up, before its token exists (bounded; raises on failure).

        ``window`` seconds of ``expected`` (the sideband is connecting); None marks it
        ``browser`` (the upstream may start carrying transcripts later).
        """
        now = self._clock()
        async with asyncio.timeout(self._timeout):
            await self._queue.mark_capture(
                session_id=session_id,
                user_id=user_id,
                agent=agent,
                state="expected" if window is not None else "browser",
                now=now,
                expected_until=now + window if window is not None else None,
            )

    def mark(self, session_id: str, user_id: str, agent: str, *, captured: bool) -> None:
        """Store ``captured`` (sideband up) or ``lost`` (gone for good) in the background."""
        state = "captured" if captured else "lost"
        if captured:
            self._held[session_id] = state
            while len(self._held) > self._max:
                self._held.popitem(last=False)
        elif self._held.pop(session_id, None) is not None:
            self.fallbacks += 1
        task = asyncio.create_task(
            self._write_mark(session_id, user_id, agent, state), name="memory-capture-mark"
        )
        self._marks.add(task)
        task.add_done_callback(self._marks.discard)

    async def _write_mark(self, session_id: str, user_id: str, agent: str, state: str) -> None:
        for attempt in range(MARK_ATTEMPTS):
            try:
                async with asyncio.timeout(self._timeout):
                    await self._queue.mark_capture(
                        session_id=session_id,
                        user_id=user_id,
                        agent=agent,
                        state=state,
                        now=self._clock(),
                    )
            except (QueueUnavailableError, TimeoutError) as exc:
                reason = exc.reason if isinstance(exc, QueueUnavailableError) else "timeout"
                if attempt + 1 == MARK_ATTEMPTS:
                    self.marks_failed += 1
                    _logger.error(  # noqa: TRY400 - a neutral reason, no traceback wanted
                        "memory.capture_mark_failed",
                        session_id=session_id,
                        state=state,
                        error=reason,
                    )
                    return
                await asyncio.sleep(self._retry * 2**attempt)
            else:
                if state == "lost":
                    self._remember_browser(session_id)
                return

    async def settle(self, bound: float) -> None:
        """Wait (at most ``bound`` seconds) for marks still being written; cancel the rest."""
        marks = set(self._marks)
        if not marks:
            return
        _, late = await asyncio.wait(marks, timeout=bound)
        for task in late:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*late, return_exceptions=True)

    def known_browser(self, session_id: str) -> bool:
        """Return True when this replica knows the browser is the session's source for good."""
        if session_id not in self._browser:
            return False
        self._browser.move_to_end(session_id)
        return True

    async def decide(self, session_id: str, message_ids: Sequence[str]) -> CaptureDecision:
        """Return what a browser's post of ``message_ids`` for ``session_id`` gets.

        A cached final answer costs a dictionary lookup; otherwise one bounded read of
        the shared record. Raises :class:`QueueUnavailableError` or ``TimeoutError``
        when the record cannot be read (the post must not be stored unchecked).
        """
        if self.known_browser(session_id):
            return _BROWSER
        async with asyncio.timeout(self._timeout):
            found = await self._queue.capture_state(session_id, message_ids)
        if found is None or found.state == "lost":
            self._remember_browser(session_id)  # final: no record can appear after the token
            return _BROWSER
        if found.state == "captured":
            return CaptureDecision("captured", stored=found.stored)
        if found.state == "expected":
            left = (found.expected_until or 0.0) - self._clock()
            if left > 0:
                return CaptureDecision("pending", retry_after=max(1, min(5, round(left))))
        return _BROWSER  # "browser", or an expectation that lapsed: the browser is the source

    def _remember_browser(self, session_id: str) -> None:
        self._browser[session_id] = None
        self._browser.move_to_end(session_id)
        while len(self._browser) > self._max:
            self._browser.popitem(last=False)

    def describe(self) -> dict[str, Any]:
        """Return the counts for ``/status`` (this replica's; no session ids)."""
        return {
            "which": CAPTURED_UPSTREAMS,
            "shared": True,
            "captured": sum(1 for state in self._held.values() if state == "captured"),
            "fell_back_to_browser": self.fallbacks,
            "marks_failed": self.marks_failed,
            "remembered": len(self._browser),
        }


_BROWSER = CaptureDecision("browser")
