"""Memory enrichment: memory tokens, ``POST /memory/enrich``, durable queue, Zep delivery."""

from engram_voice.memory.queue import TurnQueue
from engram_voice.memory.routes import enrich, memory_router
from engram_voice.memory.runtime import MemoryRuntime, build_memory_runtime
from engram_voice.memory.settings import MemorySettings
from engram_voice.memory.sink import MemorySink
from engram_voice.memory.tokens import (
    IssuedMemoryToken,
    MemoryClaims,
    MemoryGrant,
    MemoryTokenSigner,
)

__all__ = [
    "IssuedMemoryToken",
    "MemoryClaims",
    "MemoryGrant",
    "MemoryRuntime",
    "MemorySettings",
    "MemorySink",
    "MemoryTokenSigner",
    "TurnQueue",
    "build_memory_runtime",
    "enrich",
    "memory_router",
]
