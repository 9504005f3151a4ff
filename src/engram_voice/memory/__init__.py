"""Memory enrichment: memory tokens, ``POST /memory/enrich``, durable queue, Zep delivery."""

from typing import TYPE_CHECKING

from engram_voice.lazy import lazy_exports

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

if TYPE_CHECKING:
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
else:  # loaded on first use: the capture process imports submodules only (see lazy.py)
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "IssuedMemoryToken": "engram_voice.memory.tokens",
            "MemoryClaims": "engram_voice.memory.tokens",
            "MemoryGrant": "engram_voice.memory.tokens",
            "MemoryRuntime": "engram_voice.memory.runtime",
            "MemorySettings": "engram_voice.memory.settings",
            "MemorySink": "engram_voice.memory.sink",
            "MemoryTokenSigner": "engram_voice.memory.tokens",
            "TurnQueue": "engram_voice.memory.queue",
            "build_memory_runtime": "engram_voice.memory.runtime",
            "enrich": "engram_voice.memory.routes",
            "memory_router": "engram_voice.memory.routes",
        },
    )
