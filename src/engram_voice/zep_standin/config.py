"""Configuration of the local Zep stand-in (``ZEP_STANDIN_*``)."""

from __future__ import annotations

import msgspec

from engram_voice.credentials.secret import Secret
from engram_voice.envreader import EnvReader

__all__ = ["ZepStandinConfig"]


class ZepStandinConfig(msgspec.Struct, frozen=True):
    """The API key it demands, where it persists, Zep's content limits, base latency.

    ``max_content_chars`` is the v2 subset's limit (Zep's small plans), and
    ``v4_max_content_chars`` the v4 subset's (4,096 characters, as Zep Cloud answers).
    ``idempotency_ttl_s`` is how long a v4 ``Idempotency-Key`` is remembered.
    """

    api_key: Secret
    db_path: str
    max_content_chars: int = 2500
    latency_ms: int = 0
    v4_max_content_chars: int = 4096
    idempotency_ttl_s: int = 86_400

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
            v4_max_content_chars=reader.integer(
                "ZEP_STANDIN_V4_MAX_CONTENT_CHARS", 4096, minimum=1, maximum=1_000_000
            ),
            idempotency_ttl_s=reader.integer(
                "ZEP_STANDIN_IDEMPOTENCY_TTL_S", 86_400, minimum=1, maximum=30 * 86_400
            ),
        )
