"""The usage meter: calls, seconds and tokens per call, user and day, and the daily limits.

The call registry tells the meter when a call starts and ends; the upstream's sideband
tells it each ``response.done`` usage object. The meter counts in memory (the limits
read only memory, so call setup never waits for the disk), hands each change to the
store without blocking, updates the Prometheus counters and logs ``realtime.call_usage``
when a call ends. No method of the meter raises into its caller.

Token counts are the one frequent write (a ``response.done`` every few seconds on every
call): on an event loop the meter sums them per call and hands them to the store once
every :data:`TOKEN_FLUSH_SECONDS` (and before the call's end record, and on close), so
the store's writer wakes once per interval instead of once per response. Totals are the
same; only the moment they reach the store moves, by at most that interval.

The limits count this process's calls plus the totals the store held for today when it
opened (read once, before the store applies any write recorded meanwhile, so nothing
counts twice). A store that is not open yet (PostgreSQL down at start-up) does not stop
calls: until it opens the limits count only this process's calls since it started
(they fail open on the part stored earlier; ``usage.limits_without_stored_totals`` is
logged once) and ``/status`` says so (``limits.stored_totals_loaded``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from engram_voice.usage.limits import refuse_over_limit, seconds_until_utc_midnight
from engram_voice.usage.metrics import USAGE_CALL_SECONDS, USAGE_CALLS, USAGE_TOKENS
from engram_voice.usage.records import (
    TOKEN_KINDS,
    CallEnded,
    CallStarted,
    TokensUsed,
    tokens_from_usage,
    utc_day,
)
from engram_voice.usage.settings import UsageSettings
from engram_voice.usage.store import UsageStore

__all__ = ["TOKEN_FLUSH_SECONDS", "UsageMeter", "seconds_until_utc_midnight"]

TOKEN_FLUSH_SECONDS = 1.0
"""How long a call's token counts may wait in the meter before they go to the store."""
_logger = structlog.get_logger("engram_voice.usage")
_RECENT_ENDED = 1024
"""Ended calls remembered so a late ``response.done`` still counts on its call."""


@dataclass
class _Call:
    user_id: str
    agent: str
    upstream: str
    day: str
    started_at: float
    session_id: str | None = None
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_KINDS, 0))
    counters: dict[str, Any] = field(default_factory=dict)
    """The call's token counter per kind (looked up once: the labels never change)."""

    def count(self, kind: str, value: int) -> None:
        """Add ``value`` tokens of ``kind`` to the call and to its Prometheus counter."""
        self.tokens[kind] += value
        counter = self.counters.get(kind)
        if counter is None:
            counter = self.counters[kind] = USAGE_TOKENS.labels(self.agent, self.upstream, kind)
        counter.inc(value)


@dataclass
class _Day:
    calls: int = 0
    seconds: float = 0.0


