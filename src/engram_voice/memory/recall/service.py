"""Recall at call start: what Zep knows about a user, within a strict budget.

:meth:`MemoryRecall.recall` runs before a mint (``POST /realtime/sessions``) or a call setup
(``POST /realtime/calls``) and returns the agent to use: the catalog's agent, or a copy whose
instructions end with the delimited memory block (:mod:`~engram_voice.memory.recall.block`).

- **Cache.** A fresh per-user entry (``MEMORY_RECALL_CACHE_SECONDS``) answers at once (a
  ``hit``), also when it says Zep knows nothing. The delivery worker calls :meth:`refresh`
  with the user id after it delivered that user's turns, so the next call finds it warm.
- **Budget.** On a cold read the caller waits at most ``MEMORY_RECALL_BUDGET_MS`` (``miss``
  when the read answered in time). A read that misses the budget (``timeout``) goes on in
  the background, bounded by Zep's own timeout, fills the cache, and — where the service
  holds a channel to the call — :meth:`apply_late` sends the memory with ``session.update``.
- **Circuit.** The breaker shared with the delivery worker: while it is open (Zep down)
  recall starts no read and awaits nothing (``circuit_open``); half-open, one read probes
  at a time. A failed read counts as a failure, a read that answered as a success.

Concurrent recalls of one user share one read. Every background task is kept and ended by
:meth:`aclose`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, runtime_checkable

import msgspec
import structlog

from engram_voice.agents import Agent
from engram_voice.memory.circuit import CircuitBreaker
from engram_voice.memory.recall.block import memory_block, with_memory
from engram_voice.memory.recall.metrics import (
    RECALL_LATE,
    RECALL_REFRESHES,
    RECALL_SECONDS,
    RECALLS,
)
from engram_voice.memory.recall.reader import MemoryReader, RecallError
from engram_voice.memory.recall.settings import RecallSettings

__all__ = ["LiveSession", "MemoryRecall", "Recalled"]

_logger = structlog.get_logger("engram_voice.memory.recall")
_OUTCOMES = ("hit", "miss", "timeout", "circuit_open", "error")
_COUNT = {outcome: RECALLS.labels(outcome) for outcome in _OUTCOMES}  # bound once: hot path
_LATE_WAIT_SLACK = 2.0


@runtime_checkable
class LiveSession(Protocol):
    """A call the service holds a channel to: its instructions can change after it connected."""

    async def update_instructions(self, instructions: str) -> bool:
        """Send ``session.update`` with ``instructions``; False when the channel is gone."""
        ...


class Recalled(msgspec.Struct, frozen=True):
    """What recall gives a mint or a call setup."""

    agent: Agent
    """The agent to open the session with (its instructions carry the memory, if any)."""
    outcome: str
    """hit, miss, timeout, circuit_open, error or off."""
    base: Agent | None = None
    """The catalog's agent, when a read is still running (``timeout``)."""


class _Entry(msgspec.Struct):
    block: str | None
    fetched_at: float


class _Read(msgspec.Struct, frozen=True):
    ok: bool
    block: str | None = None


