"""The memory runtime's figures for ``/status`` and ``/readyz``, read within a bound.

:class:`QueueFigures` reads the queue's figures within :data:`STATUS_READ_SECONDS`; when
the queue cannot answer in time it hands back the last figures it read and why, and
``/status`` shows them with their age (the section never waits on stuck storage).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from engram_voice.memory import metrics
from engram_voice.memory.queue import QueueStats, QueueUnavailableError, TurnQueue

__all__ = ["STATUS_READ_SECONDS", "QueueFigures", "describe_listener", "iso_time"]

_logger = structlog.get_logger("engram_voice.memory")
STATUS_READ_SECONDS = 0.5
"""The longest ``/status`` waits for the queue's figures before showing the last known."""


class QueueFigures:
    """The queue's figures: read within STATUS_READ_SECONDS, else the last known, and why."""

    def __init__(self, queue: TurnQueue, *, clock: Callable[[], float] = time.time) -> None:
        self._queue = queue
        self._clock = clock
        self._last: tuple[QueueStats, float] | None = None
        """The last figures read and when (shown, with their age, while storage is stuck)."""

    async def read(self) -> tuple[QueueStats | None, str | None]:
        """Read the queue's figures within STATUS_READ_SECONDS; else the last known, and why."""
        try:
            async with asyncio.timeout(STATUS_READ_SECONDS):
                stats = await self._queue.stats()
        except (QueueUnavailableError, TimeoutError) as exc:
            reason = exc.reason if isinstance(exc, QueueUnavailableError) else "no answer in time"
            _logger.warning("memory.queue_status_unavailable", reason=reason)
            return (self._last[0] if self._last else None), reason
        self._last = (stats, self._clock())
        return stats, None

    def section(
        self, stats: QueueStats | None, error: str | None, *, connection: dict[str, Any]
    ) -> dict[str, Any]:
        """Return the ``queue`` part of memory's ``/status`` from a :meth:`read`'s result.

        With an ``error`` it says ``"available": false``, why, and the age of the last
        known figures; otherwise it also sets the queue depth gauge.
        """
        now = self._clock()
        queue: dict[str, Any] = {
            "backend": self._queue.backend,
            "available": error is None,
            "connection": connection,
        }
        if error is not None:
            queue["error"] = error
            queue["figures_age_seconds"] = round(now - self._last[1], 1) if self._last else None
        else:
            metrics.QUEUE_DEPTH.set(stats.depth if stats else 0)
        oldest = stats.oldest_pending_at if stats else None
        queue.update(
            depth=stats.depth if stats else None,
            sessions_pending=stats.sessions_pending if stats else None,
            oldest_pending_age_seconds=round(now - oldest, 1) if oldest else None,
            dead_letters=stats.dead_letters if stats else None,
        )
        return queue


def describe_listener(queue: TurnQueue) -> dict[str, Any] | None:
    """Describe a shared queue's LISTEN/NOTIFY wake-up (None: the queue only polls)."""
    listener = getattr(queue, "listener", None)
    describe = getattr(listener, "describe", None)
    return describe() if callable(describe) else None


def iso_time(when: float | None) -> str | None:
    """Return a UNIX time as ISO 8601 UTC to the second (None stays None)."""
    if when is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
