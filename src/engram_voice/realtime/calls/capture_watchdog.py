"""The service's watch on its capture process: one that falls silent is killed.

The capture process reports its counters every second, even when there is nothing to
count, so silence longer than the stall bound means it is stopped (``SIGSTOP``), its loop
is blocked, or it hangs at start-up. Its calls would otherwise keep reading "connected"
while nobody hears them. Killing it is read as an exit: its sidebands read ``lost`` (the
sessions fall back to the browser's posts) and the next call starts a new one. A stall of
the service's own loop is not held against the capture process: its messages are read
first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from engram_voice.realtime.calls.capture_wire import Channel

__all__ = ["Watchdog"]

_logger = structlog.get_logger("engram_voice.realtime.calls")


class Watchdog:
    """Kills the capture process after ``stall_seconds`` without a message from it."""

    def __init__(self, stall_seconds: float) -> None:
        self.stall_seconds = stall_seconds
        self.stalls = 0
        """How many capture processes this watch has killed for their silence."""
        self._heard = 0.0

    def heard(self) -> None:
        """Note that the capture process was heard from (or has just been started)."""
        self._heard = time.monotonic()

    async def watch(self, channel: Channel, process: asyncio.subprocess.Process) -> None:
        """Until ``channel`` closes, kill ``process`` once it has been silent too long."""
        interval = min(1.0, self.stall_seconds / 2)
        while not channel.closed:
            slept = time.monotonic()
            await asyncio.sleep(interval)
            now = time.monotonic()
            if now - slept > interval + 1.0:  # this loop was the one stalled: read first
                self._heard = max(self._heard, now - interval)
                continue
            silent = now - self._heard
            if not channel.closed and silent > self.stall_seconds:
                _logger.error(
                    "realtime.capture_process_stalled", pid=process.pid, silent=round(silent, 1)
                )
                self.stalls += 1
                with contextlib.suppress(ProcessLookupError):
                    process.kill()  # read as an exit: its calls are lost, the next restarts it
                return
