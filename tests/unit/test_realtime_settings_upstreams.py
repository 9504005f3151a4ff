"""Realtime settings with two upstreams: Voice Live, the default upstream, call limits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engram_voice.credentials.secret import Secret
from engram_voice.envreader import EnvReader
from engram_voice.errors import ConfigurationError
from engram_voice.realtime.settings import RealtimeSettings
from engram_voice.settings import Settings

OPENAI = {"AZURE_OPENAI_ENDPOINTS": "https://engram.openai.azure.com", "AZURE_OPENAI_API_KEY": "k"}
LIVE = {
    "AZURE_VOICELIVE_ENDPOINT": "https://engram.services.ai.azure.com",
    "AZURE_VOICELIVE_KEY": "v",
}
SEED = {  # the v1 backend's variables, as they are
    "AZURE_VOICELIVE_ENDPOINT": "https://engram-foundry.services.ai.azure.com/",
    "AZURE_VOICELIVE_KEY": "seed-key",
    "AZURE_VOICELIVE_MODEL": "gpt-realtime",
}
VAULT = "https://engram-kv.vault.azure.net"
CLIENT = "11111111-2222-3333-4444-555555555555"
SERVICE = {"MEMORY_TOKEN_KEYS": "k1:" + "a" * 40, "AUTH_MODE": "none"}


def read(env: dict[str, str]) -> RealtimeSettings:
    """Read realtime settings from ``env`` and raise ConfigurationError listing every problem."""
    reader = EnvReader(env)
    settings = RealtimeSettings.from_env(reader)
    reader.raise_if_invalid()
    return settings


def problems(env: dict[str, str]) -> str:
    """Return the configuration error ``env`` produces (fail if it is valid)."""
    with pytest.raises(ConfigurationError) as info:
        read(env)
    return str(info.value)


VALID: list[Any] = [
    pytest.param(
        OPENAI,
        {"upstreams": {"azure-openai"}, "default_upstream": "azure-openai", "voicelive": None},
        id="azure-openai-only-is-todays-local-stack",
    ),
    pytest.param(
        LIVE,
        {"upstreams": {"voice-live"}, "default_upstream": "voice-live", "endpoints": ()},
        id="voice-live-only-needs-no-azure-openai",
    ),
    pytest.param(
        {**OPENAI, **LIVE},
        {"upstreams": {"voice-live", "azure-openai"}, "default_upstream": "voice-live"},
        id="both-default-to-voice-live",
    ),
    pytest.param(
        {**OPENAI, **LIVE, "REALTIME_DEFAULT_UPSTREAM": "Azure-OpenAI"},
        {"default_upstream": "azure-openai"},
        id="explicit-default",
    ),
    pytest.param(
        SEED,
        {
            "voicelive.endpoint": "https://engram-foundry.services.ai.azure.com",
            "voicelive.model": "gpt-realtime",
            "voicelive.api_version": "2026-01-01-preview",
            "voicelive.auth": "api-key",
            "voicelive.api_key": Secret("seed-key"),
            "voicelive.connect_timeout": 3.0,
            "voicelive.answer_timeout": 10.0,
        },
        id="seed-names-work-as-they-are",
    ),
    pytest.param(
        {**LIVE, "AZURE_VOICELIVE_ENDPOINT": "wss://engram.services.ai.azure.com"},
        {"voicelive.endpoint": "https://engram.services.ai.azure.com"},
        id="wss-endpoint-is-the-same-resource",
    ),
    pytest.param(
        {**LIVE, "AZURE_VOICELIVE_ENDPOINT": "http://127.0.0.1:8600/"},
        {"voicelive.endpoint": "http://127.0.0.1:8600"},
        id="http-on-loopback-for-the-emulator",
    ),
    pytest.param(
        {**LIVE, "AZURE_VOICELIVE_ENDPOINT": "http://[::1]:8600"},
        {"voicelive.endpoint": "http://[::1]:8600"},
        id="http-on-ipv6-loopback",
    ),
    pytest.param(
        {
            **LIVE,
            "AZURE_VOICELIVE_API_VERSION": "2026-06-01-preview",
            "AZURE_VOICELIVE_MODEL": "gpt-realtime-mini",
        },
        {"voicelive.api_version": "2026-06-01-preview", "voicelive.model": "gpt-realtime-mini"},
        id="api-version-and-model",
    ),
    pytest.param(
        {
            "AZURE_VOICELIVE_ENDPOINT": LIVE["AZURE_VOICELIVE_ENDPOINT"],
            "KEY_VAULT_URL": VAULT + "/",
        },
        {
            "voicelive.auth": "key-vault",
            "voicelive.key_vault_url": VAULT,
            "voicelive.key_vault_secret_name": "voicelive-api-key",
            "voicelive.api_key": None,
        },
        id="no-key-and-a-vault-reads-voicelive-api-key",
    ),
    pytest.param(
        {
            "AZURE_VOICELIVE_ENDPOINT": LIVE["AZURE_VOICELIVE_ENDPOINT"],
            "AZURE_VOICELIVE_AUTH": "key-vault",
            "AZURE_VOICELIVE_KEY_SECRET": "live-key",
            "KEY_VAULT_URL": VAULT,
            "KEY_VAULT_REFRESH_SECONDS": "60",
            "CREDENTIAL_TIMEOUT_SECONDS": "2",
            "AZURE_CLIENT_ID": CLIENT,
        },
        {
            "voicelive.key_vault_secret_name": "live-key",
            "voicelive.key_vault_refresh_seconds": 60.0,
            "voicelive.credential_timeout": 2.0,
            "voicelive.client_id": CLIENT,
        },
        id="vault-secret-identity-shared-with-azure-openai",
    ),
    pytest.param(
        {
            "AZURE_VOICELIVE_ENDPOINT": LIVE["AZURE_VOICELIVE_ENDPOINT"],
            "AZURE_VOICELIVE_AUTH": "entra",
        },
        {"voicelive.auth": "entra", "voicelive.api_key": None},
        id="entra-needs-no-key",
    ),
    pytest.param(
        {
            **LIVE,
            "CALL_MAX_SECONDS": "3600",
            "CALL_MAX_CONCURRENT_PER_USER": "5",
            "VOICELIVE_CONNECT_TIMEOUT_SECONDS": "0.5",
            "VOICELIVE_ANSWER_TIMEOUT_SECONDS": "2",
        },
        {
            "call_max_seconds": 3600.0,
            "call_max_concurrent_per_user": 5,
            "voicelive.connect_timeout": 0.5,
            "voicelive.answer_timeout": 2.0,
        },
        id="call-limits-and-timeouts",
    ),
    pytest.param(
        OPENAI,
        {"call_max_seconds": 1800.0, "call_max_concurrent_per_user": 2},
        id="call-limit-defaults",
    ),
]


def _value(settings: RealtimeSettings, path: str) -> object:
    value: object = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize(("env", "expected"), VALID)
def test_valid_environments_read_as_expected(env: dict[str, str], expected: dict[str, Any]) -> None:
    """Each shape of configuration reads into the settings the table gives."""
    settings = read(env)
    assert {path: _value(settings, path) for path in expected} == expected


INVALID: list[Any] = [
    pytest.param({}, "no realtime upstream is configured", id="nothing"),
    pytest.param(
        {"AZURE_OPENAI_AUTH": "entra"}, "AZURE_OPENAI_ENDPOINTS is required", id="openai-half-set"
    ),
    pytest.param(
        {**OPENAI, "AZURE_VOICELIVE_KEY": "v"},
        "AZURE_VOICELIVE_ENDPOINT is required when AZURE_VOICELIVE_KEY is set",
        id="voicelive-key-without-endpoint",
    ),
    *(
        pytest.param(
            {**LIVE, "AZURE_VOICELIVE_API_VERSION": version},
            f"AZURE_VOICELIVE_API_VERSION='{version}' does not serve WebRTC calls",
            id=f"api-version-{version}",
        )
        for version in ("2026-07-15", "v1", "V1")
    ),
    pytest.param(
        {**LIVE, "AZURE_VOICELIVE_ENDPOINT": "http://engram.services.ai.azure.com"},
        "must use https",
        id="plain-http-off-loopback",
    ),
    pytest.param(
        {
            **LIVE,
            "AZURE_VOICELIVE_ENDPOINT": "https://engram.services.ai.azure.com/voice-live/realtime",
        },
        "without a path or query",
        id="path-pasted-in",
    ),
    pytest.param(
        {**LIVE, "AZURE_VOICELIVE_ENDPOINT": "engram.services.ai.azure.com"},
        "is not an https URL",
        id="no-scheme",
    ),
    pytest.param(
        {"AZURE_VOICELIVE_ENDPOINT": LIVE["AZURE_VOICELIVE_ENDPOINT"]},
        "AZURE_VOICELIVE_KEY is required when AZURE_VOICELIVE_AUTH=api-key",
        id="no-credential",
    ),
    pytest.param(
        {
            "AZURE_VOICELIVE_ENDPOINT": LIVE["AZURE_VOICELIVE_ENDPOINT"],
            "AZURE_VOICELIVE_AUTH": "key-vault",
        },
        "KEY_VAULT_URL is required when AZURE_VOICELIVE_AUTH=key-vault",
        id="key-vault-without-vault",
    ),
    pytest.param(
        {**LIVE, "AZURE_VOICELIVE_AUTH": "key-vault", "KEY_VAULT_URL": "http://kv.example"},
        "KEY_VAULT_URL='http://kv.example' must be the vault's https URL",
        id="voicelive-key-vault-url-checked",
    ),
    pytest.param(
        {**LIVE, "AZURE_VOICELIVE_AUTH": "token"},
        "AZURE_VOICELIVE_AUTH='token' must be one of api-key, entra, key-vault",
        id="unknown-auth",
    ),
    pytest.param(
        {**OPENAI, "REALTIME_DEFAULT_UPSTREAM": "voice-live"},
        "REALTIME_DEFAULT_UPSTREAM=voice-live is not configured: set AZURE_VOICELIVE_ENDPOINT",
        id="default-not-configured",
    ),
    pytest.param(
        {**LIVE, "REALTIME_DEFAULT_UPSTREAM": "azure-openai"},
        "REALTIME_DEFAULT_UPSTREAM=azure-openai is not configured: set AZURE_OPENAI_ENDPOINTS",
        id="default-azure-openai-not-configured",
    ),
    pytest.param(
        {**LIVE, "REALTIME_DEFAULT_UPSTREAM": "openai"},
        "must be one of voice-live, azure-openai",
        id="unknown-default",
    ),
    pytest.param(
        {**LIVE, "CALL_MAX_SECONDS": "3601"},
        "CALL_MAX_SECONDS=3601 is above every upstream's own call limit",
        id="above-voice-live-cap",
    ),
    pytest.param({**LIVE, "CALL_MAX_SECONDS": "0"}, "CALL_MAX_SECONDS=0.0 must be", id="zero"),
    pytest.param(
        {**LIVE, "CALL_MAX_CONCURRENT_PER_USER": "0"},
        "CALL_MAX_CONCURRENT_PER_USER=0 must be between 1 and 1000",
        id="no-calls-per-user",
    ),
    pytest.param(
        {**OPENAI, "REALTIME_CAPTURE_PRIORITY": "realtime"},
        "REALTIME_CAPTURE_PRIORITY",
        id="unknown-capture-priority",
    ),
    pytest.param(
        {**LIVE, "VOICELIVE_CONNECT_TIMEOUT_SECONDS": "0"},
        "VOICELIVE_CONNECT_TIMEOUT_SECONDS=0.0 must be between 0.05 and 60.0",
        id="connect-timeout",
    ),
    pytest.param(
        {**LIVE, "VOICELIVE_ANSWER_TIMEOUT_SECONDS": "600"},
        "VOICELIVE_ANSWER_TIMEOUT_SECONDS=600.0 must be between 0.05 and 120.0",
        id="answer-timeout",
    ),
]


@pytest.mark.parametrize(("env", "message"), INVALID)
def test_invalid_environments_stop_start_up_naming_the_variable(
    env: dict[str, str], message: str
) -> None:
    """Each bad shape is refused with a message naming its variable and the fix."""
    assert message in problems(env)


@pytest.mark.parametrize("priority", ["idle", "low", "normal"])
def test_the_capture_priority_is_read_from_the_environment(priority: str) -> None:
    """REALTIME_CAPTURE_PRIORITY sets the capture process's level; normal when unset."""
    assert read({**OPENAI, "REALTIME_CAPTURE_PRIORITY": priority}).capture_priority == priority
    assert read(OPENAI).capture_priority == "normal"


