"""The one place that turns ``USAGE_STORE`` into a :class:`~engram_voice.usage.store.UsageStore`."""

from __future__ import annotations

from engram_voice.errors import ConfigurationError
from engram_voice.usage.settings import UsageSettings
from engram_voice.usage.sqlite_store import SqliteUsageStore
from engram_voice.usage.store import UsageStore

__all__ = ["build_usage_store"]


def build_usage_store(settings: UsageSettings, *, background: bool = True) -> UsageStore:
    """Return the configured usage store (not yet started).

    ``background``: a PostgreSQL store opens in the background when started (the
    service: it starts while the database is down); False opens it at once (the CLI).
    """
    if settings.store == "postgres":
        from engram_voice.usage.postgres_store import (  # noqa: PLC0415 - driver only when chosen
            PostgresUsageStore,
        )

        if settings.postgres is None:
            raise ConfigurationError("USAGE_STORE=postgres needs the MEMORY_POSTGRES_* settings")
        return PostgresUsageStore.from_settings(
            settings.postgres,
            open_in_background=background,
            connect_wait_max=settings.connect_wait_max,
        )
    return SqliteUsageStore(settings.sqlite_path)
