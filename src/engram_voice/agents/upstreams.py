"""The two upstreams an agent can be served by, named the same everywhere."""

from __future__ import annotations

__all__ = ["AZURE_OPENAI", "UPSTREAMS", "VOICE_LIVE", "configured_by", "upstream_label"]

VOICE_LIVE = "voice-live"
AZURE_OPENAI = "azure-openai"
UPSTREAMS = (VOICE_LIVE, AZURE_OPENAI)
"""Every upstream, in the order operators read them."""

_LABELS = {VOICE_LIVE: "Azure AI Voice Live", AZURE_OPENAI: "Azure OpenAI"}
_CONFIGURED_BY = {VOICE_LIVE: "AZURE_VOICELIVE_ENDPOINT", AZURE_OPENAI: "AZURE_OPENAI_ENDPOINTS"}


def upstream_label(upstream: str) -> str:
    """Return the product name of ``upstream`` for messages."""
    return _LABELS.get(upstream, upstream)


def configured_by(upstream: str) -> str:
    """Return the variable whose presence configures ``upstream``."""
    return _CONFIGURED_BY[upstream]
