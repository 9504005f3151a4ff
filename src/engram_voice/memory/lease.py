"""A worker's lease on one session, kept alive by a heartbeat while work is in progress.

Leases are short (``MEMORY_LEASE_SECONDS``, 15 s by default) so a crashed worker's
sessions become claimable soon after; a live worker renews its lease every third of
that, also while one slow sink call (with its inline retries) is in progress. Once a
renewal fails or finds the lease taken, the lease counts as lost for good and the
worker sends nothing more for that session (a batch already in flight may land once
more through the new owner: the sink recognises it by message uuid).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from engram_voice.memory.queue import TurnQueue

__all__ = ["LeaseLostError", "SessionLease", "heartbeat_interval"]


class LeaseLostError(Exception):
    """This worker no longer holds the session's lease; it must stop sending."""

    def __init__(self, session_id: str, reason: str) -> None:
        super().__init__(f"{session_id}: {reason}")
        self.session_id = session_id
        self.reason = reason


def heartbeat_interval(lease_seconds: float) -> float:
    """Return how often a lease of ``lease_seconds`` is renewed (three times per lease)."""
    return lease_seconds / 3


class SessionLease:
    """One owner's lease on one session: renew it, keep it alive, know when it is lost."""

    def __init__(
        self,
        queue: TurnQueue,
        *,
        owner: str,
        session_id: str,
        lease_seconds: float,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._queue = queue
        self._owner = owner
        self.session_id = session_id
        self._lease_seconds = lease_seconds
        self._clock = clock
        self._sleep = sleep
        self.lost_reason: str | None = None
        self.renewals = 0
        self._renewed_at = clock()
        """When the lease was last set (the claim, then each renewal)."""

    @property
    def lost(self) -> bool:
        """Return True once a renewal failed or found the lease taken (for good)."""
        return self.lost_reason is not None

    async def renew(self) -> bool:
        """Extend the lease now; return False (and stay lost) when it is gone or unknowable."""
        if self.lost:
            return False
        try:
            held = await self._queue.renew(
                owner=self._owner,
                session_id=self.session_id,
                lease_seconds=self._lease_seconds,
                now=self._clock(),
            )
        except Exception as exc:  # noqa: BLE001 - any failure means we cannot prove the lease
            self._lose(f"renew failed: {type(exc).__name__}")
            return False
        if not held:
            self._lose("taken by another worker")
            return False
        self.renewals += 1
        self._renewed_at = self._clock()
        return True

    async def check(self) -> None:
        """Make sure the lease holds for most of its length, or raise (call before each send).

        A lease set (claimed or renewed) less than a heartbeat interval ago still holds
        for two thirds of its length, and no other worker can claim an unexpired lease:
        only an older one is renewed now (a queue write saved per batch otherwise).
        """
        self.ensure_held()
        if self._clock() - self._renewed_at < heartbeat_interval(self._lease_seconds):
            return
        if not await self.renew():
            raise LeaseLostError(self.session_id, self.lost_reason or "lost")

    def ensure_held(self) -> None:
        """Raise :class:`LeaseLostError` if the heartbeat found the lease lost."""
        if self.lost_reason is not None:
            raise LeaseLostError(self.session_id, self.lost_reason)

    @contextlib.asynccontextmanager
    async def kept_alive(self) -> AsyncIterator[SessionLease]:
        """Renew in the background while the block runs; stop renewing when it ends.

        The heartbeat stops on a flag as well as on cancellation: on Python 3.11
        ``asyncio.wait_for`` (used by the PostgreSQL pool while a renewal waits for a
        connection) can swallow a cancellation that arrives as the connection is handed
        over; the heartbeat then went on renewing for ever, the block's end never came,
        and the session stayed leased but undelivered (and shutdown waited for it).
        """
        stopped = asyncio.Event()
        task = asyncio.create_task(self._beat(stopped), name="memory-lease-heartbeat")
        try:
            yield self
        finally:
            stopped.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _beat(self, stopped: asyncio.Event) -> None:
        interval = heartbeat_interval(self._lease_seconds)
        while not stopped.is_set() and await self._sleep_then_renew(interval, stopped):
            pass

    async def _sleep_then_renew(self, interval: float, stopped: asyncio.Event) -> bool:
        await self._sleep(interval)
        return not stopped.is_set() and await self.renew()

    def _lose(self, why: str) -> None:
        # Logged by whoever acts on it: a renewal racing the end of the work is harmless.
        if self.lost_reason is None:
            self.lost_reason = why
