"""The usage store seam and its in-memory implementation (tests, embedding).

A store takes writes without blocking the caller (``record`` returns at once) and
answers per-user-per-day reads. The durable ones are SQLite
(:mod:`engram_voice.usage.sqlite_store`) and PostgreSQL
(:mod:`engram_voice.usage.postgres_store`), built by
:func:`engram_voice.usage.factory.build_usage_store`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from engram_voice.usage.records import (
    TOKEN_KINDS,
    CallEnded,
    CallStarted,
    DailyUsage,
    TokensUsed,
    UsageWrite,
)

__all__ = ["MemoryUsageStore", "UsageStore", "apply_write", "select"]


class UsageStore(Protocol):
    """Durable per-call records and per-user-per-day aggregates."""

    async def start(self, on_open: Callable[[], Awaitable[None]] | None = None) -> None:
        """Open the storage (create it if missing), then await ``on_open``.

        ``on_open`` runs once the storage is open and before any write recorded so far is
        applied (the meter reads today's stored totals in it). A store that opens in the
        background (PostgreSQL in the service) returns at once and runs it later.
        """

    async def close(self) -> None:
        """Write what is pending (bounded) and close."""

    def record(self, write: UsageWrite) -> bool:
        """Queue one write without blocking; False when it had to be dropped."""

    async def flush(self) -> None:
        """Return once every write queued so far is stored (bounded)."""

    async def daily(
        self, *, user_id: str | None = None, since: str | None = None, until: str | None = None
    ) -> list[DailyUsage]:
        """Return usage per user and day, days ``since``..``until`` inclusive, sorted."""

    async def describe(self) -> dict[str, Any]:
        """Return the store's health for ``/status`` (no user data)."""


def apply_write(
    days: dict[tuple[str, str], DailyUsage], calls: dict[str, dict[str, Any]], write: UsageWrite
) -> None:
    """Apply one write to in-memory aggregates (``calls`` keyed by call id)."""
    key = (write.user_id, write.day)
    row = days.setdefault(key, DailyUsage(user_id=write.user_id, day=write.day))
    if isinstance(write, CallStarted):
        if write.call_id in calls:
            return
        calls[write.call_id] = {"seconds": None, "tokens": dict.fromkeys(TOKEN_KINDS, 0)}
        row.calls += 1
    elif isinstance(write, TokensUsed):
        call = calls.setdefault(write.call_id, {"seconds": None, "tokens": {}})
        for kind, value in write.tokens.items():
            call["tokens"][kind] = call["tokens"].get(kind, 0) + value
            row.tokens[kind] = row.tokens.get(kind, 0) + value
    elif isinstance(write, CallEnded):
        call = calls.setdefault(write.call_id, {"seconds": None, "tokens": {}})
        if call["seconds"] is None:
            call["seconds"] = write.seconds
            row.seconds += write.seconds


def select(
    rows: list[DailyUsage], user_id: str | None, since: str | None, until: str | None
) -> list[DailyUsage]:
    """Filter rows by user and day range and sort them by day, then user."""
    chosen = [
        r
        for r in rows
        if (user_id is None or r.user_id == user_id)
        and (since is None or r.day >= since)
        and (until is None or r.day <= until)
    ]
    return sorted(chosen, key=lambda r: (r.day, r.user_id))


class MemoryUsageStore:
    """A store that keeps everything in memory (tests; nothing survives the process)."""

    def __init__(self) -> None:
        self._days: dict[tuple[str, str], DailyUsage] = {}
        self.calls: dict[str, dict[str, Any]] = {}

    async def start(self, on_open: Callable[[], Awaitable[None]] | None = None) -> None:
        """Nothing to open: run ``on_open`` at once."""
        if on_open is not None:
            await on_open()

    async def close(self) -> None:
        """Nothing to close."""

    def record(self, write: UsageWrite) -> bool:
        """Apply the write at once."""
        apply_write(self._days, self.calls, write)
        return True

    async def flush(self) -> None:
        """Every write is applied already."""

    async def daily(
        self, *, user_id: str | None = None, since: str | None = None, until: str | None = None
    ) -> list[DailyUsage]:
        """Return the in-memory rows that match."""
        return select(list(self._days.values()), user_id, since, until)

    async def describe(self) -> dict[str, Any]:
        """Describe the store."""
        return {"backend": "memory", "healthy": True}
