"""Delivering one claimed session: its batches in order, under its lease, and each outcome.

:class:`SessionDelivery` is what the :class:`~engram_voice.memory.worker.DeliveryWorker`
runs for every session it claims: it keeps the session's lease alive, packs the claimed
turns into batches, sends each through the :class:`~engram_voice.memory.delivery.Deliverer`
and records the outcome in the queue. Failures are durable: a transient one schedules the
session with exponential backoff and jitter (at least ``Retry-After``); too many attempts,
too old a turn, or a permanent rejection move the batch to dead letters. The session is
always released at the end, ready again from now.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog

from engram_voice.memory import metrics
from engram_voice.memory.circuit import CircuitBreaker
from engram_voice.memory.delivery import Batch, Deferred, Delivered, Deliverer, pack_batches
from engram_voice.memory.lease import LeaseLostError, SessionLease
from engram_voice.memory.queue import ClaimedSession, TurnQueue

if TYPE_CHECKING:
    from engram_voice.memory.worker import DrainReport, WorkerOptions

__all__ = ["SessionDelivery"]

_logger = structlog.get_logger("engram_voice.memory.worker")


class SessionDelivery:
    """Delivers claimed sessions into the sink and records each batch's outcome."""

    def __init__(
        self,
        queue: TurnQueue,
        deliverer: Deliverer,
        circuit: CircuitBreaker,
        options: WorkerOptions,
        *,
        owner: str,
        stopping: Callable[[], bool],
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._queue = queue
        self._deliverer = deliverer
        self._circuit = circuit
        self._options = options
        self._owner = owner
        self._stopping = stopping
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._sleep = sleep
        self.last_success_at: float | None = None
        self.last_error: str | None = None
        self.on_delivered: Callable[[str], None] | None = None
        """Told the user id after their turns were delivered (recall refreshes its cache)."""

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        """Return the delay before attempt ``attempts + 1``: exponential, jittered, capped."""
        base = self._options.backoff_base_seconds * 2.0 ** min(attempts - 1, 30)
        delay = min(self._options.backoff_max_seconds, base)
        delay = delay / 2 + self._rng.random() * delay / 2
        return max(delay, retry_after or 0.0)

    async def deliver(self, claim: ClaimedSession, report: DrainReport) -> None:
        """Deliver one claimed session under its lease, then release it (counted in ``report``)."""
        session_id = claim.session_id
        next_attempt_at = 0.0
        lease = SessionLease(
            self._queue,
            owner=self._owner,
            session_id=session_id,
            lease_seconds=self._options.lease_seconds,
            clock=self._clock,
            sleep=self._sleep,
        )
        try:
            async with lease.kept_alive():
                await self._deliver_batches(claim, lease, report)
        except LeaseLostError as exc:
            # Another worker may hold the session now: send nothing more. If the renewal
            # only failed (the lease may still be ours), give it back after a backoff.
            metrics.LEASES_LOST.inc()
            _logger.warning("memory.lease_lost", session_id=session_id, reason=exc.reason)
            next_attempt_at = self._clock() + self.backoff(1, None)
        except Exception as exc:
            self.last_error = f"worker error: {type(exc).__name__}"
            next_attempt_at = self._clock() + self.backoff(1, None)
            _logger.exception(
                "memory.worker_error", session_id=session_id, error=type(exc).__name__
            )
        finally:
            # Ready again from now, not from 0: claims take the longest-ready sessions
            # first, so a session with turns left goes behind every session that was
            # waiting while it was served (round robin over the active sessions, instead
            # of serving the oldest ones until they run dry while the others starve).
            await self._queue.release(
                owner=self._owner,
                session_id=session_id,
                next_attempt_at=next_attempt_at or self._clock(),
            )

    async def _deliver_batches(
        self, claim: ClaimedSession, lease: SessionLease, report: DrainReport
    ) -> None:
        session_id = claim.session_id
        attempts = claim.attempts

        async def still_held() -> None:
            lease.ensure_held()

        batches = pack_batches(
            claim,
            max_chars=self._deliverer.max_chars,
            batch_limit=self._deliverer.batch_limit,
        )
        for batch in batches:
            if self._stopping() or self._circuit.state == "open":
                return
            await lease.check()  # a worker that lost its lease sends no further batch
            outcome = await self._deliverer.deliver(claim, batch, still_held)
            now = self._clock()
            if isinstance(outcome, Delivered):
                await self._queue.mark_delivered(
                    owner=self._owner, session_id=session_id, seqs=batch.seqs, now=now
                )
                self._circuit.record_success()
                self.last_success_at = now
                attempts = 0
                report.delivered += len(batch.seqs)
                metrics.DELIVERED.inc(len(batch.seqs))
                for accepted_at in batch.accepted_at:
                    metrics.TURN_LAG_SECONDS.observe(max(0.0, now - accepted_at))
                if self.on_delivered is not None:
                    self.on_delivered(claim.user_id)
            elif isinstance(outcome, Deferred):
                attempts += 1
                await self._defer(claim, batch, outcome, attempts, report)
                return
            else:
                self._circuit.record_success()  # the sink answered; it is up
                await self._bury(claim, batch, outcome.reason, attempts + 1, report)

    async def _defer(
        self,
        claim: ClaimedSession,
        batch: Batch,
        outcome: Deferred,
        attempts: int,
        report: DrainReport,
    ) -> None:
        now = self._clock()
        self.last_error = outcome.reason
        if self._circuit.record_failure():
            _logger.warning(
                "memory.circuit_opened", reason=outcome.reason, cooldown=self._circuit.reopens_in()
            )
        age = now - min(batch.accepted_at)
        if attempts >= self._options.max_attempts or age >= self._options.max_age_seconds:
            reason = f"gave up after {attempts} attempts over {age:.0f}s: {outcome.reason}"
            await self._bury(claim, batch, reason, attempts, report)
            return
        delay = self.backoff(attempts, outcome.retry_after)
        await self._queue.schedule_retry(
            owner=self._owner,
            session_id=claim.session_id,
            error=outcome.reason,
            next_attempt_at=now + delay,
        )
        report.deferred += len(batch.seqs)
        metrics.RETRIED.labels(kind="scheduled").inc()
        _logger.warning(
            "memory.delivery_retry_scheduled",
            session_id=claim.session_id,
            attempts=attempts,
            delay_seconds=round(delay, 2),
            reason=outcome.reason,
        )

    async def _bury(
        self,
        claim: ClaimedSession,
        batch: Batch,
        reason: str,
        attempts: int,
        report: DrainReport,
    ) -> None:
        letter_id = await self._queue.dead_letter(
            owner=self._owner,
            session_id=claim.session_id,
            seqs=batch.seqs,
            reason=reason,
            attempts=attempts,
            now=self._clock(),
        )
        self.last_error = reason
        report.dead_lettered += len(batch.seqs)
        metrics.DEAD_LETTERED.inc(len(batch.seqs))
        _logger.error(
            "memory.dead_lettered",
            session_id=claim.session_id,
            dead_letter_id=letter_id,
            turns=len(batch.seqs),
            attempts=attempts,
            reason=reason,
        )
