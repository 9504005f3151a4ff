"""``engram-voice check`` as an operator runs it: a process against the emulator and stand-ins.

Each test runs the real command in its own process with only environment variables, the
way an operator runs it in the Container App's console, and reads its exit code and words.
"""

from __future__ import annotations

import secrets

import pytest

from engram_voice.realtime.check import (
    EXIT_CREDENTIAL,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_REJECTED,
    EXIT_UNREACHABLE,
)
from tests.conftest import Emulator
from tests.support.keyvault import KeyVaultStandIn, TlsFiles
from tests.support.managed_identity import managed_identity_endpoint
from tests.support.servers import free_port, run_command

EXIT_INVALID_CONFIGURATION = 2


def check_env(emulator: Emulator, **extra: str) -> dict[str, str]:
    """Return the realtime variables of an api-key deployment pointing at ``emulator``."""
    env = {
        "AZURE_OPENAI_ENDPOINTS": emulator.url,
        "AZURE_OPENAI_API_KEY": emulator.keys[0],
        "UPSTREAM_TIMEOUT_SECONDS": "3",
        "CREDENTIAL_TIMEOUT_SECONDS": "2",
    }
    env.update(extra)
    return env


def assert_no_secret(output: str, *secret_values: str) -> None:
    """No key, token or secret value appears in what the command printed."""
    for value in secret_values:
        assert value not in output


def test_a_working_api_key_mints_once_per_endpoint_and_exits_zero(
    emulator: Emulator, second_emulator: Emulator
) -> None:
    """With a valid key every endpoint mints; the output names hosts and never the key."""
    env = check_env(emulator, AZURE_OPENAI_ENDPOINTS=f"{emulator.url},{second_emulator.url}")
    result = run_command(["check"], env)
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    out = result.stdout
    assert "credential: api-key" in out
    assert out.count("OK: minted an ephemeral key") == 2
    assert emulator.url.removeprefix("http://") in out
    assert second_emulator.url.removeprefix("http://") in out
    assert "result: OK, 2 of 2 endpoint(s) minted" in out
    assert_no_secret(out + result.stderr, *emulator.keys)


def test_a_refused_key_exits_4_and_says_where_to_find_a_current_key(emulator: Emulator) -> None:
    """A key Azure answers 401 to is reported as refused with the portal page to copy from."""
    wrong = secrets.token_hex(16)
    result = run_command(["check"], check_env(emulator, AZURE_OPENAI_API_KEY=wrong))
    assert result.returncode == EXIT_REFUSED, result.stdout + result.stderr
    assert "FAILED" in result.stdout
    assert "Keys and Endpoint" in result.stdout
    assert_no_secret(result.stdout + result.stderr, wrong)


def test_an_unknown_deployment_exits_5_and_names_the_supported_regions(
    emulator: Emulator,
) -> None:
    """A deployment the resource lacks (404) is a rejected request with the region hint."""
    env = check_env(emulator, AZURE_OPENAI_DEPLOYMENT="gpt-4o-mini")
    result = run_command(["check"], env)
    assert result.returncode == EXIT_REJECTED, result.stdout + result.stderr
    assert "no deployment named 'gpt-4o-mini'" in result.stdout
    assert "East US 2 or Sweden Central" in result.stdout


def test_an_unreachable_endpoint_exits_6_after_trying_the_others(emulator: Emulator) -> None:
    """A closed port fails that endpoint only; the others are still checked and reported."""
    closed = f"http://127.0.0.1:{free_port()}"
    env = check_env(emulator, AZURE_OPENAI_ENDPOINTS=f"{closed},{emulator.url}")
    result = run_command(["check"], env)
    assert result.returncode == EXIT_UNREACHABLE, result.stdout + result.stderr
    assert "could not be reached" in result.stdout
    assert "AZURE_OPENAI_ENDPOINTS" in result.stdout
    assert "OK: minted an ephemeral key" in result.stdout
    assert "FAILED on 1 of 2 endpoint(s)" in result.stdout


def test_invalid_configuration_exits_2_naming_every_problem() -> None:
    """Missing endpoints and a missing key are both named before anything is contacted."""
    result = run_command(["check"], {"AZURE_OPENAI_AUTH": "api-key"})
    assert result.returncode == EXIT_INVALID_CONFIGURATION
    assert "AZURE_OPENAI_ENDPOINTS" in result.stderr
    assert "AZURE_OPENAI_API_KEY" in result.stderr


def test_key_vault_mode_reads_the_secret_with_the_managed_identity_and_mints(
    emulator: Emulator, vault: KeyVaultStandIn, vault_tls: TlsFiles
) -> None:
    """Key Vault mode gets a token from the managed identity, reads the key and mints with it."""
    version = vault.set_secret("voicelive-api-key", emulator.keys[1])
    with managed_identity_endpoint() as identity:
        identity.token = vault.token
        env = check_env(
            emulator,
            AZURE_OPENAI_AUTH="key-vault",
            AZURE_OPENAI_API_KEY="",
            KEY_VAULT_URL=vault.url,
            SSL_CERT_FILE=str(vault_tls.cert),
            **identity.env(),
        )
        result = run_command(["check"], env)
    out = result.stdout
    assert result.returncode == EXIT_OK, out + result.stderr
    assert f"vault {vault.url.removeprefix('https://')}" in out
    assert "secret voicelive-api-key" in out
    assert f"key version {version[:8]} " in out  # shortened, as in the portal
    assert "OK: minted an ephemeral key" in out
    assert vault.reads >= 1
    assert_no_secret(out + result.stderr, *emulator.keys, vault.token)


