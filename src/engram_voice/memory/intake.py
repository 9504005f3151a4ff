"""How turns enter memory storage: the browser's posts, the server's own, capture marks.

:class:`TurnIntake` is the write side of the
:class:`~engram_voice.memory.runtime.MemoryRuntime` (which extends it with the queue's
lifecycle, the worker and ``/status``): it stores turns durably under their idempotency
key (session id + item id), rate-limits the browser's posts per session, keeps the
captured-session marks (:class:`~engram_voice.memory.captured.CaptureAuthority`: for a
session the server hears itself, the server's record is authoritative) and reads how far
a session's turns got. Every store and read is bounded; storage that is not connected yet
or cannot answer is 503 ``storage_unavailable`` with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import structlog

from engram_voice.errors import CapturePendingError, ForbiddenError, StorageUnavailableError
from engram_voice.memory import metrics
from engram_voice.memory.captured import CaptureAuthority
from engram_voice.memory.connect import StorageConnector
from engram_voice.memory.queue import (
    EnqueueBatch,
    EnqueueResult,
    QueueUnavailableError,
    SessionMismatchError,
    SessionProgress,
    TurnQueue,
)
from engram_voice.memory.ratelimit import SessionRateLimiter
from engram_voice.memory.runtime_status import STATUS_READ_SECONDS
from engram_voice.memory.schemas import EnrichMessage
from engram_voice.memory.tokens import MemoryClaims
from engram_voice.memory.worker import DeliveryWorker

__all__ = ["CapturedTurns", "TurnIntake"]

CapturedTurns = tuple[str, str, str, Sequence[EnrichMessage]]
"""One captured session's turns to store: ``(session id, user id, agent, turns)``."""
_R = TypeVar("_R")

_logger = structlog.get_logger("engram_voice.memory")


