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
  from the first transcript its control channel carries). If that mark cannot be stored
  (:class:`CaptureAuthority.expect` raises), the call keeps its token and never claims
  the session: the browser is its source.
- ``captured`` once the sideband is up and its first item showed it heard the call from
  its start (a first item after turns said earlier makes it ``lost``; between the two the
  session stays ``expected`` on a lease the replica renews), with a lease
  (:data:`LEASE_SECONDS`) the replica holding the call renews; when the call ends while
  captured the record stays ``captured`` for good (no lease). A lease that lapses means
  the replica died mid-call: nobody hears the call any more, so the browser's posts are
  the source again rather than lost. A restarted replica (or any other) still treats a
  session as captured while its lease holds, and for good once its call ended.
- ``lost`` once the sideband is lost for good, or the call ended before it ever came up.
  Then the browser's posts are the source again.
- While ``expected``, a browser's post gets 503 ``capture_pending`` with ``Retry-After``:
  the browser keeps its turns and posts them again, so no turn is lost and none unheard
  is admitted. The expectation lapses at ``state_until`` (the sideband's connect
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
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from engram_voice.memory.queue import QueueUnavailableError, TurnQueue

__all__ = [
    "CAPTURED_UPSTREAMS",
    "LEASE_SECONDS",
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
LEASE_SECONDS = 60.0
"""How long a live capture holds without its replica renewing it (renewed every third)."""
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
        self._live: OrderedDict[str, None] = OrderedDict()
        """Sessions this replica captures now (leases it renews), the most recent ``max``."""
        self._waiting: OrderedDict[str, tuple[str, str]] = OrderedDict()
        """Captures up but waiting for their first item (``expected`` leases it renews)."""
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
                state_until=now + window if window is not None else None,
            )

    def mark(
        self,
        session_id: str,
        user_id: str,
        agent: str,
        *,
        captured: bool,
        final: bool = False,
        suspended: bool = False,
        pending: bool = False,
    ) -> None:
        """Store a capture change in the background (bounded retries).

        ``captured`` with a lease this replica renews while it holds the call (sideband
        up); ``captured`` and ``final``: the call ended while captured, for good;
        ``captured`` and ``suspended``: nobody hears the call right now (the sideband
        dropped and is reopening), so its lease ends now and the browser's posts are
        stored meanwhile; ``captured`` and ``pending``: the sideband is up but its first
        item has yet to show that nothing was said before it came up, so the session
        stays ``expected`` on a lease this replica renews (the browser's posts are held
        back); not ``captured``: ``lost`` (the browser's posts are the source again, on
        this replica at once: ``lost`` is final).
        """
        state, until = ("captured" if captured else "lost"), None
        self._waiting.pop(session_id, None)
        if captured and pending:
            state, until = "expected", self._clock() + LEASE_SECONDS
            self._live.pop(session_id, None)  # stored as expected: not a capture it renews
            self._waiting[session_id] = (user_id, agent)
            while len(self._waiting) > self._max:
                self._waiting.popitem(last=False)
        elif captured and not final and not suspended:
            self._live[session_id] = None
            self._live.move_to_end(session_id)
            while len(self._live) > self._max:
                self._live.popitem(last=False)
            until = self._clock() + LEASE_SECONDS
        else:
            if captured and suspended:
                # lapsed, by a whole lease so a replica whose clock lags reads it so too
                until = self._clock() - LEASE_SECONDS
            if session_id in self._live:
                del self._live[session_id]
                if not captured:
                    self.fallbacks += 1
        if not captured:
            self._remember_browser(session_id)  # final; other replicas once it is stored
        task = asyncio.create_task(
            self._write_mark(session_id, user_id, agent, state, until), name="memory-capture-mark"
        )
        self._marks.add(task)
        task.add_done_callback(self._marks.discard)

    async def renew(self) -> None:
        """Extend the leases this replica holds: two bounded writes at most, whatever the count.

        Captures waiting for their first item are re-marked ``expected`` together (one
        write), then the live captures' leases are extended (one write).
        """
        if self._waiting:
            waiting = [(s, user, agent) for s, (user, agent) in self._waiting.items()]
            now = self._clock()
            await self._renewing(
                self._queue.mark_captures(
                    waiting, state="expected", now=now, state_until=now + LEASE_SECONDS
                ),
                len(waiting),
            )
        if self._live:
            now = self._clock()
            await self._renewing(
                self._queue.renew_capture(list(self._live), until=now + LEASE_SECONDS, now=now),
                len(self._live),
            )

    async def _renewing(self, write: Coroutine[Any, Any, Any], sessions: int) -> None:
        """Await one renewal write within the bound; a failure is logged (the next tick retries)."""
        try:
            async with asyncio.timeout(self._timeout):
                await write
        except (QueueUnavailableError, TimeoutError) as exc:
            reason = exc.reason if isinstance(exc, QueueUnavailableError) else "timeout"
            _logger.warning("memory.capture_renew_failed", sessions=sessions, error=reason)

    async def run_renewals(self) -> None:
        """Renew every third of the lease until cancelled (the runtime's background task)."""
        while True:
            await asyncio.sleep(LEASE_SECONDS / 3)
            await self.renew()

    async def _write_mark(
        self, session_id: str, user_id: str, agent: str, state: str, until: float | None
    ) -> None:
        for attempt in range(MARK_ATTEMPTS):
            try:
                async with asyncio.timeout(self._timeout):
                    await self._queue.mark_capture(
                        session_id=session_id,
                        user_id=user_id,
                        agent=agent,
                        state=state,
                        now=self._clock(),
                        state_until=until,
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
            if found.state_until is None or found.state_until > self._clock():
                return CaptureDecision("captured", stored=found.stored)
            return _BROWSER  # its replica stopped renewing (it died): no one hears the call
        if found.state == "expected":
            left = (found.state_until or 0.0) - self._clock()
            if left > 0:
                return CaptureDecision("pending", retry_after=max(1, min(5, round(left))))
        return _BROWSER  # "browser", or an expectation that lapsed: the browser is the source

    def _remember_browser(self, session_id: str) -> None:
        self._browser[session_id] = None
        self._browser.move_to_end(session_id)
        while len(self._browser) > self._max:
            self._browser.popitem(last=False)

    def describe(self) -> dict[str, Any]:
        """Return the counts for ``/status`` (this replica's; no session ids).

        ``awaiting_first_item``: calls whose sideband is up but whose first item has yet
        to show the sideband heard the conversation from its start (still ``expected``:
        the browser's posts are held back); they are not in ``captured`` yet.
        """
        return {
            "which": CAPTURED_UPSTREAMS,
            "shared": True,
            "captured": len(self._live),
            "awaiting_first_item": len(self._waiting),
            "fell_back_to_browser": self.fallbacks,
            "marks_failed": self.marks_failed,
            "remembered": len(self._browser),
        }


_BROWSER = CaptureDecision("browser")