def test_the_control_channel_url_carries_api_version_and_model() -> None:
    """calls_url() is Voice Live's /calls WebSocket URL (ws only for the loopback emulator)."""
    live = read({**LIVE, "AZURE_VOICELIVE_MODEL": "gpt-realtime-mini"}).voicelive
    assert live is not None
    assert live.calls_url() == (
        "wss://engram.services.ai.azure.com/voice-live/realtime/calls"
        "?api-version=2026-01-01-preview&model=gpt-realtime-mini"
    )
    local = read({**LIVE, "AZURE_VOICELIVE_ENDPOINT": "http://127.0.0.1:8600"}).voicelive
    assert local is not None
    assert local.calls_url().startswith("ws://127.0.0.1:8600/voice-live/realtime/calls?")


def test_the_voice_live_key_is_never_in_the_settings_repr() -> None:
    """The key is a Secret: repr and str of the settings do not show it."""
    settings = read(SEED)
    assert "seed-key" not in repr(settings)


def test_call_duration_is_capped_per_upstream() -> None:
    """call_max_seconds_for() never exceeds the upstream's own cap."""
    settings = read({**OPENAI, **LIVE, "CALL_MAX_SECONDS": "3600"})
    assert settings.call_max_seconds_for("voice-live") == 3600.0
    assert settings.call_max_seconds_for("azure-openai") == 1800.0


