"""Key Vault settings: the key-vault auth choice, its URL rule, secret name and refresh bounds."""

from __future__ import annotations

import pytest

from engram_voice.envreader import EnvReader
from engram_voice.errors import ConfigurationError
from engram_voice.realtime.settings import RealtimeSettings

BASE = {"AZURE_OPENAI_ENDPOINTS": "https://engram-eus2.openai.azure.com"}
VAULT = "https://engram-kv.vault.azure.net"


def read(env: dict[str, str]) -> RealtimeSettings:
    """Read realtime settings from ``env`` and raise ConfigurationError listing every problem."""
    reader = EnvReader({**BASE, **env})
    settings = RealtimeSettings.from_env(reader)
    reader.raise_if_invalid()
    return settings


def problems(env: dict[str, str]) -> str:
    """Return the configuration error message ``env`` produces (fail if it is valid)."""
    with pytest.raises(ConfigurationError) as info:
        read(env)
    return str(info.value)


def test_key_vault_mode_reads_url_name_and_refresh_with_defaults() -> None:
    """key-vault needs only KEY_VAULT_URL; the secret name and 5-minute refresh are defaults."""
    settings = read({"AZURE_OPENAI_AUTH": "key-vault", "KEY_VAULT_URL": VAULT + "/"})
    assert settings.auth == "key-vault"
    assert settings.key_vault_url == VAULT
    assert settings.key_vault_secret_name == "voicelive-api-key"
    assert settings.key_vault_refresh_seconds == 300.0
    assert settings.api_key is None


def test_key_vault_mode_takes_a_custom_secret_name_and_refresh_interval() -> None:
    """KEY_VAULT_SECRET_NAME and KEY_VAULT_REFRESH_SECONDS override the defaults."""
    settings = read(
        {
            "AZURE_OPENAI_AUTH": "KEY-VAULT",
            "KEY_VAULT_URL": VAULT,
            "KEY_VAULT_SECRET_NAME": "openai-key",
            "KEY_VAULT_REFRESH_SECONDS": "60",
            "AZURE_CLIENT_ID": "11111111-2222-3333-4444-555555555555",
        }
    )
    assert settings.key_vault_secret_name == "openai-key"
    assert settings.key_vault_refresh_seconds == 60.0
    assert settings.client_id == "11111111-2222-3333-4444-555555555555"


def test_key_vault_mode_without_a_url_names_the_variable_and_an_example() -> None:
    """A missing KEY_VAULT_URL stops start-up with the variable and an example URL."""
    message = problems({"AZURE_OPENAI_AUTH": "key-vault"})
    assert "KEY_VAULT_URL is required when AZURE_OPENAI_AUTH=key-vault" in message
    assert "https://my-vault.vault.azure.net" in message


@pytest.mark.parametrize(
    "url",
    ["http://engram-kv.vault.azure.net", "engram-kv.vault.azure.net", f"{VAULT}/secrets/x"],
)
def test_key_vault_url_must_be_a_bare_https_url(url: str) -> None:
    """Plain http, a missing scheme or a path (a secret URL pasted by mistake) are refused."""
    message = problems({"AZURE_OPENAI_AUTH": "key-vault", "KEY_VAULT_URL": url})
    assert f"KEY_VAULT_URL={url!r} must be the vault's https URL" in message


def test_refresh_interval_is_bounded() -> None:
    """A refresh interval under 5 s (throttling Key Vault) or over a day is refused."""
    message = problems(
        {"AZURE_OPENAI_AUTH": "key-vault", "KEY_VAULT_URL": VAULT, "KEY_VAULT_REFRESH_SECONDS": "1"}
    )
    assert "KEY_VAULT_REFRESH_SECONDS=1.0 must be between 5.0 and 86400.0" in message


def test_unknown_auth_mode_lists_key_vault_among_the_choices() -> None:
    """An unknown AZURE_OPENAI_AUTH names all three choices."""
    message = problems({"AZURE_OPENAI_AUTH": "vault", "AZURE_OPENAI_API_KEY": "k"})
    assert "must be one of api-key, entra, key-vault" in message


def test_key_vault_settings_are_ignored_in_api_key_mode() -> None:
    """In api-key mode the Key Vault URL is not validated (it is simply unused)."""
    settings = read({"AZURE_OPENAI_API_KEY": "k", "KEY_VAULT_URL": "not a url"})
    assert settings.auth == "api-key"
