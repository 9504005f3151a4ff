"""The memory runtime: one object owning the queue, the sink and the worker.

The app lifespan builds it with :func:`build_memory_runtime`, calls ``start()`` and
``stop()``, and the enrich route uses ``verify``/``accept``. Tests build one with a fake
sink, a temporary queue and a fixed clock, and drive the worker with ``drain()``.

A shared queue (PostgreSQL) is opened in the background (``open_in_background``): the
process starts and sets up calls while the database is unreachable, enrich answers 503
with ``Retry-After`` until the queue is open, ``/status`` and readiness say why, and the
worker starts once it is (see :mod:`engram_voice.memory.connect`). An embedded queue
(SQLite) is opened before start-up goes on, and a file that cannot be opened stops it.

How turns get in (``accept_browser``, ``accept_captured``, ``expect_capture``,
``mark_captured``, ``accept``, ``progress``) is :class:`~engram_voice.memory.intake.TurnIntake`,
which the runtime extends; the bounded figures of ``/status`` and readiness are
:mod:`~engram_voice.memory.runtime_status`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from engram_voice.credentials.secret import Secret
from engram_voice.memory.backends import build_queue
from engram_voice.memory.circuit import CircuitBreaker
from engram_voice.memory.connect import StorageConnector
from engram_voice.memory.delivery import Deliverer, InlineRetryPolicy
from engram_voice.memory.intake import TurnIntake
from engram_voice.memory.queue import QueueStats, TurnQueue
from engram_voice.memory.ratelimit import SessionRateLimiter
from engram_voice.memory.runtime_status import (
    STATUS_READ_SECONDS,
    QueueFigures,
    describe_listener,
    iso_time,
)
from engram_voice.memory.settings import MemorySettings
from engram_voice.memory.sink import MemorySink
from engram_voice.memory.sink_state import SinkStateStore
from engram_voice.memory.sinks import build_sink, build_sink_state
from engram_voice.memory.tokens import MemoryClaims, MemoryTokenSigner
from engram_voice.memory.worker import DeliveryWorker, DrainReport, WorkerOptions

__all__ = ["STATUS_READ_SECONDS", "MemoryRuntime", "build_memory_runtime"]

_logger = structlog.get_logger("engram_voice.memory")


class MemoryRuntime(TurnIntake):
    """Owns the durable queue, the sink and the delivery worker of one process."""

    def __init__(
        self,
        *,
        queue: TurnQueue,
        sink: MemorySink | None,
        worker: DeliveryWorker | None,
        sink_state: SinkStateStore | None = None,
        signer: MemoryTokenSigner | None,
        rate_limiter: SessionRateLimiter,
        run_worker: bool,
        store_timeout: float = 3.0,
        clock: Callable[[], float] = time.time,
        progress_rate_limiter: SessionRateLimiter | None = None,
        open_in_background: bool = False,
        connect_wait_max: float = 30.0,
    ) -> None:
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [("queue", self._open_queue)]
        if sink_state is not None:
            steps.append(("sink_state", sink_state.open))
        super().__init__(
            queue=queue,
            worker=worker,
            connector=StorageConnector(steps, wait_max=connect_wait_max),
            open_in_background=open_in_background,
            rate_limiter=rate_limiter,
            progress_rate_limiter=progress_rate_limiter,
            store_timeout=store_timeout,
            clock=clock,
        )
        self.sink = sink
        self.sink_state = sink_state
        self.signer = signer
        self._run_worker = run_worker and worker is not None
        self._worker_task: asyncio.Task[None] | None = None
        self._renewals: asyncio.Task[None] | None = None
        self._figures = QueueFigures(queue, clock=clock)
        """The queue's figures for ``/status`` (the last known, with their age, when stuck)."""
        self._connecting: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the queue and the sink's state, and, when configured, start the worker.

        With ``open_in_background`` this returns at once and storage is opened (retried
        with backoff) by a background task, which then starts the worker.
        """
        if self._open_in_background:
            self._connecting = asyncio.create_task(self._connect(), name="memory-queue-connect")
            _logger.info(
                "memory.started",
                queue=self.queue.backend,
                sink=self.sink.describe() if self.sink else None,
                worker="inprocess" if self._run_worker else "off",
                queue_state="connecting",
            )
        else:
            await self.connector.open_now()  # an embedded file that fails stops start-up
            self._start_worker()
            stats, error = await self._read_stats()
            _logger.info(
                "memory.started",
                queue=self.queue.backend,
                sink=self.sink.describe() if self.sink else None,
                worker="inprocess" if self._worker_task else "off",
                depth=stats.depth if stats else None,
                dead_letters=stats.dead_letters if stats else None,
                **({"queue_error": error} if error else {}),
            )
        self._renewals = asyncio.create_task(
            self.captured.run_renewals(), name="memory-capture-renewals"
        )
        if self.sink is None:
            _logger.warning("memory.sink_unconfigured", hint="set ZEP_API_URL and ZEP_API_KEY")

    async def _open_queue(self) -> None:
        await self.queue.open()

    async def _connect(self) -> None:
        """Open storage however long the database takes to answer, then start the worker."""
        await self.connector.run()
        self._start_worker()

    def _start_worker(self) -> None:
        if self._run_worker and self.worker is not None and not self.worker.stopping:
            self._worker_task = asyncio.create_task(self.worker.run(), name="memory-worker")
            # A shared queue wakes the worker when any process stores turns (polling stays).
            listen = getattr(self.queue, "listen", None)
            if callable(listen):
                listen(self.worker.notify)

    @property
    def worker_running(self) -> bool:
        """Return True while this process's delivery loop runs or waits for its queue.

        False only once the loop has ended (a liveness probe restarts the process then);
        a database that is not reachable yet is no reason to restart.
        """
        if self._connecting is not None and not self._connecting.done():
            return self._run_worker
        return self._worker_task is not None and not self._worker_task.done()

    async def stop(self, *, grace_seconds: float = 15.0) -> None:
        """Finish in-flight deliveries (within ``grace_seconds``), keep the rest queued, close."""
        if self.worker is not None:
            self.worker.request_stop()
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
            self._connecting = None
        if self._worker_task is not None:
            done, _ = await asyncio.wait({self._worker_task}, timeout=grace_seconds)
            if not done and self.worker is not None:
                _logger.warning("memory.stop_timeout", in_flight=self.worker.in_flight())
                await self.worker.cancel_in_flight()
                self._worker_task.cancel()
            await asyncio.gather(self._worker_task, return_exceptions=True)
            self._worker_task = None
        if self._renewals is not None:
            self._renewals.cancel()
            await asyncio.gather(self._renewals, return_exceptions=True)
            self._renewals = None
        await self.captured.settle(self._store_timeout)
        await self.queue.close()
        if self.sink_state is not None:
            await self.sink_state.close()
        if self.sink is not None:
            await self.sink.aclose()
        _logger.info("memory.stopped")

    def verify(self, token: str) -> MemoryClaims:
        """Return the claims of a memory token or raise 401."""
        if self.signer is None:
            raise RuntimeError("this memory runtime has no token keys (worker-only process)")
        return self.signer.verify(token)

    def grant(self, session_id: str, user_id: str, agent: str) -> dict[str, Any]:
        """Return the ``memory`` object for a newly minted realtime session."""
        if self.signer is None:
            raise RuntimeError("this memory runtime has no token keys (worker-only process)")
        return self.signer.grant(session_id, user_id, agent)

    async def drain(self) -> DrainReport:
        """Deliver everything ready now (burst mode, for tests and the CLI)."""
        if self.worker is None:
            return DrainReport()
        return await self.worker.drain()

    async def _read_stats(self) -> tuple[QueueStats | None, str | None]:
        """Read the queue's figures within STATUS_READ_SECONDS; else the last known, and why."""
        if not self.connected:
            return None, f"not connected yet: {self.connector.last_error or 'connecting'}"
        return await self._figures.read()

    async def readiness(self) -> dict[str, Any]:
        """Return memory's part of ``/readyz``: available or not, and why (never fails it)."""
        _, error = await self._read_stats()
        return {"available": error is None, **({"reason": error} if error else {})}

    async def status(self) -> dict[str, Any]:
        """Return the ``memory`` section of ``/status`` (no secrets, no transcript text).

        Bounded: when the queue cannot answer within STATUS_READ_SECONDS the section says
        ``"available": false`` with the reason and the last known figures with their age.
        """
        stats, error = await self._read_stats()
        queue = self._figures.section(stats, error, connection=self.connector.describe())
        return {
            "enabled": True,
            "captured_sessions": self.captured.describe(),
            "sink": self.sink.describe() if self.sink else {"kind": "none"},
            "queue": queue,
            "worker": {
                "mode": "inprocess" if self._run_worker else "off",
                "running": self._worker_task is not None and not self._worker_task.done(),
                "waiting_for_queue": self._run_worker and not self.connected,
                # LISTEN/NOTIFY wake-up on a shared queue (None: polling only)
                "notify": describe_listener(self.queue),
                **(self.worker.describe() if self.worker else {"circuit": None}),
            },
            "last_delivery_at": iso_time(stats.last_delivered_at if stats else None),
        }