# -- the whole settings, with the agent catalog ------------------------------------------


def service(env: dict[str, str]) -> Settings:
    """Read the service's whole settings (the catalog is loaded and checked too)."""
    return Settings.from_env({**SERVICE, **env})


@pytest.mark.parametrize(
    ("env", "upstream", "voices"),
    [
        (OPENAI, "azure-openai", ["marin", "cedar", "marin"]),
        (
            LIVE,
            "voice-live",
            ["en-US-Ava:DragonHDLatestNeural", "en-US-GuyNeural", "en-US-Ava:DragonHDLatestNeural"],
        ),
        (
            {**OPENAI, **LIVE},
            "voice-live",
            ["en-US-Ava:DragonHDLatestNeural", "en-US-GuyNeural", "en-US-Ava:DragonHDLatestNeural"],
        ),
        (
            SEED,
            "voice-live",
            ["en-US-Ava:DragonHDLatestNeural", "en-US-GuyNeural", "en-US-Ava:DragonHDLatestNeural"],
        ),
    ],
)
def test_the_shipped_catalog_follows_the_configured_default_upstream(
    env: dict[str, str], upstream: str, voices: list[str]
) -> None:
    """Elena, Marcus and Sage are served by the default upstream with its voices."""
    agents = service(env).realtime.load_catalog().all()
    assert [a.upstream for a in agents] == [upstream] * 3
    assert [a.voice for a in agents] == voices


