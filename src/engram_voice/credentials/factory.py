"""Build the configured credential source (API key, Key Vault secret or Microsoft Entra ID)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engram_voice.credentials.sources import (
    COGNITIVE_SERVICES_SCOPE,
    CredentialSource,
    EntraTokenSource,
    StaticKeySource,
)
from engram_voice.errors import ConfigurationError
from engram_voice.realtime.settings import RealtimeSettings

if TYPE_CHECKING:
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential

__all__ = ["build_credential_source"]

# DefaultAzureCredential restricted to what runs in Azure (environment, workload and
# managed identity): developer sign-ins must never decide which vault key production reads.
_DEVELOPER_CREDENTIALS_OFF = {
    "exclude_shared_token_cache_credential": True,
    "exclude_visual_studio_code_credential": True,
    "exclude_cli_credential": True,
    "exclude_developer_cli_credential": True,
    "exclude_powershell_credential": True,
    "exclude_interactive_browser_credential": True,
}


def _azure_identity(
    settings: RealtimeSettings, *, production_only: bool
) -> tuple[ManagedIdentityCredential | DefaultAzureCredential, str]:
    from azure.identity.aio import (  # noqa: PLC0415 - only identity modes pay for the import
        DefaultAzureCredential,
        ManagedIdentityCredential,
    )

    if settings.client_id:
        return (
            ManagedIdentityCredential(client_id=settings.client_id),
            f"managed identity {settings.client_id}",
        )
    if production_only:
        return (
            DefaultAzureCredential(**_DEVELOPER_CREDENTIALS_OFF),
            "DefaultAzureCredential (production credentials)",
        )
    return DefaultAzureCredential(), "DefaultAzureCredential"


def _key_vault_source(settings: RealtimeSettings) -> CredentialSource:
    from engram_voice.credentials.keyvault import (  # noqa: PLC0415 - Key Vault mode only
        KeyVaultKeySource,
        key_vault_client,
    )

    if settings.key_vault_url is None:
        raise ConfigurationError("KEY_VAULT_URL is required for key-vault auth")
    credential, identity = _azure_identity(settings, production_only=True)
    client = key_vault_client(
        settings.key_vault_url, credential, timeout=settings.credential_timeout
    )
    return KeyVaultKeySource(
        client,
        secret_name=settings.key_vault_secret_name,
        refresh_seconds=settings.key_vault_refresh_seconds,
        timeout=settings.credential_timeout,
        identity=identity,
        closers=(client.close, credential.close),
    )


def build_credential_source(settings: RealtimeSettings) -> CredentialSource:
    """Return the credential source the realtime settings ask for (not yet started)."""
    if settings.auth == "api-key":
        if settings.api_key is None:
            raise ConfigurationError("AZURE_OPENAI_API_KEY is required for api-key auth")
        return StaticKeySource(settings.api_key)
    if settings.auth == "key-vault":
        return _key_vault_source(settings)
    from azure.identity.aio import get_bearer_token_provider  # noqa: PLC0415

    credential, identity = _azure_identity(settings, production_only=False)
    provider = get_bearer_token_provider(credential, COGNITIVE_SERVICES_SCOPE)
    return EntraTokenSource(
        provider, timeout=settings.credential_timeout, identity=identity, closer=credential.close
    )
