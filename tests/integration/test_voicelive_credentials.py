"""Voice Live's credential source, built by the one factory: API key, Key Vault (rotation), Entra.

The Key Vault cases use the HTTPS Key Vault stand-in through the real SDK, and the managed
identity stand-in through azure-identity's production code path, exactly as for Azure OpenAI.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engram_voice.credentials import AI_FOUNDRY_SCOPE, CredentialSource, Secret
from engram_voice.credentials.factory import build_voicelive_credential_source
from engram_voice.errors import ConfigurationError, CredentialUnavailableError
from engram_voice.realtime.settings import RealtimeSettings, VoiceLiveSettings
from engram_voice.services import Overrides, open_services
from engram_voice.settings import Settings
from tests.support.keyvault import KeyVaultStandIn, TlsFiles
from tests.support.managed_identity import ManagedIdentityEndpoint

NAME = "voicelive-api-key"
LIVE = "https://engram.services.ai.azure.com"


def voicelive(env: dict[str, str]) -> VoiceLiveSettings:
    """Read Voice Live's settings from ``env`` (valid, or the test fails)."""
    settings = Settings.from_env(
        {"MEMORY_TOKEN_KEYS": "k1:" + "a" * 40, "AUTH_MODE": "none", **env}
    ).realtime.voicelive
    assert settings is not None
    return settings


@pytest.fixture(name="started")
async def fixture_started() -> AsyncIterator[list[CredentialSource]]:
    """Collect sources a test starts and close them all afterwards."""
    sources: list[CredentialSource] = []
    yield sources
    for source in sources:
        await source.aclose()


async def test_key_vault_source_reads_the_key_and_follows_a_rotation_on_401(
    vault: KeyVaultStandIn,
    vault_tls: TlsFiles,
    vault_identity: ManagedIdentityEndpoint,
    started: list[CredentialSource],
) -> None:
    """The secret's latest version is the api-key; a new version is used after Azure's 401."""
    vault.set_secret(NAME, "live-key-one-0123456789")
    settings = voicelive(
        {
            "AZURE_VOICELIVE_ENDPOINT": LIVE,
            "KEY_VAULT_URL": vault.url,
            "AZURE_CLIENT_ID": vault_identity.env()["AZURE_CLIENT_ID"],
        }
    )
    assert settings.auth == "key-vault"
    source = build_voicelive_credential_source(settings, connection_verify=str(vault_tls.cert))
    started.append(source)
    await source.start()
    first = await source.get()
    assert first.headers() == {"api-key": "live-key-one-0123456789"}
    assert first.version == vault.secrets[NAME][-1].version

    vault.set_secret(NAME, "live-key-two-0123456789")  # the operator rotates
    assert await source.invalidate(first) is True  # what a 401 on the control channel does
    second = await source.get()
    assert second.secret == Secret("live-key-two-0123456789")
    assert second.version == vault.secrets[NAME][-1].version != first.version
    described = source.describe()
    assert described["secret_name"] == NAME
    assert second.version is not None
    assert described["version"] == second.version[:8]
    assert "live-key" not in repr(described)


async def test_a_missing_voice_live_secret_names_its_own_variable(
    vault: KeyVaultStandIn, vault_tls: TlsFiles, vault_identity: ManagedIdentityEndpoint
) -> None:
    """A wrong AZURE_VOICELIVE_KEY_SECRET stops start-up naming that variable."""
    settings = voicelive(
        {
            "AZURE_VOICELIVE_ENDPOINT": LIVE,
            "AZURE_VOICELIVE_AUTH": "key-vault",
            "AZURE_VOICELIVE_KEY_SECRET": "no-such-secret",
            "KEY_VAULT_URL": vault.url,
            "AZURE_CLIENT_ID": vault_identity.env()["AZURE_CLIENT_ID"],
        }
    )
    source = build_voicelive_credential_source(settings, connection_verify=str(vault_tls.cert))
    try:
        with pytest.raises(ConfigurationError) as info:
            await source.start()
    finally:
        await source.aclose()
    assert "'no-such-secret'" in str(info.value)
    assert "AZURE_VOICELIVE_KEY_SECRET" in str(info.value)


async def test_entra_mode_asks_the_managed_identity_for_the_ai_azure_com_scope(
    vault_identity: ManagedIdentityEndpoint, started: list[CredentialSource]
) -> None:
    """AZURE_VOICELIVE_AUTH=entra sends a bearer for https://ai.azure.com, not cognitiveservices."""
    settings = voicelive(
        {
            "AZURE_VOICELIVE_ENDPOINT": LIVE,
            "AZURE_VOICELIVE_AUTH": "entra",
            "AZURE_CLIENT_ID": vault_identity.env()["AZURE_CLIENT_ID"],
        }
    )
    source = build_voicelive_credential_source(settings)
    started.append(source)
    await source.start()
    credential = await source.get()
    assert credential.headers() == {"Authorization": f"Bearer {vault_identity.token}"}
    assert AI_FOUNDRY_SCOPE == "https://ai.azure.com/.default"
    assert [r.get("resource") for r in vault_identity.requests] == ["https://ai.azure.com"]


async def test_api_key_mode_sends_the_configured_key(started: list[CredentialSource]) -> None:
    """The seed's AZURE_VOICELIVE_KEY becomes the api-key header."""
    source = build_voicelive_credential_source(
        voicelive({"AZURE_VOICELIVE_ENDPOINT": LIVE, "AZURE_VOICELIVE_KEY": "seed-key"})
    )
    started.append(source)
    await source.start()
    assert (await source.get()).headers() == {"api-key": "seed-key"}


def _service_settings(env: dict[str, str]) -> Settings:
    return Settings.from_env(
        {
            "MEMORY_TOKEN_KEYS": "k1:" + "a" * 40,
            "AUTH_MODE": "none",
            "MEMORY_ENABLED": "false",
            "USAGE_SQLITE_PATH": str(Path(tempfile.mkdtemp(prefix="engram-usage-")) / "u.db"),
            **env,
        }
    )


async def test_services_expose_voice_live_and_tolerate_no_azure_openai() -> None:
    """A Voice-Live-only service starts: services.voicelive is ready, Azure OpenAI says 503."""
    settings = _service_settings({"AZURE_VOICELIVE_ENDPOINT": LIVE, "AZURE_VOICELIVE_KEY": "v"})
    async with open_services(settings, Overrides()) as services:
        assert services.voicelive is not None
        assert services.voicelive.settings is settings.realtime.voicelive
        assert (await services.voicelive.credentials.get()).headers() == {"api-key": "v"}
        assert {a.upstream for a in services.catalog.all()} == {"voice-live"}
        assert services.catalog.get("marcus").voice == "en-US-GuyNeural"
        await services.credentials.check()  # not configured is not unready
        with pytest.raises(CredentialUnavailableError, match="AZURE_OPENAI_ENDPOINTS"):
            await services.credentials.get()


async def test_services_without_voice_live_keep_todays_azure_openai_stack() -> None:
    """The existing local stack (AZURE_OPENAI_* only) starts with voicelive None and marin/cedar."""
    settings = _service_settings(
        {"AZURE_OPENAI_ENDPOINTS": "http://127.0.0.1:9", "AZURE_OPENAI_API_KEY": "k"}
    )
    assert isinstance(settings.realtime, RealtimeSettings)
    async with open_services(settings, Overrides()) as services:
        assert services.voicelive is None
        assert [a.voice for a in services.catalog.all()] == ["marin", "cedar", "marin"]
