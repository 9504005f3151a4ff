"""The one place that turns ``MEMORY_QUEUE`` into a :class:`~engram_voice.memory.queue.TurnQueue`.

The service, the worker process and the operator CLI all build their queue here, so a
backend is added by implementing the protocol, passing the contract suite
(``tests/contract/test_queue_contract.py``) and adding one branch below. Backend modules
(and their drivers) are imported only when chosen.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from engram_voice.errors import ConfigurationError
from engram_voice.memory.queue import TurnQueue
from engram_voice.memory.settings import MemorySettings

__all__ = ["build_queue"]


def build_queue(settings: MemorySettings, *, clock: Callable[[], float] = time.time) -> TurnQueue:
    """Return the configured queue backend (not yet opened)."""
    if settings.queue == "postgres":
        from engram_voice.memory.postgres_queue import (  # noqa: PLC0415 - driver only when chosen
            PostgresTurnQueue,
        )

        if settings.postgres is None:
            raise ConfigurationError("MEMORY_QUEUE=postgres needs the MEMORY_POSTGRES_* settings")
        return PostgresTurnQueue.from_settings(
            settings.postgres, store_timeout=settings.store_timeout_seconds, clock=clock
        )
    from engram_voice.memory.sqlite_queue import SqliteTurnQueue  # noqa: PLC0415

    return SqliteTurnQueue(
        settings.sqlite_path,
        synchronous=settings.sqlite_synchronous,
        busy_timeout=settings.store_timeout_seconds,
        clock=clock,
    )
