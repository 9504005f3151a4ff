"""The delivery worker: leases sessions, delivers their turns in order, records outcomes.

``drain()`` is burst mode (like arq's): deliver everything that is ready now and return
a report, so tests need no sleeps. It keeps up to ``concurrency`` sessions in flight and
claims more as soon as one finishes (it never waits for a whole round of sessions).
``run()`` drains, then waits for a notification or the poll interval, until ``stop()``;
stopping lets in-flight batches finish and leaves the rest queued. Each claimed session
is delivered by :class:`~engram_voice.memory.session_delivery.SessionDelivery`, where
failures are made durable: a transient one schedules the session with exponential backoff
and jitter (at least ``Retry-After``); too many attempts, too old a turn, or a permanent
rejection move the batch to dead letters.
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
from engram_voice.memory.delivery import Deliverer
from engram_voice.memory.queue import QueueUnavailableError, TurnQueue
from engram_voice.memory.retention import Retention
from engram_voice.memory.session_delivery import SessionDelivery
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
        self.circuit = circuit
        self._options = options
        self._clock = clock
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
        self.sessions = SessionDelivery(
            queue,
            deliverer,
            circuit,
            options,
            owner=self.owner,
            stopping=lambda: self.stopping,
            clock=clock,
            rng=rng,
            sleep=sleep,
        )
        """Delivers each claimed session and records its outcomes."""

    @property
    def last_success_at(self) -> float | None:
        """When a batch was last delivered (None: not yet)."""
        return self.sessions.last_success_at

    @property
    def last_error(self) -> str | None:
        """The last delivery failure or worker error (None: none yet)."""
        return self.sessions.last_error

    @last_error.setter
    def last_error(self, value: str | None) -> None:
        self.sessions.last_error = value

    @property
    def on_delivered(self) -> Callable[[str], None] | None:
        """Told the user id after their turns were delivered (recall refreshes its cache)."""
        return self.sessions.on_delivered

    @on_delivered.setter
    def on_delivered(self, hook: Callable[[str], None] | None) -> None:
        self.sessions.on_delivered = hook

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        """Return the delay before attempt ``attempts + 1``: exponential, jittered, capped."""
        return self.sessions.backoff(attempts, retry_after)

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
                            self.sessions.deliver(claim, report), name="memory-deliver"
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

    def describe(self) -> dict[str, Any]:
        """Describe the worker for ``/status``."""
        return {
            "owner": self.owner,
            "circuit": self.circuit.state,
            "in_flight_sessions": self.in_flight(),
            "last_success_at": self.last_success_at,
            "last_error": self.last_error,
        }
