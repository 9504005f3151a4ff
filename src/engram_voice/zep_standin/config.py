"""Configuration of the local Zep stand-in (``ZEP_STANDIN_*``)."""

from __future__ import annotations

import msgspec

from engram_voice.credentials.secret import Secret
from engram_voice.envreader import EnvReader

__all__ = ["ZepStandinConfig"]


class ZepStandinConfig(msgspec.Struct, frozen=True):
    """The API key it demands, where it persists, Zep's content limit, base latency."""

    api_key: Secret
    db_path: str
    max_content_chars: int = 2500
    latency_ms: int = 0

    @classmethod
    def from_env(cls, reader: EnvReader) -> ZepStandinConfig:
        """Read the stand-in's settings; the API key is required (no generated default)."""
        return cls(
            api_key=Secret(reader.require("ZEP_STANDIN_API_KEY", "for the Zep stand-in")),
            db_path=reader.text("ZEP_STANDIN_DB", "var/zep-standin.sqlite3"),
            max_content_chars=reader.integer(
                "ZEP_STANDIN_MAX_CONTENT_CHARS", 2500, minimum=1, maximum=1_000_000
            ),
            latency_ms=reader.integer("ZEP_STANDIN_LATENCY_MS", 0, minimum=0, maximum=60_000),
        )