def _agents_file(tmp_path: Path, body: str) -> str:
    path = tmp_path / "agents.toml"
    path.write_text(body)
    return str(path)


def test_an_agent_on_an_unconfigured_upstream_stops_start_up_naming_the_file(
    tmp_path: Path,
) -> None:
    """Start-up fails (exit 2 path) with AGENTS_FILE, the agent and the missing variable."""
    path = _agents_file(
        tmp_path, '[agents.x]\nname="X"\ninstructions="i"\nupstream="azure-openai"\nvoice="ash"\n'
    )
    with pytest.raises(ConfigurationError) as info:
        service({**LIVE, "AGENTS_FILE": path})
    message = str(info.value)
    assert f"AGENTS_FILE={path}: agent 'x' uses upstream azure-openai" in message
    assert "set AZURE_OPENAI_ENDPOINTS" in message


def test_a_call_limit_above_azure_openais_cap_is_refused_when_an_agent_uses_it(
    tmp_path: Path,
) -> None:
    """CALL_MAX_SECONDS=3600 suits Voice Live agents but not an Azure OpenAI one."""
    assert service({**OPENAI, **LIVE, "CALL_MAX_SECONDS": "3600"}).realtime.call_max_seconds == 3600
    path = _agents_file(
        tmp_path, '[agents.x]\nname="X"\ninstructions="i"\nupstream="azure-openai"\nvoice="ash"\n'
    )
    with pytest.raises(ConfigurationError) as info:
        service({**OPENAI, **LIVE, "CALL_MAX_SECONDS": "3600", "AGENTS_FILE": path})
    assert "CALL_MAX_SECONDS=3600 is above Azure OpenAI's own 1800 s call limit (agents x" in str(
        info.value
    )


def test_nothing_configured_names_both_upstreams_and_nothing_about_agents() -> None:
    """With no upstream at all the one message names both endpoint variables."""
    with pytest.raises(ConfigurationError) as info:
        service({})
    message = str(info.value)
    assert "AZURE_VOICELIVE_ENDPOINT" in message
    assert "AZURE_OPENAI_ENDPOINTS" in message
    assert "agents.toml" not in message
