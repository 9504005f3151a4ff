"""Build the configured credential source (API key or Microsoft Entra ID)."""

from __future__ import annotations

from engram_voice.credentials.sources import (
    COGNITIVE_SERVICES_SCOPE,
    CredentialSource,
    EntraTokenSource,
    StaticKeySource,
)
from engram_voice.errors import ConfigurationError
from engram_voice.realtime.settings import RealtimeSettings

__all__ = ["build_credential_source"]


def build_credential_source(settings: RealtimeSettings) -> CredentialSource:
    """Return the credential source the realtime settings ask for."""
    if settings.auth == "api-key":
        if settings.api_key is None:
            raise ConfigurationError("AZURE_OPENAI_API_KEY is required for api-key auth")
        return StaticKeySource(settings.api_key)
    from azure.identity.aio import (  # noqa: PLC0415 - only Entra mode pays for the import
        DefaultAzureCredential,
        ManagedIdentityCredential,
        get_bearer_token_provider,
    )

    credential: ManagedIdentityCredential | DefaultAzureCredential
    if settings.client_id:
        credential = ManagedIdentityCredential(client_id=settings.client_id)
        identity = f"managed identity {settings.client_id}"
    else:
        credential = DefaultAzureCredential()
        identity = "DefaultAzureCredential"
    provider = get_bearer_token_provider(credential, COGNITIVE_SERVICES_SCOPE)
    return EntraTokenSource(
        provider, timeout=settings.credential_timeout, identity=identity, closer=credential.close
    )
