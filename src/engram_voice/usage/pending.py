"""The PostgreSQL usage store's write buffer: bounded, never blocking, token counts merged.

Writes wait here until the writer task commits them: for milliseconds while the database
answers, for as long as it is down otherwise (the store opens in the background, so the
service starts and sets up calls without it). The buffer holds at most ``max_pending``
entries; a write that finds it full is dropped and counted (``usage.write_dropped``,
:class:`~engram_voice.usage.buffered.WriteCounts`), never waited for.

Token counts are the one write a call repeats, so a call's counts that have not been
taken by the writer yet are added to the entry already waiting instead of taking a new
one: a call costs at most three entries (start, tokens, end) however long the database
is away, and the totals stored are the same. Flush and stop markers wait for room (their
callers bound the wait).
"""

from __future__ import annotations

import asyncio

from engram_voice.usage.buffered import WriteCounts
from engram_voice.usage.records import TokensUsed, UsageWrite

__all__ = ["Marker", "PendingWrites"]

Marker = asyncio.Future[None] | None
"""A flush marker (set once what was queued before it is committed) or None (stop)."""


class PendingWrites:
    """A bounded FIFO of usage writes in which a call's waiting token counts are merged."""

    def __init__(self, max_pending: int, counts: WriteCounts) -> None:
        self._queue: asyncio.Queue[UsageWrite | Marker] = asyncio.Queue(max_pending)
        self._counts = counts
        self._tokens: dict[str, dict[str, int]] = {}
        """Call id -> the token counts of its entry still in the queue (merged into)."""
        self.merged = 0
        """Token writes added to an entry already waiting (no entry of their own)."""

    def __len__(self) -> int:
        """Return the entries waiting (writes and markers)."""
        return self._queue.qsize()

    def put(self, write: UsageWrite) -> bool:
        """Queue ``write`` at once; False (counted, logged sparingly) when the buffer is full."""
        if isinstance(write, TokensUsed):
            waiting = self._tokens.get(write.call_id)
            if waiting is not None:
                for kind, value in write.tokens.items():
                    waiting[kind] = waiting.get(kind, 0) + value
                self.merged += 1
                return True
            own = dict(write.tokens)
            write = TokensUsed(write.call_id, write.user_id, write.day, own)
            try:
                self._queue.put_nowait(write)
            except asyncio.QueueFull:
                return self._counts.queue_full(write)
            self._tokens[write.call_id] = own
            return True
        try:
            self._queue.put_nowait(write)
        except asyncio.QueueFull:
            return self._counts.queue_full(write)
        return True

    async def put_marker(self, marker: Marker) -> None:
        """Queue a flush or stop marker, waiting for room (the caller bounds the wait)."""
        await self._queue.put(marker)

    async def take(self, limit: int) -> list[UsageWrite | Marker]:
        """Wait for the next entry; return it with those behind it (``limit`` in all)."""
        batch = [await self._queue.get()]
        while len(batch) < limit and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        for item in batch:  # taken: later counts of these calls need an entry of their own
            if isinstance(item, TokensUsed) and self._tokens.get(item.call_id) is item.tokens:
                del self._tokens[item.call_id]
        return batch

    def discard(self) -> int:
        """Drop every waiting entry (the store closes without its database); return the writes."""
        writes = 0
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, asyncio.Future):
                if not item.done():
                    item.set_result(None)
            elif item is not None:
                writes += 1
        self._tokens.clear()
        return writes