class UsageMeter:
    """Meters calls set up through the service and enforces the per-user daily limits."""

    def __init__(
        self,
        store: UsageStore,
        settings: UsageSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings or UsageSettings()
        self._clock = clock
        self._live: dict[str, _Call] = {}
        self._ended: OrderedDict[str, _Call] = OrderedDict()
        self._days: dict[tuple[str, str], _Day] = {}
        self._by_session: dict[str, str] = {}  # session id -> call id, live and recent calls
        self._today = ""
        self._pending: dict[str, tuple[_Call, dict[str, int]]] = {}  # call id -> unsent tokens
        self._flush_timer: asyncio.TimerHandle | None = None
        self.stored_totals_loaded = False
        """True once today's totals stored before this process started were read."""
        self._warned_unloaded = False

    async def start(self) -> None:
        """Open the store and load today's per-user totals (limits survive a restart).

        A store that opens in the background loads them once it is open; meanwhile the
        limits count this process's calls only.
        """
        self._today = utc_day(self._clock())
        await self.store.start(on_open=self._load_today)

    async def _load_today(self) -> None:
        """Add today's stored per-user totals to what this process counted so far."""
        today = self._roll(self._clock())
        rows = await self.store.daily(since=today, until=today)
        for row in rows:
            day = self._day(row.user_id, row.day)
            day.calls += row.calls
            day.seconds += row.seconds
        self.stored_totals_loaded = True
        if self._warned_unloaded:
            _logger.info("usage.stored_totals_loaded", users=len(rows), day=today)

    async def close(self) -> None:
        """Hand the store the token counts still held, then close it (it commits, bounded)."""
        self.flush_tokens()
        await self.store.close()

    def flush_tokens(self) -> None:
        """Hand every call's token counts held so far to the store (one write per call)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        pending, self._pending = self._pending, {}
        for call_id, (call, tokens) in pending.items():
            self._record_tokens(call_id, call, tokens)

    # -- limits ----------------------------------------------------------------------------

    def check(self, user_id: str) -> None:
        """Raise 429 ``usage_limit_reached`` when ``user_id`` used up today's calls or minutes."""
        limits = self.settings
        if not limits.max_calls_per_day and not limits.max_minutes_per_day:
            return
        if not self.stored_totals_loaded and not self._warned_unloaded:
            self._warned_unloaded = True
            _logger.warning(
                "usage.limits_without_stored_totals",
                reason="the usage store is not open yet",
                counts="this process's calls only",
            )
        now = self._clock()
        calls, seconds = self.used_today(user_id, now)
        refuse_over_limit(limits, calls=calls, seconds=seconds, now=now)

    def used_today(self, user_id: str, now: float | None = None) -> tuple[int, float]:
        """Return ``user_id``'s calls and seconds today (UTC): ended calls plus live ones."""
        now = self._clock() if now is None else now
        today = self._roll(now)
        day = self._days.get((user_id, today), _Day())
        live = sum(
            max(0.0, now - c.started_at)
            for c in self._live.values()
            if c.user_id == user_id and c.day == today
        )
        return day.calls, day.seconds + live

    # -- events from the registry and the sideband -------------------------------------------

    def call_started(
        self,
        call_id: str,
        user_id: str,
        agent: str,
        upstream: str,
        started_at: float | None = None,
        *,
        session_id: str | None = None,
    ) -> None:
        """Count a new call for ``user_id`` today and record it durably.

        ``session_id`` (``vs_…``) lets :meth:`response_done` find the call by either id.
        """
        try:
            started = self._clock() if started_at is None else started_at
            call = _Call(user_id, agent, upstream, utc_day(started), started, session_id)
            self._live[call_id] = call
            if session_id is not None:
                self._by_session[session_id] = call_id
            self._day(user_id, call.day).calls += 1
            USAGE_CALLS.labels(agent, upstream).inc()
            self.store.record(CallStarted(call_id, user_id, agent, upstream, call.day, started))
        except Exception:  # metering never breaks a call; the failure is logged
            _logger.exception("usage.meter_error", stage="call_started")

    def response_done(self, call_id: str, usage: Mapping[str, Any] | object) -> None:
        """Count one ``response.done`` usage object on its call (odd fields count as 0).

        ``call_id`` is the registry's call id (``rc_…``) or the call's session id
        (``vs_…``); ``usage`` is the event's ``response.usage`` object as received.
        """
        try:
            call_id = self._by_session.get(call_id, call_id)
            call = self._live.get(call_id) or self._ended.get(call_id)
            if call is None:
                _logger.debug("usage.unknown_call", call_id=call_id)
                return
            tokens = tokens_from_usage(usage)
            if not any(tokens.values()):
                return
            for kind, value in tokens.items():
                if value:
                    call.count(kind, value)
            self._hold_tokens(call_id, call, tokens)
        except Exception:
            _logger.exception("usage.meter_error", stage="response_done")

    def _hold_tokens(self, call_id: str, call: _Call, tokens: dict[str, int]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop (a script, a test): straight to the store
            self._record_tokens(call_id, call, tokens)
            return
        held = self._pending.get(call_id)
        if held is None:
            self._pending[call_id] = (call, dict(tokens))
        else:
            for kind, value in tokens.items():
                held[1][kind] = held[1].get(kind, 0) + value
        if self._flush_timer is None:
            self._flush_timer = loop.call_later(TOKEN_FLUSH_SECONDS, self._flush_due)

    def _flush_due(self) -> None:
        self._flush_timer = None
        try:
            self.flush_tokens()
        except Exception:
            _logger.exception("usage.meter_error", stage="flush_tokens")

    def _record_tokens(self, call_id: str, call: _Call, tokens: dict[str, int]) -> None:
        self.store.record(TokensUsed(call_id, call.user_id, call.day, tokens))

    def call_ended(self, call_id: str, duration_seconds: float, reason: str) -> None:
        """Add the call's seconds to its user's day, record it and log ``realtime.call_usage``."""
        try:
            call = self._live.pop(call_id, None)
            if call is None:
                return
            held = self._pending.pop(call_id, None)
            if held is not None:  # its tokens reach the store before its end
                self._record_tokens(call_id, *held)
            seconds = duration_seconds if math.isfinite(duration_seconds) else 0.0
            seconds = max(0.0, seconds)
            self._day(call.user_id, call.day).seconds += seconds
            self._ended[call_id] = call
            while len(self._ended) > _RECENT_ENDED:
                _, forgotten = self._ended.popitem(last=False)
                if forgotten.session_id is not None:
                    self._by_session.pop(forgotten.session_id, None)
            USAGE_CALL_SECONDS.labels(call.agent, call.upstream).inc(seconds)
            self.store.record(
                CallEnded(call_id, call.user_id, call.day, seconds, reason, self._clock())
            )
            _logger.info(
                "realtime.call_usage",
                call_id=call_id,
                user_id=call.user_id,
                agent=call.agent,
                upstream=call.upstream,
                reason=reason,
                seconds=round(seconds, 3),
                tokens=dict(call.tokens),
            )
        except Exception:
            _logger.exception("usage.meter_error", stage="call_ended")

    async def describe(self) -> dict[str, Any]:
        """Return the ``usage`` section of ``/status``: store health and today's totals."""
        now = self._clock()
        today = self._roll(now)
        days = [(user, day) for (user, d), day in self._days.items() if d == today]
        live = sum(max(0.0, now - c.started_at) for c in self._live.values() if c.day == today)
        return {
            "store": await self.store.describe(),
            "day": today,
            "today": {
                "calls": sum(day.calls for _, day in days),
                "seconds": round(sum(day.seconds for _, day in days) + live, 3),
                "users": len(days),
            },
            "live_calls": len(self._live),
            "limits": {
                "max_calls_per_day": self.settings.max_calls_per_day,
                "max_minutes_per_day": self.settings.max_minutes_per_day,
                "stored_totals_loaded": self.stored_totals_loaded,
            },
        }

    # -- internals ---------------------------------------------------------------------------

    def _day(self, user_id: str, day: str) -> _Day:
        return self._days.setdefault((user_id, day), _Day())

    def _roll(self, now: float) -> str:
        """Return today's UTC day, forgetting totals of days before it when the day turns."""
        today = utc_day(now)
        if today != self._today:
            self._today = today
            live_days = {c.day for c in self._live.values()}
            for key in [k for k in self._days if k[1] < today and k[1] not in live_days]:
                del self._days[key]
        return today