class TurnIntake:
    """Stores a session's turns durably, keeps its capture marks, reads its progress."""

    def __init__(
        self,
        *,
        queue: TurnQueue,
        worker: DeliveryWorker | None,
        connector: StorageConnector,
        open_in_background: bool,
        rate_limiter: SessionRateLimiter,
        progress_rate_limiter: SessionRateLimiter | None,
        store_timeout: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.worker = worker
        self.connector = connector
        """Opens the queue (and the sink's state), in the background when it is shared."""
        self._open_in_background = open_in_background
        self._rate = rate_limiter
        self._progress_rate = progress_rate_limiter or rate_limiter
        self._store_timeout = store_timeout
        self.captured = CaptureAuthority(queue, clock=clock, timeout=store_timeout)
        """Sessions whose transcripts the server hears itself (shared, in the queue)."""

    @property
    def connected(self) -> bool:
        """Return True unless a queue opened in the background is not open yet."""
        return self.connector.ready or not self._open_in_background

    def _not_connected(self, what: str) -> StorageUnavailableError:
        reason = self.connector.last_error or "connecting"
        return StorageUnavailableError(
            f"{what}: memory storage is not connected yet ({reason}); retry shortly",
            retry_after=self.connector.retry_after(),
        )

    async def accept_browser(
        self, claims: MemoryClaims, messages: Sequence[EnrichMessage]
    ) -> tuple[EnqueueResult, int]:
        """Store a browser's turns, unless the server captures the session itself.

        Returns the queue's result and the number of turns ignored as ``not_heard``. For a
        captured session nothing is stored: the server's record is authoritative (a turn
        it stored counts as a duplicate, any other turn is not heard and never reaches
        the memory store). While capture is expected (the sideband is connecting) the
        post is 503 ``capture_pending``: the browser posts it again.
        """
        self._rate.check(claims.session_id)  # before any read: a flood costs no queries
        if not self.connected:  # why, and when the next connection attempt is
            raise self._not_connected("transcripts cannot be stored right now")
        if self.captured.known_browser(claims.session_id):  # the common case: no read at all
            return await self.accept(claims, messages, rate_limited=False), 0
        try:
            decision = await self.captured.decide(claims.session_id, [m.id for m in messages])
        except (QueueUnavailableError, TimeoutError) as exc:
            raise StorageUnavailableError(
                "transcripts cannot be stored right now; retry shortly", retry_after=2
            ) from exc
        if decision.kind == "browser":
            return await self.accept(claims, messages, rate_limited=False), 0
        if decision.kind == "pending":
            metrics.TURNS_CAPTURE_PENDING.inc(len(messages))
            raise CapturePendingError(
                "the server is about to hear this session itself; post again shortly",
                retry_after=decision.retry_after,
            )
        heard = sum(1 for m in messages if m.id in decision.stored)
        not_heard = len(messages) - heard
        if not_heard:
            metrics.TURNS_NOT_HEARD.inc(not_heard)
            _logger.info(
                "memory.browser_turns_not_heard", session_id=claims.session_id, turns=not_heard
            )
        if heard:
            metrics.TURNS_DUPLICATE.inc(heard)
        return EnqueueResult(accepted=0, duplicates=heard), not_heard

    async def expect_capture(
        self, session_id: str, user_id: str, agent: str, *, window: float | None
    ) -> bool:
        """Mark a call's session at set-up, before its memory token exists; False if unstored.

        ``window``: seconds the sideband may take to come up (None: captured only once
        the upstream carries a transcript). False means the mark could not be stored
        (bounded): the call must never claim the session (the browser is its source).
        """
        try:
            await self.captured.expect(session_id, user_id, agent, window=window)
        except (QueueUnavailableError, TimeoutError) as exc:
            reason = exc.reason if isinstance(exc, QueueUnavailableError) else "timeout"
            _logger.warning("memory.capture_expect_failed", session_id=session_id, error=reason)
            return False
        return True

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
        """Mark ``session_id`` heard server-side (True) or fallen back to the browser (False).

        ``final``: the call ended while captured (the record holds for good, no lease).
        ``suspended``: nobody hears the call for now (its lease ends at once).
        ``pending``: the sideband is up, but its first item has yet to show that it heard
        the conversation from its start (still ``expected``, on a lease).
        """
        self.captured.mark(
            session_id,
            user_id,
            agent,
            captured=captured,
            final=final,
            suspended=suspended,
            pending=pending,
        )
        _logger.info(
            "memory.session_captured",
            session_id=session_id,
            captured=captured,
            final=final,
            suspended=suspended,
            pending=pending,
        )

    async def accept_captured(
        self, session_id: str, user_id: str, agent: str, messages: Sequence[EnrichMessage]
    ) -> EnqueueResult:
        """Store turns the server heard itself (no per-session rate limit; same key)."""
        claims = MemoryClaims(
            session_id=session_id, user_id=user_id, agent=agent, expires_at=0, key_id="server"
        )
        return await self.accept(claims, messages, rate_limited=False)

    async def accept_captured_many(
        self, stores: Sequence[CapturedTurns]
    ) -> list[EnqueueResult | ForbiddenError]:
        """Store several captured sessions' turns in one shared commit; one result each.

        ``stores``: ``(session id, user id, agent, turns)``, as :meth:`accept_captured`
        takes them. A session that belongs to another user or agent gets its
        :class:`ForbiddenError` in its place and the others are stored; storage that cannot
        take them raises :class:`StorageUnavailableError` for all (bounded, like one).
        """
        if not self.connected:
            raise self._not_connected("transcripts cannot be stored right now")
        batches = [_batch(*store) for store in stores]
        results = await self._enqueue(self.queue.enqueue_many(batches))
        answers: list[EnqueueResult | ForbiddenError] = []
        accepted = duplicates = 0
        for result in results:
            if isinstance(result, SessionMismatchError):
                answers.append(_not_yours())
                continue
            accepted += result.accepted
            duplicates += result.duplicates
            answers.append(result)
        self._count(accepted, duplicates)
        return answers

    async def accept(
        self,
        claims: MemoryClaims,
        messages: Sequence[EnrichMessage],
        *,
        rate_limited: bool = True,
    ) -> EnqueueResult:
        """Store the turns durably for the token's session and user; count duplicates."""
        if rate_limited:
            self._rate.check(claims.session_id)
        if not self.connected:
            raise self._not_connected("transcripts cannot be stored right now")
        batch = _batch(claims.session_id, claims.user_id, claims.agent, messages)
        try:
            result = await self._enqueue(self.queue.enqueue(batch))
        except SessionMismatchError:
            raise _not_yours() from None
        self._count(result.accepted, result.duplicates)
        return result

    async def _enqueue(self, write: Awaitable[_R]) -> _R:
        """Await a queue write within the store bound; storage failures are 503."""
        try:
            async with asyncio.timeout(self._store_timeout):
                return await write
        except (QueueUnavailableError, TimeoutError) as exc:
            # After a timeout the turns may still land; a retry is safe (idempotent).
            raise StorageUnavailableError(
                "transcripts cannot be stored right now; retry shortly", retry_after=2
            ) from exc

    def _count(self, accepted: int, duplicates: int) -> None:
        """Count stored and duplicate turns; wake the worker when something was stored."""
        metrics.TURNS_ACCEPTED.inc(accepted)
        if duplicates:
            metrics.TURNS_DUPLICATE.inc(duplicates)
        if accepted and self.worker is not None:
            self.worker.notify()

    async def progress(self, session_id: str) -> SessionProgress:
        """Return how far ``session_id``'s turns got; rate-limited per session like enrich.

        Bounded by STATUS_READ_SECONDS; storage that cannot answer is 503
        ``storage_unavailable`` (the caller polls again later).
        """
        self._progress_rate.check(session_id)
        if not self.connected:
            raise self._not_connected("memory progress cannot be read right now")
        try:
            async with asyncio.timeout(STATUS_READ_SECONDS):
                return await self.queue.session_progress(session_id)
        except (QueueUnavailableError, TimeoutError) as exc:
            reason = exc.reason if isinstance(exc, QueueUnavailableError) else type(exc).__name__
            _logger.warning("memory.progress_unavailable", session_id=session_id, reason=reason)
            raise StorageUnavailableError(
                "memory progress cannot be read right now; retry shortly", retry_after=2
            ) from exc


def _batch(
    session_id: str, user_id: str, agent: str, messages: Sequence[EnrichMessage]
) -> EnqueueBatch:
    """Return the queue's batch for one session's turns (the key is session + turn id)."""
    return EnqueueBatch(
        session_id=session_id,
        user_id=user_id,
        agent=agent,
        turns=[(m.id, m.role, m.text, m.at.isoformat() if m.at else None) for m in messages],
    )


def _not_yours() -> ForbiddenError:
    return ForbiddenError(
        "this session's memory belongs to another user or agent",
        extra={"errors": [{"field": "session_id", "message": "not yours"}]},
    )