def build_memory_runtime(
    settings: MemorySettings,
    *,
    token_keys: Sequence[tuple[str, Secret]] = (),
    sink: MemorySink | None = None,
    sink_state: SinkStateStore | None = None,
    queue: TurnQueue | None = None,
    run_worker: bool | None = None,
    clock: Callable[[], float] = time.time,
) -> MemoryRuntime:
    """Build the runtime from settings; tests inject a sink, its state, a queue and a clock.

    Without an injected sink, :func:`~engram_voice.memory.sinks.build_sink` builds the
    configured one (and the state store it needs).
    """
    if sink is None:
        sink_state = sink_state or build_sink_state(settings)
        sink = build_sink(settings, sink_state)
    queue = queue or build_queue(settings, clock=clock)
    worker = None
    if sink is not None:
        retry = settings.retry
        worker = DeliveryWorker(
            queue,
            Deliverer(sink, InlineRetryPolicy.from_settings(retry)),
            CircuitBreaker(
                failures=retry.circuit_failures,
                cooldown=retry.circuit_cooldown_seconds,
                clock=clock,
            ),
            WorkerOptions.from_settings(settings),
            clock=clock,
            sink_state=sink_state,
        )
    signer = (
        MemoryTokenSigner(token_keys, ttl_seconds=settings.token_ttl_seconds, clock=clock)
        if token_keys
        else None
    )
    return MemoryRuntime(
        queue=queue,
        sink=sink,
        worker=worker,
        sink_state=sink_state,
        signer=signer,
        rate_limiter=SessionRateLimiter(settings.rate_per_minute, clock=time.monotonic),
        # Its own buckets: a page polling its progress never eats into its posting budget.
        progress_rate_limiter=SessionRateLimiter(settings.rate_per_minute, clock=time.monotonic),
        run_worker=settings.worker == "inprocess" if run_worker is None else run_worker,
        store_timeout=settings.store_timeout_seconds,
        clock=clock,
        open_in_background=settings.queue == "postgres",
        connect_wait_max=settings.connect_retry_max_seconds,
    )