def test_a_managed_identity_that_does_not_answer_exits_3_within_the_credential_timeout(
    emulator: Emulator,
) -> None:
    """A hanging identity endpoint is cut off by CREDENTIAL_TIMEOUT_SECONDS and explained."""
    with managed_identity_endpoint(hang=True) as identity:
        env = check_env(
            emulator,
            AZURE_OPENAI_AUTH="entra",
            AZURE_OPENAI_API_KEY="",
            CREDENTIAL_TIMEOUT_SECONDS="1",
            **identity.env(),
        )
        result = run_command(["check"], env, timeout=25)
    assert result.returncode == EXIT_CREDENTIAL, result.stdout + result.stderr
    assert "did not answer in time" in result.stdout
    assert "AZURE_CLIENT_ID" in result.stdout


def test_entra_mode_mints_with_the_identity_token(emulator: Emulator) -> None:
    """Keyless mode sends the managed identity's bearer token, which the resource accepts."""
    with managed_identity_endpoint() as identity:
        identity.token = emulator.bearer
        env = check_env(
            emulator, AZURE_OPENAI_AUTH="entra", AZURE_OPENAI_API_KEY="", **identity.env()
        )
        result = run_command(["check"], env)
    assert result.returncode == EXIT_OK, result.stdout + result.stderr
    assert "credential: entra" in result.stdout
    assert identity.requests, "the token came from the managed identity endpoint"
    assert_no_secret(result.stdout + result.stderr, emulator.bearer)


# -- Azure AI Voice Live -------------------------------------------------------------------


def voicelive_env(emulator: Emulator, **extra: str) -> dict[str, str]:
    """Return the variables of a Voice-Live-only api-key deployment pointing at ``emulator``."""
    env = {
        "AZURE_VOICELIVE_ENDPOINT": emulator.url,
        "AZURE_VOICELIVE_KEY": emulator.keys[0],
        "VOICELIVE_CONNECT_TIMEOUT_SECONDS": "3",
        "VOICELIVE_ANSWER_TIMEOUT_SECONDS": "3",
        "CREDENTIAL_TIMEOUT_SECONDS": "2",
    }
    env.update(extra)
    return env


def test_voice_live_alone_opens_the_control_channel_and_exits_zero(emulator: Emulator) -> None:
    """A Voice-Live-only deployment is checked (not refused as 'Azure OpenAI not configured')."""
    result = run_command(["check"], voicelive_env(emulator))
    out = result.stdout
    assert result.returncode == EXIT_OK, out + result.stderr
    assert "not configured" not in out
    assert "Azure AI Voice Live" in out
    assert "(api-version 2026-01-01-preview, model gpt-realtime)" in out
    assert "credential: api-key (AZURE_VOICELIVE_KEY)" in out
    assert "OK: control channel opened" in out
    assert "session: agent elena" in out
    assert "result: OK, Voice Live control channel opened" in out
    assert_no_secret(out + result.stderr, *emulator.keys)
    calls = emulator.state()["voicelive_calls"]
    assert isinstance(calls, list)
    assert calls[-1]["rtc_call_id"] is None, "no call was placed"


def test_both_upstreams_are_checked_and_reported_together(emulator: Emulator) -> None:
    """With Azure OpenAI and Voice Live configured both are verified in one run."""
    result = run_command(["check"], {**check_env(emulator), **voicelive_env(emulator)})
    out = result.stdout
    assert result.returncode == EXIT_OK, out + result.stderr
    assert "OK: minted an ephemeral key" in out
    assert "OK: control channel opened" in out
    assert "result: OK, 1 of 1 endpoint(s) minted; Voice Live control channel opened" in out
    assert_no_secret(out + result.stderr, *emulator.keys)


@pytest.mark.parametrize("cause", ["upgrade_401", "wrong key"])
def test_a_refused_voice_live_credential_exits_4_with_the_key_fix(
    emulator: Emulator, cause: str
) -> None:
    """A 401 at the upgrade (injected, or a key the resource does not know) says which key."""
    wrong = secrets.token_hex(16)
    env = voicelive_env(emulator)
    if cause == "wrong key":
        env["AZURE_VOICELIVE_KEY"] = wrong
    else:
        emulator.fault(target="voicelive", mode="upgrade_401")
    result = run_command(["check"], env)
    assert result.returncode == EXIT_REFUSED, result.stdout + result.stderr
    assert "refused the credential" in result.stdout
    assert "AZURE_VOICELIVE_KEY is not a current key" in result.stdout
    assert "Keys and Endpoint" in result.stdout
    assert_no_secret(result.stdout + result.stderr, wrong, *emulator.keys)


