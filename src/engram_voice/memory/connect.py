"""Opening shared storage in the background, so a database outage never stops start-up.

A service whose PostgreSQL is unreachable must still start and set up calls (audio never
depends on memory). :class:`StorageConnector` opens the queue (and whatever else lives in
the same database, e.g. the v4 sink's state) in order, retrying with stamina: exponential
backoff with jitter from ``wait_initial`` up to ``wait_max`` seconds, for as long as it
takes (every attempt is itself bounded by the backend's connect and lock timeouts). Only
:class:`~engram_voice.memory.queue.QueueUnavailableError` is retried; a step that opened
is never opened again. Until every step is open, :attr:`StorageConnector.ready` is False
and :meth:`StorageConnector.describe` says why (a neutral reason, never a secret).

An error that is not retried (a bug, a bad value) ends the attempts: it is logged as
``memory.queue_connect_aborted`` and :meth:`StorageConnector.describe` says ``failed``.
Each failed attempt logs ``memory.queue_connect_failed``; repeats of the same reason are
logged at most once per ``log_every`` seconds (with the number held back), so an outage
of hours writes a few lines an hour, not thousands. Another store opened the same way
(the usage store) passes its own :class:`ConnectEvents` and logger.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import stamina
import structlog

from engram_voice.memory.queue import QueueUnavailableError

__all__ = ["MEMORY_QUEUE_EVENTS", "ConnectEvents", "StorageConnector"]

_logger = structlog.get_logger("engram_voice.memory.queue")


class ConnectEvents(NamedTuple):
    """The log events of one connector: an attempt failed, attempts aborted, connected."""

    failed: str
    aborted: str
    connected: str


MEMORY_QUEUE_EVENTS = ConnectEvents(
    "memory.queue_connect_failed", "memory.queue_connect_aborted", "memory.queue_connected"
)
"""The memory queue's events (the default)."""

Opener = Callable[[], Awaitable[None]]


class StorageConnector:
    """Opens storage steps in order with bounded exponential backoff; reports the state."""

    def __init__(
        self,
        steps: Sequence[tuple[str, Opener]],
        *,
        wait_initial: float = 0.5,
        wait_max: float = 30.0,
        log_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        events: ConnectEvents = MEMORY_QUEUE_EVENTS,
        logger: Any = None,
    ) -> None:
        self._events = events
        self._logger = _logger if logger is None else logger
        self._steps = list(steps)
        self._opened = 0
        self._wait_initial = min(wait_initial, wait_max)
        self._wait_max = wait_max
        self._log_every = log_every
        self._clock = clock
        self._started_at = clock()
        self._failed_at: float | None = None
        self._logged: tuple[str, float] | None = None
        self._held_back = 0
        self.attempts = 0
        """Connection attempts so far (the successful one included)."""
        self.last_error: str | None = None
        """Why the last attempt failed (None once connected)."""
        self.gave_up = False
        """True once an error that is not retried ended the attempts (restart needed)."""
        self.ready_event = asyncio.Event()

    @property
    def ready(self) -> bool:
        """Return True once every step is open."""
        return self.ready_event.is_set()

    def retry_after(self) -> int:
        """Return whole seconds a client should wait before trying again (1 to ``wait_max``)."""
        if self.ready or self._failed_at is None:
            return 1
        wait = min(self._wait_max, self._wait_initial * 2.0 ** max(0, self.attempts - 1))
        left = self._failed_at + wait - self._clock()
        return int(min(math.ceil(self._wait_max), max(1, math.ceil(left))))

    async def run(self) -> None:
        """Open every step, retrying unavailable storage until it answers (or cancelled)."""
        try:
            async for attempt in stamina.retry_context(
                on=QueueUnavailableError,
                attempts=None,
                timeout=None,
                wait_initial=self._wait_initial,
                wait_max=self._wait_max,
                wait_jitter=self._wait_initial,
            ):
                with attempt:
                    await self._attempt()
        except Exception as exc:
            # Not retryable (a bug, a bad value): storage stays closed until a restart, so
            # say so where an operator looks (the type only: a message may carry a secret).
            step = self._steps[min(self._opened, len(self._steps) - 1)][0]
            self.last_error = f"gave up: {type(exc).__name__}"
            self.gave_up = True
            self._logger.error(  # noqa: TRY400 - the type only: a traceback may carry a secret
                self._events.aborted, step=step, error=type(exc).__name__
            )
            raise
        self.last_error = None
        self.ready_event.set()
        self._logger.info(
            self._events.connected,
            attempts=self.attempts,
            waited_seconds=round(self._clock() - self._started_at, 1),
        )

    async def open_now(self) -> None:
        """Open every step in one attempt; its error (QueueUnavailableError) is the caller's."""
        await self._attempt()
        self.last_error = None
        self.ready_event.set()

    async def _attempt(self) -> None:
        self.attempts += 1
        try:
            while self._opened < len(self._steps):
                await self._steps[self._opened][1]()
                self._opened += 1
        except QueueUnavailableError as exc:
            self._failed(self._steps[self._opened][0], exc.reason)
            raise

    def _failed(self, step: str, reason: str) -> None:
        now = self._clock()
        self._failed_at = now
        self.last_error = reason
        logged = self._logged
        if logged is not None and logged[0] == reason and now - logged[1] < self._log_every:
            self._held_back += 1
            return
        self._logger.warning(
            self._events.failed,
            step=step,
            attempt=self.attempts,
            reason=reason,
            retry_in_seconds=self.retry_after(),
            held_back=self._held_back,
            down_seconds=round(now - self._started_at, 1),
        )
        self._logged = (reason, now)
        self._held_back = 0

    def describe(self) -> dict[str, Any]:
        """Describe the connection for ``/status`` and readiness (no secret)."""
        if self.ready:
            return {"state": "connected", "attempts": self.attempts}
        return {
            "state": "failed" if self.gave_up else "connecting",
            "attempts": self.attempts,
            "last_error": self.last_error,
            "waiting_seconds": round(self._clock() - self._started_at, 1),
            "retry_in_seconds": self.retry_after() if self._failed_at is not None else 0,
        }
