"""Cross-origin access for browsers on other origins (``CORS_ALLOW_ORIGINS``)."""

from __future__ import annotations

from litestar.config.cors import CORSConfig

from engram_voice.auth.settings import AuthSettings

__all__ = ["cors_config"]

_ALLOWED_HEADERS = ["Authorization", "Content-Type", "X-Request-Id"]


def cors_config(settings: AuthSettings) -> CORSConfig | None:
    """Return the CORS policy for the allow-listed origins, or None for same-origin only."""
    if not settings.cors_allow_origins:
        return None
    return CORSConfig(
        allow_origins=list(settings.cors_allow_origins),
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],  # DELETE: hang up a call
        allow_headers=_ALLOWED_HEADERS,
        allow_credentials=False,
        expose_headers=["Retry-After", "Location"],
        max_age=600,
    )
