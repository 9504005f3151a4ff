"""What the durable usage stores (SQLite, PostgreSQL) share: their write buffer's rules.

Both put each write on a bounded queue that one writer (a thread for SQLite, a task for
PostgreSQL) drains in batches of at most :data:`BATCH`, one transaction a batch. A write
that finds the queue full is dropped and counted, never waited for (call setup must not
wait for the disk or the database), with one log line for the first drop and then one per
:data:`LOG_EVERY_DROP`; a batch whose transaction fails is dropped and counted as a whole.
:class:`WriteCounts` keeps those counts and words them for ``/status``; :func:`daily_query`
and :func:`daily_rows` are the one way both read the per-user-per-day table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import structlog

from engram_voice.usage.records import TOKEN_KINDS, DailyUsage, UsageWrite

__all__ = [
    "BATCH",
    "FLUSH_TIMEOUT",
    "LOG_EVERY_DROP",
    "WriteCounts",
    "daily_query",
    "daily_rows",
]

_logger = structlog.get_logger("engram_voice.usage")

BATCH = 500
"""Most writes applied in one transaction."""
FLUSH_TIMEOUT = 5.0
"""Longest (seconds) a flush, a close or a pool checkout waits."""
LOG_EVERY_DROP = 1000
"""One ``usage.write_dropped`` line for the first dropped write, then one per this many."""


class WriteCounts:
    """A durable store's writes: committed, dropped, and the last error (None once healthy)."""

    def __init__(self) -> None:
        self.written = 0
        self.dropped = 0
        self.error: str | None = None

    def queue_full(self, write: UsageWrite) -> bool:
        """Count ``write`` as dropped because the queue is full (logged sparingly); False."""
        self.dropped += 1
        if self.dropped % LOG_EVERY_DROP == 1:  # the first drop, then one line per thousand
            _logger.warning("usage.write_dropped", kind=type(write).__name__, dropped=self.dropped)
        return False

    def committed(self, writes: int) -> None:
        """Count a batch of ``writes`` committed; the store is healthy again."""
        self.written += writes
        self.error = None

    def waiting(self, error: BaseException) -> None:
        """Note that a batch could not be written yet and will be tried again (not dropped)."""
        self.error = type(error).__name__

    def failed(self, error: BaseException, writes: int) -> None:
        """Count a batch of ``writes`` lost to ``error`` (its type name is kept, not its text)."""
        self.error = type(error).__name__
        self.dropped += writes

    def describe(self, backend: str, *, alive: bool, pending: int) -> dict[str, Any]:
        """Describe the store for ``/status``: writer alive and no error, the counts."""
        return {
            "backend": backend,
            "healthy": alive and self.error is None,
            "pending_writes": pending,
            "written": self.written,
            "dropped_writes": self.dropped,
            "last_error": self.error,
        }


def daily_query(
    placeholder: str, user_id: str | None, since: str | None, until: str | None
) -> tuple[str, list[str]]:
    """Return the SQL (with the driver's ``placeholder``) and arguments of a daily read."""
    where, args = ["1 = 1"], []
    for column, value in (("user_id =", user_id), ("day >=", since), ("day <=", until)):
        if value is not None:
            where.append(f"{column} {placeholder}")
            args.append(value)
    sql = (
        f"SELECT user_id, day, calls, seconds, {', '.join(TOKEN_KINDS)} FROM usage_daily "  # noqa: S608 - fixed column names
        f"WHERE {' AND '.join(where)} ORDER BY day, user_id"
    )
    return sql, args


def daily_rows(rows: Iterable[Sequence[Any]]) -> list[DailyUsage]:
    """Turn the rows of :func:`daily_query` into :class:`DailyUsage` values."""
    return [
        DailyUsage(
            user_id=str(r[0]),
            day=str(r[1]),
            calls=int(r[2]),
            seconds=float(r[3]),
            tokens={k: int(v) for k, v in zip(TOKEN_KINDS, r[4:], strict=True)},
        )
        for r in rows
    ]