class MemoryRecall:
    """Per-user memory for session instructions: cache, budget, shared circuit, late apply."""

    def __init__(
        self,
        reader: MemoryReader,
        settings: RecallSettings,
        *,
        circuit: CircuitBreaker,
        read_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.reader = reader
        self.settings = settings
        self.circuit = circuit
        self._budget = settings.budget_ms / 1000
        self._late_wait = read_timeout + _LATE_WAIT_SLACK
        self._clock = clock
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._reads: dict[str, asyncio.Task[_Read]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stale: set[str] = set()
        """Users delivered to while their read ran: read again once it is done."""
        self.outcomes: Counter[str] = Counter()
        self.last_error: str | None = None
        self.last_success_at: float | None = None
        self._closed = False

    async def recall(self, user_id: str, agent: Agent) -> Recalled:
        """Return ``agent`` with what Zep knows about ``user_id`` (within the budget)."""
        if not agent.memory_recall:
            return Recalled(agent=agent, outcome="off")
        started = time.perf_counter()
        entry = self._cached(user_id)
        if entry is not None:
            outcome, block = "hit", entry.block
        elif self._held_back():
            outcome, block = "circuit_open", None
        else:
            task = self._read(user_id)
            if self._budget > 0:
                await asyncio.wait((task,), timeout=self._budget)
            if not task.done():
                outcome, block = "timeout", None
            elif task.cancelled() or not task.result().ok:
                outcome, block = "error", None
            else:
                outcome, block = "miss", task.result().block
        self.outcomes[outcome] += 1
        _COUNT[outcome].inc()
        RECALL_SECONDS.observe(time.perf_counter() - started)
        recalled = agent
        if block is not None:
            recalled = msgspec.structs.replace(
                agent, instructions=with_memory(agent.instructions, block)
            )
        return Recalled(
            agent=recalled, outcome=outcome, base=agent if outcome == "timeout" else None
        )

    def apply_late(self, user_id: str, recalled: Recalled, session: LiveSession) -> None:
        """After a ``timeout``: once the read answers, send its memory to the live call."""
        if recalled.outcome != "timeout" or recalled.base is None:
            return
        read = self._reads.get(user_id)
        if read is None:
            return
        self._keep(self._apply_late(read, recalled.base, session))

    def refresh(self, user_id: str) -> None:
        """Re-read ``user_id``'s memory in the background (the worker delivered their turns)."""
        if self._closed:
            return
        if self.circuit.state == "open":
            RECALL_REFRESHES.labels("circuit_open").inc()
            return
        if user_id in self._reads:  # that read may have started before these turns landed
            self._stale.add(user_id)
            return
        self._read(user_id, refresh=True)

    def _held_back(self) -> bool:
        """Return True when no read may start: circuit open, or half-open with a probe out."""
        state = self.circuit.state
        return self._closed or state == "open" or (state == "half_open" and bool(self._reads))

    def _cached(self, user_id: str) -> _Entry | None:
        entry = self._cache.get(user_id)
        if entry is None:
            return None
        if self._clock() - entry.fetched_at >= self.settings.cache_seconds:
            del self._cache[user_id]
            return None
        self._cache.move_to_end(user_id)
        return entry

    def _read(self, user_id: str, *, refresh: bool = False) -> asyncio.Task[_Read]:
        """Return the running read of ``user_id``, starting one when there is none."""
        task = self._reads.get(user_id)
        if task is None:
            task = asyncio.create_task(self._fetch(user_id, refresh), name="memory-recall-read")
            self._reads[user_id] = task
            self._tasks.add(task)
            task.add_done_callback(lambda done: self._read_done(user_id, done))
        return task

    def _read_done(self, user_id: str, task: asyncio.Task[_Read]) -> None:
        self._tasks.discard(task)
        if self._reads.get(user_id) is task:
            del self._reads[user_id]
        if user_id in self._stale:
            self._stale.discard(user_id)
            self.refresh(user_id)

    async def _fetch(self, user_id: str, refresh: bool) -> _Read:
        started = time.perf_counter()
        try:
            context = await self.reader.read(user_id)
        except RecallError as exc:
            self._failed(exc.reason, refresh)
            return _Read(ok=False)
        except Exception as exc:  # a reader bug must not surface in a call setup
            _logger.exception("memory.recall_reader_error", error=type(exc).__name__)
            self._failed(f"reader error: {type(exc).__name__}", refresh)
            return _Read(ok=False)
        self.circuit.record_success()
        self.last_success_at = time.time()
        block = memory_block(context, max_chars=self.settings.max_chars)
        self._cache[user_id] = _Entry(block=block, fetched_at=self._clock())
        self._cache.move_to_end(user_id)
        while len(self._cache) > self.settings.cache_users:
            self._cache.popitem(last=False)
        if refresh:
            RECALL_REFRESHES.labels("ok").inc()
            self.outcomes["refreshed"] += 1
        _logger.info(
            "memory.recall_read",
            found=block is not None,
            chars=len(block) if block else 0,
            refresh=refresh,
            latency_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return _Read(ok=True, block=block)

    def _failed(self, reason: str, refresh: bool) -> None:
        self.last_error = reason
        if self.circuit.record_failure():
            _logger.warning("memory.recall_circuit_opened", reason=reason)
        _logger.warning("memory.recall_failed", reason=reason, refresh=refresh)
        if refresh:
            RECALL_REFRESHES.labels("error").inc()

    async def _apply_late(
        self,
        read: asyncio.Task[_Read],
        agent: Agent,
        session: LiveSession,
    ) -> None:
        done, _ = await asyncio.wait((read,), timeout=self._late_wait)
        if not done or read.cancelled():
            return
        block = read.result().block
        if block is None:
            return
        if await session.update_instructions(with_memory(agent.instructions, block)):
            RECALL_LATE.inc()
            self.outcomes["late_applied"] += 1
            _logger.info("memory.recall_applied_late", agent=agent.id)

    def _keep(self, work: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._late_done)

    def _late_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _logger.warning(
                "memory.recall_late_apply_failed", error=type(task.exception()).__name__
            )

    def describe(self) -> dict[str, Any]:
        """Return the ``recall`` section of ``/status`` (no memory text, no secret)."""
        return {
            "enabled": True,
            "reader": self.reader.describe(),
            "budget_ms": self.settings.budget_ms,
            "max_chars": self.settings.max_chars,
            "circuit": self.circuit.state,
            "cache": {"users": len(self._cache), "ttl_seconds": self.settings.cache_seconds},
            "reads_in_flight": len(self._reads),
            "outcomes": dict(self.outcomes),
            "last_success_at": self.last_success_at,
            "last_error": self.last_error,
        }

    async def aclose(self) -> None:
        """End the background reads and late applies, then close the reader."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.reader.aclose()
