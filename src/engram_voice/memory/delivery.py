"""Turning queued turns into sink messages and delivering one batch, retries included.

A turn longer than the content limit becomes ordered parts; whole turns are packed, in
order, into batches of at most the sink's ``batch_limit`` messages. Every vendor rule
(dedupe, ids, recreating what vanished) lives in the sink behind
:meth:`~engram_voice.memory.sink.MemorySink.deliver`, which is safe to repeat. Transient
failures are retried inline by stamina (the whole batch: backoff with jitter, bounded by
attempts and time, honouring ``Retry-After``); what is still failing goes back to the
worker as an outcome.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import msgspec
import stamina
import structlog

from engram_voice.memory import metrics
from engram_voice.memory.queue import ClaimedSession, QueuedTurn
from engram_voice.memory.settings import RetrySettings
from engram_voice.memory.sink import (
    CREDENTIAL_REFUSED,
    Keepalive,
    MemorySink,
    SinkMessage,
    SinkRejectedError,
    SinkSession,
    SinkUnavailableError,
)

__all__ = [
    "Batch",
    "Deferred",
    "Delivered",
    "Deliverer",
    "DeliveryOutcome",
    "InlineRetryPolicy",
    "Rejected",
    "pack_batches",
    "sink_messages",
    "split_text",
]

_logger = structlog.get_logger("engram_voice.memory.delivery")


def split_text(text: str, limit: int) -> list[str]:
    """Split ``text`` into parts of at most ``limit`` characters, preferring whitespace."""
    parts: list[str] = []
    while len(text) > limit:
        cut = text.rfind(" ", limit // 2, limit + 1)
        if cut <= 0:
            parts.append(text[:limit])
            text = text[limit:]
        else:
            parts.append(text[:cut])
            text = text[cut + 1 :]
    if text or not parts:
        parts.append(text)
    return parts


class Batch(msgspec.Struct, frozen=True):
    """Whole turns whose messages fit one sink call."""

    seqs: list[int]
    accepted_at: list[float]
    messages: list[SinkMessage]


def sink_messages(agent: str, turn: QueuedTurn, limit: int) -> list[SinkMessage]:
    """Return the turn as one message, or as ordered parts when it is over ``limit``."""
    parts = split_text(turn.text, limit)
    user = turn.role == "user"
    return [
        SinkMessage(
            message_id=turn.message_id,
            part=index,
            parts=len(parts),
            role="user" if user else "assistant",
            name="user" if user else agent,
            content=content,
            at=turn.at,
            accepted_at=turn.accepted_at,
        )
        for index, content in enumerate(parts)
    ]


def pack_batches(claim: ClaimedSession, *, max_chars: int, batch_limit: int) -> list[Batch]:
    """Group the claim's turns, in order, into batches of at most ``batch_limit`` messages.

    Whole turns only: the content limit's minimum (1,000 characters, parts of at least
    half of it) keeps the longest accepted turn under ``batch_limit`` parts.
    """
    batches: list[Batch] = []
    current = Batch(seqs=[], accepted_at=[], messages=[])
    for turn in claim.turns:
        messages = sink_messages(claim.agent, turn, max_chars)
        if current.messages and len(current.messages) + len(messages) > batch_limit:
            batches.append(current)
            current = Batch(seqs=[], accepted_at=[], messages=[])
        current.seqs.append(turn.seq)
        current.accepted_at.append(turn.accepted_at)
        current.messages.extend(messages)
    if current.seqs:
        batches.append(current)
    return batches


class InlineRetryPolicy(msgspec.Struct, frozen=True):
    """Stamina's parameters for retrying one batch while it is being delivered."""

    attempts: int = 3
    timeout: float = 20.0
    wait_initial: float = 0.5
    wait_max: float = 5.0
    wait_jitter: float = 1.0

    @classmethod
    def from_settings(cls, settings: RetrySettings) -> InlineRetryPolicy:
        """Build the policy from the configured retry settings."""
        return cls(
            attempts=settings.inline_attempts,
            timeout=settings.inline_timeout_seconds,
            wait_initial=settings.inline_wait_initial,
            wait_max=settings.inline_wait_max,
            wait_jitter=min(settings.inline_wait_initial * 2, settings.inline_wait_max),
        )


class Delivered(msgspec.Struct, frozen=True):
    """Every message of the batch is in the sink (some may have been there already)."""

    already_there: int = 0


class Deferred(msgspec.Struct, frozen=True):
    """A transient failure outlasted the inline retries; try again later."""

    reason: str
    retry_after: float | None = None


class Rejected(msgspec.Struct, frozen=True):
    """The sink refused the batch for good; it becomes a dead letter."""

    reason: str


DeliveryOutcome = Delivered | Deferred | Rejected


class Deliverer:
    """Delivers batches of one session into a sink with the inline retry policy."""

    def __init__(self, sink: MemorySink, policy: InlineRetryPolicy) -> None:
        self._sink = sink
        self._policy = policy

    @property
    def batch_limit(self) -> int:
        """Return the most messages one batch may carry for this sink."""
        return self._sink.batch_limit

    @property
    def max_chars(self) -> int:
        """Return the longest message content the sink takes (longer turns are split)."""
        return self._sink.max_chars

    def _backoff(self, exc: Exception) -> bool | float:
        if not isinstance(exc, SinkUnavailableError) or exc.status in CREDENTIAL_REFUSED:
            return False  # a refused key stays refused within seconds: back off durably
        if exc.retry_after is None:
            return True
        return exc.retry_after if exc.retry_after <= self._policy.wait_max else False

    async def _retrying(self, call: Callable[[], Awaitable[int]]) -> int:
        policy = self._policy
        async for attempt in stamina.retry_context(
            on=self._backoff,
            attempts=policy.attempts,
            timeout=policy.timeout,
            wait_initial=policy.wait_initial,
            wait_max=policy.wait_max,
            wait_jitter=policy.wait_jitter,
        ):
            with attempt:
                if attempt.num > 1:
                    metrics.RETRIED.labels(kind="inline").inc()
                    _logger.info("memory.delivery_retry", attempt=attempt.num)
                return await call()
        raise AssertionError("stamina ends with a result or the last exception")  # pragma: no cover

    async def deliver(
        self, claim: ClaimedSession, batch: Batch, keepalive: Keepalive
    ) -> DeliveryOutcome:
        """Deliver one batch; return Delivered, Deferred (transient) or Rejected (permanent).

        ``keepalive`` is awaited before each extra call; it raises when the worker's lease
        on the session is lost (its heartbeat renews it meanwhile), which stops sending.
        """
        session = SinkSession(session_id=claim.session_id, user_id=claim.user_id, agent=claim.agent)
        started = time.perf_counter()
        try:
            already = await self._retrying(
                lambda: self._sink.deliver(session, batch.messages, keepalive)
            )
        except SinkUnavailableError as exc:
            return Deferred(reason=exc.reason, retry_after=exc.retry_after)
        except SinkRejectedError as exc:
            return Rejected(reason=exc.reason)
        finally:
            metrics.DELIVERY_SECONDS.observe(time.perf_counter() - started)
        if already:
            _logger.info(
                "memory.duplicates_recognised", session_id=claim.session_id, messages=already
            )
        return Delivered(already_there=already)
