"""The delivery worker: leases sessions, delivers their turns in order, records outcomes.

``drain()`` is burst mode (like arq's): deliver everything that is ready now and return
a report, so tests need no sleeps. It keeps up to ``concurrency`` sessions in flight and
claims more as soon as one finishes (it never waits for a whole round of sessions).
``run()`` drains, then waits for a notification or the poll interval, until ``stop()``;
stopping lets in-flight batches finish and leaves the rest queued. Failures are durable:
a transient one schedules the session with exponential backoff and jitter (at least
``Retry-After``); too many attempts, too old a turn, or a permanent rejection move the
batch to dead letters.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import structlog

from engram_voice.memory import metrics
from engram_voice.memory.circuit import CircuitBreaker
from engram_voice.memory.delivery import Batch, Deferred, Delivered, Deliverer, pack_batches
from engram_voice.memory.lease import LeaseLostError, SessionLease
from engram_voice.memory.queue import ClaimedSession, QueueUnavailableError, TurnQueue
from engram_voice.memory.retention import Retention
from engram_voice.memory.settings import MemorySettings
from engram_voice.memory.sink_state import SinkStateStore

__all__ = ["DeliveryWorker", "DrainReport", "WorkerOptions"]

_logger = structlog.get_logger("engram_voice.memory.worker")
_GAUGE_INTERVAL = 1.0


class WorkerOptions(msgspec.Struct, frozen=True):
    """How the worker claims, paces and gives up."""

    concurrency: int = 32
    lease_seconds: float = 15.0
    claim_turns: int = 300
    poll_seconds: float = 1.0
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 300.0
    max_attempts: int = 25
    max_age_seconds: float = 3 * 86_400.0
    retain_delivered_seconds: float = 3 * 86_400.0

    @classmethod
    def from_settings(cls, settings: MemorySettings) -> WorkerOptions:
        """Build the options from the memory settings."""
        retry = settings.retry
        return cls(
            concurrency=settings.worker_concurrency,
            lease_seconds=settings.lease_seconds,
            claim_turns=settings.batch_turns,
            poll_seconds=settings.poll_seconds,
            backoff_base_seconds=retry.backoff_base_seconds,
            backoff_max_seconds=retry.backoff_max_seconds,
            max_attempts=retry.max_attempts,
            max_age_seconds=retry.max_age_seconds,
            retain_delivered_seconds=settings.retain_delivered_seconds,
        )


class DrainReport(msgspec.Struct):
    """What one burst of delivery did."""

    sessions: int = 0
    delivered: int = 0
    deferred: int = 0
    dead_lettered: int = 0
    circuit_open: bool = False


class DeliveryWorker:
    """Delivers queued turns into the sink, one lease-holding task per session."""

    def __init__(
        self,
        queue: TurnQueue,
        deliverer: Deliverer,
        circuit: CircuitBreaker,
        options: WorkerOptions,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        owner: str | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        sink_state: SinkStateStore | None = None,
    ) -> None:
        self._queue = queue
        self._sink_state = sink_state
        self._deliverer = deliverer
        self.circuit = circuit
        self._options = options
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_gauges = 0.0
        self.retention = Retention(
            queue,
            retain_seconds=options.retain_delivered_seconds,
            clock=clock,
            also=() if sink_state is None else (sink_state.purge,),
        )
        """Purges delivered turns hourly in the background, in bounded steps."""
        self.last_success_at: float | None = None
        self.last_error: str | None = None
        self.on_delivered: Callable[[str], None] | None = None
        """Told the user id after their turns were delivered (recall refreshes its cache)."""

    def notify(self) -> None:
        """Tell a waiting ``run()`` that new turns were enqueued."""
        self._wake.set()

    def request_stop(self) -> None:
        """Ask ``run()`` and ``drain()`` to stop after their in-flight batches."""
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        """Return True once a stop was requested."""
        return self._stop.is_set()

    async def drain(self) -> DrainReport:
        """Deliver everything that is ready now; return when nothing is (or on stop).

        Up to ``concurrency`` sessions are in flight (one while the circuit is half open);
        whenever one finishes, more are claimed. In-flight sessions always finish.
        """
        report = DrainReport()
        running: set[asyncio.Task[None]] = set()
        try:
            while not self.stopping:
                state = self.circuit.state
                if state == "open":
                    report.circuit_open = True
                    break
                limit = 1 if state == "half_open" else self._options.concurrency
                # Claim once a quarter of the slots is free (every claim is a queue write):
                # the pipeline stays full without a claim per finished session.
                if len(running) <= limit - max(1, limit // 4):
                    claims = await self._queue.claim(
                        owner=self.owner,
                        sessions=limit - len(running),
                        turns=self._options.claim_turns,
                        lease_seconds=self._options.lease_seconds,
                        now=self._clock(),
                    )
                    report.sessions += len(claims)
                    for claim in claims:
                        task = asyncio.create_task(
                            self._deliver_session(claim, report), name="memory-deliver"
                        )
                        running.add(task)
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                running -= done
        except asyncio.CancelledError:
            for task in running:  # cancelled from outside: in-flight sessions stop too
                task.cancel()
            raise
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        metrics.CIRCUIT_OPEN.set(1 if self.circuit.state == "open" else 0)
        return report

    async def run(self) -> None:
        """Drain, wait for work or the poll interval, repeat until stopped."""
        _logger.info("memory.worker_started", owner=self.owner)
        while not self.stopping:
            try:
                report = await self.drain()
                await self._housekeeping()
            except Exception as exc:
                # A locked or failing queue file must not end delivery for good: say so,
                # show it on /status, wait a poll interval and try again.
                self.last_error = f"worker error: {type(exc).__name__}"
                _logger.exception("memory.worker_error", error=type(exc).__name__)
                report = DrainReport()
            else:
                if report.sessions and not report.circuit_open:
                    continue
            waiting_for_circuit = report.circuit_open
            delay = self.circuit.reopens_in() if waiting_for_circuit else self._options.poll_seconds
            event = self._stop if waiting_for_circuit else self._wake
            try:
                async with asyncio.timeout(max(0.01, delay)):
                    await event.wait()
            except TimeoutError:
                pass
            self._wake.clear()
        await self.retention.stop()
        _logger.info("memory.worker_stopped", owner=self.owner)

    async def cancel_in_flight(self) -> None:
        """Cancel deliveries still running (a stop that ran out of time); leases expire."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def in_flight(self) -> int:
        """Return how many sessions are being delivered right now."""
        return len(self._tasks)

    async def _housekeeping(self) -> None:
        now = self._clock()
        if now >= self._next_gauges:
            self._next_gauges = now + _GAUGE_INTERVAL
            try:
                stats = await self._queue.stats()
            except QueueUnavailableError as exc:  # gauges keep their last value; retry in 1 s
                _logger.warning("memory.queue_status_unavailable", reason=exc.reason)
            else:
                metrics.QUEUE_DEPTH.set(stats.depth)
                oldest = stats.oldest_pending_at
                metrics.QUEUE_OLDEST_AGE.set(max(0.0, now - oldest) if oldest else 0.0)
        self.retention.start_if_due(now)

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        """Return the delay before attempt ``attempts + 1``: exponential, jittered, capped."""
        base = self._options.backoff_base_seconds * 2.0 ** min(attempts - 1, 30)
        delay = min(self._options.backoff_max_seconds, base)
        delay = delay / 2 + self._rng.random() * delay / 2
        return max(delay, retry_after or 0.0)

    async def _deliver_session(self, claim: ClaimedSession, report: DrainReport) -> None:
        session_id = claim.session_id
        next_attempt_at = 0.0
        lease = SessionLease(
            self._queue,
            owner=self.owner,
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
                owner=self.owner,
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
            if self.stopping or self.circuit.state == "open":
                return
            await lease.check()  # a worker that lost its lease sends no further batch
            outcome = await self._deliverer.deliver(claim, batch, still_held)
            now = self._clock()
            if isinstance(outcome, Delivered):
                await self._queue.mark_delivered(
                    owner=self.owner, session_id=session_id, seqs=batch.seqs, now=now
                )
                self.circuit.record_success()
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
                self.circuit.record_success()  # the sink answered; it is up
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
        if self.circuit.record_failure():
            _logger.warning(
                "memory.circuit_opened", reason=outcome.reason, cooldown=self.circuit.reopens_in()
            )
        age = now - min(batch.accepted_at)
        if attempts >= self._options.max_attempts or age >= self._options.max_age_seconds:
            reason = f"gave up after {attempts} attempts over {age:.0f}s: {outcome.reason}"
            await self._bury(claim, batch, reason, attempts, report)
            return
        delay = self.backoff(attempts, outcome.retry_after)
        await self._queue.schedule_retry(
            owner=self.owner,
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
            owner=self.owner,
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

    def describe(self) -> dict[str, Any]:
        """Describe the worker for ``/status``."""
        return {
            "owner": self.owner,
            "circuit": self.circuit.state,
            "in_flight_sessions": self.in_flight(),
            "last_success_at": self.last_success_at,
            "last_error": self.last_error,
        }