def test_a_voice_live_404_exits_5_naming_the_api_version_and_the_resource(
    emulator: Emulator,
) -> None:
    """A 404 at the upgrade points at the preview api-version and the resource's host."""
    emulator.fault(target="voicelive", mode="upgrade_404")
    result = run_command(["check"], voicelive_env(emulator))
    assert result.returncode == EXIT_REJECTED, result.stdout + result.stderr
    assert "HTTP 404" in result.stdout
    assert "2026-01-01-preview" in result.stdout
    assert "services.ai.azure.com" in result.stdout


@pytest.mark.parametrize("version", ["2026-07-15", "v1", "V1"])
def test_a_ga_api_version_is_refused_as_configuration_before_any_connection(
    emulator: Emulator, version: str
) -> None:
    """api-versions that do not serve /calls exit 2 with the reason, nothing is contacted."""
    before = len(emulator.state()["voicelive_calls"])  # type: ignore[arg-type]
    result = run_command(["check"], voicelive_env(emulator, AZURE_VOICELIVE_API_VERSION=version))
    assert result.returncode == EXIT_INVALID_CONFIGURATION
    assert "AZURE_VOICELIVE_API_VERSION" in result.stderr
    assert "does not serve WebRTC calls" in result.stderr
    assert len(emulator.state()["voicelive_calls"]) == before  # type: ignore[arg-type]


def test_an_unreachable_voice_live_exits_6_with_network_and_region_hints() -> None:
    """A closed port is 'could not be reached', with the endpoint variable and the regions."""
    closed = f"http://127.0.0.1:{free_port()}"
    env = {
        "AZURE_VOICELIVE_ENDPOINT": closed,
        "AZURE_VOICELIVE_KEY": secrets.token_hex(16),
        "VOICELIVE_CONNECT_TIMEOUT_SECONDS": "2",
    }
    result = run_command(["check"], env)
    assert result.returncode == EXIT_UNREACHABLE, result.stdout + result.stderr
    assert "could not be reached" in result.stdout
    assert "AZURE_VOICELIVE_ENDPOINT" in result.stdout
    assert "swedencentral" not in result.stdout
    assert "eastus2" in result.stdout
    assert_no_secret(result.stdout + result.stderr, env["AZURE_VOICELIVE_KEY"])


def test_a_voice_live_failure_does_not_skip_azure_openai(emulator: Emulator) -> None:
    """Each upstream is checked on its own; the exit code is the first failure's."""
    env = {**check_env(emulator), **voicelive_env(emulator)}
    env["AZURE_VOICELIVE_KEY"] = secrets.token_hex(16)
    result = run_command(["check"], env)
    assert result.returncode == EXIT_REFUSED, result.stdout + result.stderr
    assert "OK: minted an ephemeral key" in result.stdout
    assert "result: FAILED on 1 of 2 endpoint(s) (exit 4)" in result.stdout


def test_voice_live_key_vault_mode_reads_the_secret_and_opens_the_channel(
    emulator: Emulator, vault: KeyVaultStandIn, vault_tls: TlsFiles
) -> None:
    """Key Vault mode reads AZURE_VOICELIVE_KEY_SECRET with the identity and opens the channel."""
    version = vault.set_secret("voicelive-api-key", emulator.keys[1])
    with managed_identity_endpoint() as identity:
        identity.token = vault.token
        env = voicelive_env(
            emulator,
            AZURE_VOICELIVE_AUTH="key-vault",
            AZURE_VOICELIVE_KEY="",
            KEY_VAULT_URL=vault.url,
            SSL_CERT_FILE=str(vault_tls.cert),
            **identity.env(),
        )
        result = run_command(["check"], env)
    out = result.stdout
    assert result.returncode == EXIT_OK, out + result.stderr
    assert "credential: key-vault" in out
    assert "secret voicelive-api-key" in out
    assert f"key version {version[:8]} " in out
    assert "OK: control channel opened" in out
    assert_no_secret(out + result.stderr, *emulator.keys, vault.token)


@pytest.mark.parametrize("accepted", [True, False])
def test_voice_live_entra_mode_sends_the_identity_token_or_names_the_roles(
    emulator: Emulator, accepted: bool
) -> None:
    """Keyless mode opens with the identity's token; a refused token names both roles."""
    token = emulator.bearer if accepted else f"entra-{secrets.token_hex(16)}"
    with managed_identity_endpoint() as identity:
        identity.token = token
        env = voicelive_env(
            emulator, AZURE_VOICELIVE_AUTH="entra", AZURE_VOICELIVE_KEY="", **identity.env()
        )
        result = run_command(["check"], env)
    out = result.stdout
    assert "credential: entra" in out
    if accepted:
        assert result.returncode == EXIT_OK, out + result.stderr
        assert "OK: control channel opened" in out
    else:
        assert result.returncode == EXIT_REFUSED, out + result.stderr
        assert "Cognitive Services User" in out
        assert "Foundry User" in out
        assert "https://ai.azure.com/.default" in out
    assert_no_secret(out + result.stderr, token)
