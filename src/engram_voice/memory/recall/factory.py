"""Build the configured recall: the one place that picks the reader (``ZEP_API``)."""

from __future__ import annotations

from engram_voice.memory.circuit import CircuitBreaker
from engram_voice.memory.recall.reader import MemoryReader
from engram_voice.memory.recall.service import MemoryRecall
from engram_voice.memory.recall.settings import RecallSettings
from engram_voice.memory.settings import MemorySettings

__all__ = ["build_reader", "build_recall"]


def build_reader(memory: MemorySettings) -> MemoryReader | None:
    """Return the reader for the configured Zep (``ZEP_API`` v4 or v2); None without Zep."""
    zep = memory.zep
    if zep.api_url is None:
        return None
    if zep.api == "v2":
        from engram_voice.memory.recall.zep_v2 import ZepV2Reader  # noqa: PLC0415 - SDK import

        return ZepV2Reader(zep)
    from engram_voice.memory.recall.zep_v4 import ZepV4Reader  # noqa: PLC0415 - SDK import

    return ZepV4Reader(zep)


def build_recall(
    settings: RecallSettings,
    memory: MemorySettings,
    *,
    reader: MemoryReader | None = None,
    circuit: CircuitBreaker | None = None,
) -> MemoryRecall | None:
    """Return the recall (None when ``MEMORY_RECALL`` is off or no Zep is configured).

    ``circuit`` is the delivery worker's breaker when the process runs one (Zep down for
    one is down for both); otherwise recall gets its own with the same thresholds.
    """
    if not settings.enabled:
        return None
    reader = reader or build_reader(memory)
    if reader is None:
        return None
    retry = memory.retry
    breaker = circuit or CircuitBreaker(
        failures=retry.circuit_failures, cooldown=retry.circuit_cooldown_seconds
    )
    return MemoryRecall(reader, settings, circuit=breaker, read_timeout=memory.zep.timeout_seconds)
