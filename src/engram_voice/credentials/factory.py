"""Build the configured credential sources (API key, Key Vault secret or Microsoft Entra ID).

One builder serves both upstreams: :func:`build_credential_source` for Azure OpenAI and
:func:`build_voicelive_credential_source` for Azure AI Voice Live describe what they need
as a :class:`CredentialSpec` (the Entra scope and the variable names for messages differ),
so a Key Vault secret is read, refreshed and re-read on 401 the same way for both. Every
Key Vault source (these two and the PostgreSQL password's) leases its vault's client and
identity from :data:`~engram_voice.credentials.vaults.shared_vaults`: one per vault.
"""

from __future__ import annotations

import msgspec

from engram_voice.credentials.secret import Secret
from engram_voice.credentials.sources import (
    AI_FOUNDRY_SCOPE,
    COGNITIVE_SERVICES_SCOPE,
    CredentialSource,
    EntraTokenSource,
    NotConfiguredSource,
    StaticKeySource,
)
from engram_voice.credentials.vaults import VaultClients, azure_identity, shared_vaults
from engram_voice.errors import ConfigurationError
from engram_voice.realtime.settings import RealtimeSettings, VoiceLiveSettings

__all__ = [
    "CredentialSpec",
    "build_credential_source",
    "build_source",
    "build_voicelive_credential_source",
    "voicelive_credential_spec",
]


class CredentialSpec(msgspec.Struct, frozen=True):
    """What one upstream's credential source needs, and the names its messages use."""

    upstream: str
    auth: str
    api_key: Secret | None
    api_key_setting: str
    client_id: str | None
    key_vault_url: str | None
    secret_name: str
    name_setting: str
    refresh_seconds: float
    timeout: float
    scope: str


def _key_vault_source(
    spec: CredentialSpec, connection_verify: bool | str, vaults: VaultClients
) -> CredentialSource:
    from engram_voice.credentials.keyvault import (  # noqa: PLC0415 - Key Vault mode only
        KeyVaultKeySource,
    )

    if spec.key_vault_url is None:
        raise ConfigurationError("KEY_VAULT_URL is required for key-vault auth")
    lease = vaults.lease(
        spec.key_vault_url,
        client_id=spec.client_id,
        timeout=spec.timeout,
        connection_verify=connection_verify,
    )
    return KeyVaultKeySource(
        lease.client,
        secret_name=spec.secret_name,
        refresh_seconds=spec.refresh_seconds,
        timeout=spec.timeout,
        identity=lease.identity,
        closers=(lease.release,),
        name_setting=spec.name_setting,
        upstream=spec.upstream,
    )


def build_source(
    spec: CredentialSpec,
    *,
    connection_verify: bool | str = True,
    vaults: VaultClients = shared_vaults,
) -> CredentialSource:
    """Return the credential source ``spec`` asks for (not yet started).

    A Key Vault source leases its vault's client and identity from ``vaults`` (one per
    vault for the whole process), so several secrets read from one vault share them.
    ``connection_verify`` is passed to the Key Vault client (a CA file for a local vault).
    """
    if spec.auth == "api-key":
        if spec.api_key is None:
            raise ConfigurationError(f"{spec.api_key_setting} is required for api-key auth")
        return StaticKeySource(spec.api_key)
    if spec.auth == "key-vault":
        return _key_vault_source(spec, connection_verify, vaults)
    from azure.identity.aio import get_bearer_token_provider  # noqa: PLC0415

    credential, identity = azure_identity(spec.client_id, production_only=False)
    provider = get_bearer_token_provider(credential, spec.scope)
    return EntraTokenSource(
        provider, timeout=spec.timeout, identity=identity, closer=credential.close
    )


def build_credential_source(
    settings: RealtimeSettings, *, connection_verify: bool | str = True
) -> CredentialSource:
    """Return Azure OpenAI's credential source (not yet started).

    Without Azure OpenAI configured (a Voice-Live-only deployment) the source says so
    whenever a credential is asked for.
    """
    if not settings.azure_openai_configured:
        return NotConfiguredSource("Azure OpenAI", "AZURE_OPENAI_ENDPOINTS")
    return build_source(
        CredentialSpec(
            upstream="Azure OpenAI",
            auth=settings.auth,
            api_key=settings.api_key,
            api_key_setting="AZURE_OPENAI_API_KEY",
            client_id=settings.client_id,
            key_vault_url=settings.key_vault_url,
            secret_name=settings.key_vault_secret_name,
            name_setting="KEY_VAULT_SECRET_NAME",
            refresh_seconds=settings.key_vault_refresh_seconds,
            timeout=settings.credential_timeout,
            scope=COGNITIVE_SERVICES_SCOPE,
        ),
        connection_verify=connection_verify,
    )


def voicelive_credential_spec(settings: VoiceLiveSettings) -> CredentialSpec:
    """Return what Voice Live's credential source needs (Entra scope ai.azure.com)."""
    return CredentialSpec(
        upstream="Voice Live",
        auth=settings.auth,
        api_key=settings.api_key,
        api_key_setting="AZURE_VOICELIVE_KEY",
        client_id=settings.client_id,
        key_vault_url=settings.key_vault_url,
        secret_name=settings.key_vault_secret_name,
        name_setting="AZURE_VOICELIVE_KEY_SECRET",
        refresh_seconds=settings.key_vault_refresh_seconds,
        timeout=settings.credential_timeout,
        scope=AI_FOUNDRY_SCOPE,
    )


def build_voicelive_credential_source(
    settings: VoiceLiveSettings, *, connection_verify: bool | str = True
) -> CredentialSource:
    """Return Voice Live's credential source (not yet started)."""
    return build_source(voicelive_credential_spec(settings), connection_verify=connection_verify)
