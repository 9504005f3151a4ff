"""Upstream credentials: API key from configuration or Microsoft Entra ID tokens."""

from engram_voice.credentials.secret import Secret
from engram_voice.credentials.sources import (
    AI_FOUNDRY_SCOPE,
    COGNITIVE_SERVICES_SCOPE,
    CredentialSource,
    EntraTokenSource,
    StaticKeySource,
    UpstreamCredential,
)

__all__ = [
    "AI_FOUNDRY_SCOPE",
    "COGNITIVE_SERVICES_SCOPE",
    "CredentialSource",
    "EntraTokenSource",
    "Secret",
    "StaticKeySource",
    "UpstreamCredential",
]
