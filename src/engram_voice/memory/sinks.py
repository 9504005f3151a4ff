"""The one factory of memory sinks: the service, the worker and the CLI all build theirs here.

``ZEP_API`` picks the sink: ``v4`` (default) is Zep Cloud through ``zep-cloud`` 4.x,
``v2`` a self-hosted Zep server through ``zep-python``. With no ``ZEP_API_URL`` there is
no sink (turns are accepted and stay queued). SDK imports happen here, lazily: a process
pays only for the SDK it uses.
"""

from __future__ import annotations

from engram_voice.errors import ConfigurationError
from engram_voice.memory.settings import MemorySettings
from engram_voice.memory.sink import MemorySink
from engram_voice.memory.sink_state import SinkStateStore

__all__ = ["build_sink", "build_sink_state", "sink_configured"]


def sink_configured(settings: MemorySettings) -> bool:
    """Tell whether the settings name a sink (``ZEP_API_URL`` is set)."""
    return settings.zep.api_url is not None


def build_sink_state(settings: MemorySettings) -> SinkStateStore | None:
    """Return the state store the configured sink needs (None for sinks that need none).

    It lives where the queue lives: the queue's SQLite file, or its PostgreSQL database
    (``MEMORY_QUEUE=postgres``: shared by every replica).
    """
    if not sink_configured(settings) or settings.zep.api != "v4":
        return None
    if settings.queue == "postgres":
        # Beside the shared queue, so every replica sees the same ids and records.
        from engram_voice.memory.postgres_sink_state import (  # noqa: PLC0415 - driver when chosen
            PostgresSinkState,
        )

        if settings.postgres is None:
            raise ConfigurationError("MEMORY_QUEUE=postgres needs the MEMORY_POSTGRES_* settings")
        return PostgresSinkState.from_settings(
            settings.postgres, sink="zep-v4", store_timeout=settings.store_timeout_seconds
        )
    from engram_voice.memory.sqlite_sink_state import SqliteSinkState  # noqa: PLC0415

    return SqliteSinkState(
        settings.sqlite_path,
        sink="zep-v4",
        synchronous=settings.sqlite_synchronous,
        busy_timeout=settings.store_timeout_seconds,
    )


def build_sink(settings: MemorySettings, state: SinkStateStore | None) -> MemorySink | None:
    """Build the configured sink (None when no sink is configured).

    ``state`` is the store from :func:`build_sink_state` (opened by the caller before the
    first delivery); the v4 sink requires one.
    """
    if not sink_configured(settings):
        return None
    if settings.zep.api == "v2":
        from engram_voice.memory.zep_sink import ZepSink  # noqa: PLC0415 - SDK import is heavy

        return ZepSink(settings.zep)
    if state is None:
        raise ValueError("the Zep v4 sink needs a sink state store")
    from engram_voice.memory.zep_cloud_sink import ZepCloudSink  # noqa: PLC0415

    return ZepCloudSink(settings.zep, state)
