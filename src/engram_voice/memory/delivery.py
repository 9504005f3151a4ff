"""Turning queued turns into sink messages and delivering one batch, retries included.

Each message gets a deterministic ``uuid`` derived from (session, message id, part),
so a repeated delivery is recognisable: when the sink rejects a batch (Zep answers 400
when any ``uuid`` already exists), the batch is re-sent message by message and a
message the sink already holds counts as delivered. Transient failures are retried
inline by stamina (backoff with jitter, bounded by attempts and time, honouring
``Retry-After``); what is still failing goes back to the worker as an outcome.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import msgspec
import stamina
import structlog

from engram_voice.memory import metrics
from engram_voice.memory.queue import ClaimedSession, QueuedTurn
from engram_voice.memory.settings import RetrySettings
from engram_voice.memory.sink import (
    CREDENTIAL_REFUSED,
    MemorySink,
    SinkMessage,
    SinkRejectedError,
    SinkUnavailableError,
)

__all__ = [
    "SINK_BATCH_LIMIT",
    "Batch",
    "Deferred",
    "Delivered",
    "Deliverer",
    "DeliveryOutcome",
    "InlineRetryPolicy",
    "Rejected",
    "message_uuid",
    "pack_batches",
    "split_text",
]

_logger = structlog.get_logger("engram_voice.memory.delivery")
_T = TypeVar("_T")
SINK_BATCH_LIMIT = 30
"""Zep accepts at most 30 messages per ``memory.add`` call."""
_NAMESPACE = uuid.UUID("6f1c2b1e-9d3a-5c7e-8a41-2f0e4b6d9c53")
_DUPLICATE_STATUSES = frozenset({400, 409})
_NOT_FOUND = 404


def message_uuid(session_id: str, message_id: str, part: int) -> str:
    """Return the stable uuid of one part of one turn."""
    return str(uuid.uuid5(_NAMESPACE, f"{session_id}\x1f{message_id}\x1f{part}"))


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


def _messages(claim: ClaimedSession, turn: QueuedTurn, limit: int) -> list[SinkMessage]:
    parts = split_text(turn.text, limit)
    role = "user" if turn.role == "user" else claim.agent
    messages = []
    for index, content in enumerate(parts):
        metadata: dict[str, object] = {"message_id": turn.message_id, "agent": claim.agent}
        if len(parts) > 1:
            metadata.update(part=index + 1, parts=len(parts))
        if turn.at:
            metadata["at"] = turn.at
        messages.append(
            SinkMessage(
                uuid=message_uuid(claim.session_id, turn.message_id, index),
                role_type="user" if turn.role == "user" else "assistant",
                role=role,
                content=content,
                metadata=metadata,
            )
        )
    return messages


def pack_batches(claim: ClaimedSession, *, max_chars: int) -> list[Batch]:
    """Group the claim's turns, in order, into batches of at most 30 sink messages."""
    batches: list[Batch] = []
    current = Batch(seqs=[], accepted_at=[], messages=[])
    for turn in claim.turns:
        messages = _messages(claim, turn, max_chars)
        if current.seqs and len(current.messages) + len(messages) > SINK_BATCH_LIMIT:
            batches.append(current)
            current = Batch(seqs=[], accepted_at=[], messages=[])
        current.seqs.append(turn.seq)
        current.accepted_at.append(turn.accepted_at)
        current.messages.extend(messages)
    if current.seqs:
        batches.append(current)
    return batches


class InlineRetryPolicy(msgspec.Struct, frozen=True):
    """Stamina's parameters for retrying one call while a batch is being delivered."""

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

    def _backoff(self, exc: Exception) -> bool | float:
        if not isinstance(exc, SinkUnavailableError) or exc.status in CREDENTIAL_REFUSED:
            return False  # a refused key stays refused within seconds: back off durably
        if exc.retry_after is None:
            return True
        return exc.retry_after if exc.retry_after <= self._policy.wait_max else False

    async def _retrying(self, what: str, call: Callable[[], Awaitable[_T]]) -> _T:
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
                    _logger.info("memory.delivery_retry", call=what, attempt=attempt.num)
                return await call()
        raise AssertionError("stamina ends with a result or the last exception")  # pragma: no cover

    async def deliver(
        self,
        claim: ClaimedSession,
        batch: Batch,
        keepalive: Callable[[], Awaitable[None]],
    ) -> DeliveryOutcome:
        """Deliver one batch; return Delivered, Deferred (transient) or Rejected (permanent).

        ``keepalive`` is awaited before each extra call; it raises when the worker's lease
        on the session is lost (its heartbeat renews it meanwhile), which stops sending.
        """
        started = time.perf_counter()
        try:
            await self._ensure(claim)
            outcome = await self._add(claim, batch, keepalive)
        except SinkUnavailableError as exc:
            return Deferred(reason=exc.reason, retry_after=exc.retry_after)
        except SinkRejectedError as exc:
            return Rejected(reason=exc.reason)
        finally:
            metrics.DELIVERY_SECONDS.observe(time.perf_counter() - started)
        return outcome

    async def _ensure(self, claim: ClaimedSession) -> None:
        await self._retrying(
            "ensure session",
            lambda: self._sink.ensure_session(
                user_id=claim.user_id, session_id=claim.session_id, agent=claim.agent
            ),
        )

    async def _add(
        self, claim: ClaimedSession, batch: Batch, keepalive: Callable[[], Awaitable[None]]
    ) -> DeliveryOutcome:
        session_id = claim.session_id
        try:
            await self._send(session_id, batch.messages)
        except SinkRejectedError as exc:
            if exc.status == _NOT_FOUND:  # the session vanished from the sink: recreate once
                self._sink.forget_session(session_id)
                await self._ensure(claim)
                await self._send(session_id, batch.messages)
                return Delivered()
            if exc.status not in _DUPLICATE_STATUSES:
                raise
            return await self._one_by_one(session_id, batch.messages, exc, keepalive)
        return Delivered()

    async def _one_by_one(
        self,
        session_id: str,
        messages: Sequence[SinkMessage],
        batch_error: SinkRejectedError,
        keepalive: Callable[[], Awaitable[None]],
    ) -> DeliveryOutcome:
        """Fallback after a rejected batch: send each message, skipping ones already there."""
        already = 0
        for message in messages:
            await keepalive()
            if len(messages) > 1:
                try:
                    await self._send(session_id, [message])
                    continue
                except SinkRejectedError as exc:
                    if exc.status not in _DUPLICATE_STATUSES:
                        raise
                    batch_error = exc
            exists = await self._exists(session_id, message.uuid)
            if not exists:
                return Rejected(reason=batch_error.reason)
            already += 1
        _logger.info("memory.duplicates_recognised", session_id=session_id, messages=already)
        return Delivered(already_there=already)

    async def _exists(self, session_id: str, message_uuid: str) -> bool:
        return await self._retrying(
            "check message", lambda: self._sink.message_exists(session_id, message_uuid)
        )

    async def _send(self, session_id: str, messages: Sequence[SinkMessage]) -> None:
        await self._retrying("add memory", lambda: self._sink.add_messages(session_id, messages))
