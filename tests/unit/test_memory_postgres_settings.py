"""MEMORY_POSTGRES_AUTH=key-vault: what it needs, and the password source it builds."""

from __future__ import annotations

import pytest

from engram_voice.envreader import EnvReader
from engram_voice.memory.postgres_auth import KeyVaultPassword, connection_from_settings
from engram_voice.memory.settings import PostgresSettings

BASE = {
    "MEMORY_POSTGRES_HOST": "db.example",
    "MEMORY_POSTGRES_USER": "engram",
    "MEMORY_POSTGRES_AUTH": "key-vault",
}


def _read(env: dict[str, str]) -> tuple[PostgresSettings | None, list[str]]:
    reader = EnvReader(env)
    settings = PostgresSettings.from_env(reader, required=True)
    return settings, reader.problems


@pytest.mark.parametrize(
    "vault",
    [
        None,
        "",
        "http://kv.vault.azure.net",
        "https://kv.vault.azure.net/secrets",
        "kv.vault.azure.net",
    ],
)
def test_key_vault_auth_refuses_a_missing_or_unusable_vault_url(vault):
    """Without KEY_VAULT_URL as an https URL without a path, start-up stops with one message."""
    env = dict(BASE)
    if vault is not None:
        env["KEY_VAULT_URL"] = vault
    _, problems = _read(env)
    assert any("MEMORY_POSTGRES_AUTH=key-vault needs KEY_VAULT_URL" in p for p in problems)


@pytest.mark.parametrize(
    ("extra", "secret", "refresh"),
    [
        ({}, "postgres-password", 300.0),
        ({"MEMORY_POSTGRES_PASSWORD_SECRET": "pg-app"}, "pg-app", 300.0),
        ({"KEY_VAULT_REFRESH_SECONDS": "60"}, "postgres-password", 60.0),
    ],
)
async def test_key_vault_auth_reads_the_named_secret_with_the_shared_refresh(
    extra, secret, refresh
):
    """The secret's name and refresh period are read; the pool gets a Key Vault password."""
    settings, problems = _read({**BASE, "KEY_VAULT_URL": "https://kv.vault.azure.net/", **extra})
    assert problems == []
    assert settings is not None
    assert (settings.key_vault_url, settings.password_secret) == (
        "https://kv.vault.azure.net",
        secret,
    )
    assert settings.key_vault_refresh_seconds == refresh
    assert settings.password is None
    conninfo, password = connection_from_settings(settings)
    try:
        assert isinstance(password, KeyVaultPassword)
        assert password.describe()["secret_name"] == secret
        assert "password" not in conninfo
    finally:
        await password.aclose()
