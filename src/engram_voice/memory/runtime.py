"""The memory runtime: one object owning the queue, the sink and the worker.

The app lifespan builds it with :func:`build_memory_runtime`, calls ``start()`` and
``stop()``, and the enrich route uses ``verify``/``accept``. Tests build one with a fake
sink, a temporary queue and a fixed clock, and drive the worker with ``drain()``.

A shared queue (PostgreSQL) is opened in the background (``open_in_background``): the
process starts and sets up calls while the database is unreachable, enrich answers 503
with ``Retry-After`` until the queue is open, ``/status`` and readiness say why, and the
worker starts once it is (see :mod:`engram_voice.memory.connect`). An embedded queue
(SQLite) is opened before start-up goes on, and a file that cannot be opened stops it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from engram_voice.credentials.secret import Secret
from engram_voice.errors import CapturePendingError, ForbiddenError, StorageUnavailableError
from engram_voice.memory import metrics
from engram_voice.memory.backends import build_queue
from engram_voice.memory.captured import CaptureAuthority
from engram_voice.memory.circuit import CircuitBreaker
from engram_voice.memory.connect import StorageConnector
from engram_voice.memory.delivery import Deliverer, InlineRetryPolicy
from engram_voice.memory.queue import (
    EnqueueBatch,
    EnqueueResult,
    QueueStats,
    QueueUnavailableError,
    SessionMismatchError,
    SessionProgress,
    TurnQueue,
)
from engram_voice.memory.ratelimit import SessionRateLimiter
from engram_voice.memory.schemas import EnrichMessage
from engram_voice.memory.settings import MemorySettings
from engram_voice.memory.sink import MemorySink
from engram_voice.memory.sink_state import SinkStateStore
from engram_voice.memory.sinks import build_sink, build_sink_state
from engram_voice.memory.tokens import MemoryClaims, MemoryTokenSigner
from engram_voice.memory.worker import DeliveryWorker, DrainReport, WorkerOptions

__all__ = ["MemoryRuntime", "build_memory_runtime"]

_logger = structlog.get_logger("engram_voice.memory")
STATUS_READ_SECONDS = 0.5
"""The longest ``/status`` waits for the queue's figures before showing the last known."""


class MemoryRuntime:
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
        self.queue = queue
        self.sink = sink
        self.sink_state = sink_state
        self.worker = worker
        self.signer = signer
        self._rate = rate_limiter
        self._progress_rate = progress_rate_limiter or rate_limiter
        self._run_worker = run_worker and worker is not None
        self._clock = clock
        self._store_timeout = store_timeout
        self._worker_task: asyncio.Task[None] | None = None
        self._renewals: asyncio.Task[None] | None = None
        self.captured = CaptureAuthority(queue, clock=clock, timeout=store_timeout)
        """Sessions whose transcripts the server hears itself (shared, in the queue)."""
        self._last_stats: tuple[QueueStats, float] | None = None
        """The last figures read and when (shown, with their age, while storage is stuck)."""
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [("queue", self._open_queue)]
        if sink_state is not None:
            steps.append(("sink_state", sink_state.open))
        self.connector = StorageConnector(steps, wait_max=connect_wait_max)
        """Opens the queue (and the sink's state), in the background when it is shared."""
        self._open_in_background = open_in_background
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
    def connected(self) -> bool:
        """Return True unless a queue opened in the background is not open yet."""
        return self.connector.ready or not self._open_in_background

    @property
    def worker_running(self) -> bool:
        """Return True while this process's delivery loop runs or waits for its queue.

        False only once the loop has ended (a liveness probe restarts the process then);
        a database that is not reachable yet is no reason to restart.
        """
        if self._connecting is not None and not self._connecting.done():
            return self._run_worker
        return self._worker_task is not None and not self._worker_task.done()

    def _not_connected(self, what: str) -> StorageUnavailableError:
        reason = self.connector.last_error or "connecting"
        return StorageUnavailableError(
            f"{what}: memory storage is not connected yet ({reason}); retry shortly",
            retry_after=self.connector.retry_after(),
        )

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
        batch = EnqueueBatch(
            session_id=claims.session_id,
            user_id=claims.user_id,
            agent=claims.agent,
            turns=[(m.id, m.role, m.text, m.at.isoformat() if m.at else None) for m in messages],
        )
        try:
            async with asyncio.timeout(self._store_timeout):
                result = await self.queue.enqueue(batch)
        except SessionMismatchError:
            raise ForbiddenError(
                "this session's memory belongs to another user or agent",
                extra={"errors": [{"field": "session_id", "message": "not yours"}]},
            ) from None
        except (QueueUnavailableError, TimeoutError) as exc:
            # After a timeout the turns may still land; a retry is safe (idempotent).
            raise StorageUnavailableError(
                "transcripts cannot be stored right now; retry shortly", retry_after=2
            ) from exc
        metrics.TURNS_ACCEPTED.inc(result.accepted)
        if result.duplicates:
            metrics.TURNS_DUPLICATE.inc(result.duplicates)
        if result.accepted and self.worker is not None:
            self.worker.notify()
        return result

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

    async def drain(self) -> DrainReport:
        """Deliver everything ready now (burst mode, for tests and the CLI)."""
        if self.worker is None:
            return DrainReport()
        return await self.worker.drain()

    async def _read_stats(self) -> tuple[QueueStats | None, str | None]:
        """Read the queue's figures within STATUS_READ_SECONDS; else the last known, and why."""
        if not self.connected:
            return None, f"not connected yet: {self.connector.last_error or 'connecting'}"
        try:
            async with asyncio.timeout(STATUS_READ_SECONDS):
                stats = await self.queue.stats()
        except (QueueUnavailableError, TimeoutError) as exc:
            reason = exc.reason if isinstance(exc, QueueUnavailableError) else "no answer in time"
            _logger.warning("memory.queue_status_unavailable", reason=reason)
            return (self._last_stats[0] if self._last_stats else None), reason
        self._last_stats = (stats, self._clock())
        return stats, None

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
        now = self._clock()
        queue: dict[str, Any] = {
            "backend": self.queue.backend,
            "available": error is None,
            "connection": self.connector.describe(),
        }
        if error is not None:
            queue["error"] = error
            queue["figures_age_seconds"] = (
                round(now - self._last_stats[1], 1) if self._last_stats else None
            )
        else:
            metrics.QUEUE_DEPTH.set(stats.depth if stats else 0)
        oldest = stats.oldest_pending_at if stats else None
        queue.update(
            depth=stats.depth if stats else None,
            sessions_pending=stats.sessions_pending if stats else None,
            oldest_pending_age_seconds=round(now - oldest, 1) if oldest else None,
            dead_letters=stats.dead_letters if stats else None,
        )
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
                "notify": _describe_listener(self.queue),
                **(self.worker.describe() if self.worker else {"circuit": None}),
            },
            "last_delivery_at": _iso(stats.last_delivered_at if stats else None),
        }


def _describe_listener(queue: TurnQueue) -> dict[str, Any] | None:
    listener = getattr(queue, "listener", None)
    describe = getattr(listener, "describe", None)
    return describe() if callable(describe) else None


def _iso(when: float | None) -> str | None:
    if when is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


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
