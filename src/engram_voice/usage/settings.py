"""Usage metering settings: where usage is stored and the per-user daily limits."""

from __future__ import annotations

from pathlib import Path

import msgspec

from engram_voice.envreader import EnvReader
from engram_voice.memory.settings import PostgresSettings

__all__ = ["UsageSettings"]


class UsageSettings(msgspec.Struct, frozen=True):
    """USAGE_STORE, USAGE_SQLITE_PATH and the per-user daily limits (0 = unlimited)."""

    sqlite_path: str = "var/usage.sqlite3"
    max_calls_per_day: int = 0
    max_minutes_per_day: int = 0
    store: str = "sqlite"
    postgres: PostgresSettings | None = None
    """The server of ``USAGE_STORE=postgres`` (the ``MEMORY_POSTGRES_*`` settings)."""
    connect_wait_max: float = 30.0
    """Longest wait between two attempts to reach that server (MEMORY_CONNECT_RETRY_MAX_SECONDS)."""

    @classmethod
    def from_env(cls, reader: EnvReader) -> UsageSettings:
        """Read USAGE_SQLITE_PATH, USAGE_MAX_CALLS_PER_DAY and USAGE_MAX_MINUTES_PER_DAY.

        The usage file defaults to ``usage.sqlite3`` in the memory queue's directory.
        """
        queue = reader.text("MEMORY_SQLITE_PATH", "var/memory-queue.sqlite3")
        store = reader.choice("USAGE_STORE", "sqlite", ("sqlite", "postgres"))
        return cls(
            store=store,
            postgres=PostgresSettings.from_env(reader, required=store == "postgres"),
            sqlite_path=reader.optional("USAGE_SQLITE_PATH")
            or str(Path(queue).parent / "usage.sqlite3"),
            max_calls_per_day=reader.integer(
                "USAGE_MAX_CALLS_PER_DAY", 0, minimum=0, maximum=1_000_000
            ),
            connect_wait_max=reader.number(
                "MEMORY_CONNECT_RETRY_MAX_SECONDS", 30.0, minimum=0.1, maximum=600
            ),
            max_minutes_per_day=reader.integer(
                "USAGE_MAX_MINUTES_PER_DAY", 0, minimum=0, maximum=1_440
            ),
        )
