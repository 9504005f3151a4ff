"""The Key Vault key source through the real async SDK against the HTTPS Key Vault stand-in."""

from __future__ import annotations

import asyncio

import pytest

from engram_voice.credentials import Secret, UpstreamCredential
from engram_voice.credentials.keyvault import KeyVaultKeySource
from engram_voice.errors import ConfigurationError, CredentialTimeoutError
from tests.support.keyvault import VAULT_SCOPE, KeyVaultStandIn
from tests.support.keyvault_fixtures import SourceFactory
from tests.support.polling import async_poll_until

NAME = "voicelive-api-key"


@pytest.fixture(autouse=True)
def _key_one(vault: KeyVaultStandIn) -> None:
    """Store one version of the Azure OpenAI key in the test's vault."""
    vault.set_secret(NAME, "key-one-0123456789")


@pytest.fixture(name="make_source")
def fixture_make_source(vault_sources: SourceFactory) -> SourceFactory:
    """Return the shared source factory, reading this module's secret unless told otherwise."""

    def make(**options: object) -> KeyVaultKeySource:
        return vault_sources(**{"secret_name": NAME, **options})

    return make


async def test_start_reads_the_latest_version_through_the_challenge_flow(
    vault: KeyVaultStandIn, make_source: SourceFactory
) -> None:
    """start() answers the vault's bearer challenge and caches the key with its version."""
    credential = vault.credential()
    source = make_source(credential=credential)
    await source.start()
    used = await source.get()
    version = vault.secrets[NAME][-1].version
    assert used.secret == Secret("key-one-0123456789")
    assert used.headers() == {"api-key": "key-one-0123456789"}
    assert used.version == version
    assert vault.challenges == 1
    assert credential.requests == [((VAULT_SCOPE,), vault.tenant_id)]


async def test_describe_shows_the_short_version_and_age_but_never_the_key(
    vault: KeyVaultStandIn, make_source: SourceFactory
) -> None:
    """/status material: kind, vault, secret name, 8-character version, fetch time and age."""
    source = make_source()
    await source.start()
    described = source.describe()
    assert described["kind"] == "key-vault"
    assert described["vault"] == f"127.0.0.1:{vault.port}"
    assert described["secret_name"] == NAME
    assert described["version"] == vault.secrets[NAME][-1].version[:8]
    assert described["fetched_at"] is not None
    assert described["version_created_at"] is not None
    assert 0 <= described["age_seconds"] < 60
    assert described["last_refresh_error"] is None
    assert "key-one-0123456789" not in repr(described)


async def test_a_missing_secret_stops_start_up_naming_vault_secret_and_fix(
    vault: KeyVaultStandIn, make_source: SourceFactory
) -> None:
    """A secret that does not exist fails start() with one message naming where and why."""
    source = make_source(secret_name="no-such-key")
    with pytest.raises(ConfigurationError) as info:
        await source.start()
    message = str(info.value)
    assert f"Key Vault 127.0.0.1:{vault.port}" in message
    assert "'no-such-key'" in message
    assert "404 SecretNotFound" in message
    assert "KEY_VAULT_SECRET_NAME" in message


async def test_a_forbidden_secret_stops_start_up_naming_the_rbac_role(
    vault: KeyVaultStandIn, make_source: SourceFactory
) -> None:
    """A 403 names the identity and the 'Key Vault Secrets User' role to grant."""
    vault.forbidden.add(NAME)
    source = make_source()
    with pytest.raises(ConfigurationError) as info:
        await source.start()
    message = str(info.value)
    assert "403, Forbidden" in message
    assert "'Key Vault Secrets User' role" in message
    assert "test identity" in message
    assert "KEY_VAULT_URL" in message


async def test_an_unreachable_vault_stops_start_up(
    vault: KeyVaultStandIn, make_source: SourceFactory
) -> None:
    """Connection refused at start-up fails fast and points at KEY_VAULT_URL."""
    vault.stop()
    source = make_source()
    with pytest.raises(ConfigurationError) as info:
        await source.start()
    assert "could not be reached" in str(info.value)
    assert "KEY_VAULT_URL" in str(info.value)


async def test_a_hanging_vault_is_cut_off_by_the_timeout(
    vault: KeyVaultStandIn, make_source: SourceFactory
) -> None:
    """A vault that never answers fails start() after the timeout, and get() with 504."""
    vault.mode = "hang"
    source = make_source(timeout=0.3)
    with pytest.raises(ConfigurationError) as info:
        await source.start()
    assert "did not answer within 0.3s" in str(info.value)
    with pytest.raises(CredentialTimeoutError):
        await source.get()


async def test_the_background_refresh_follows_a_new_version(
    vault: KeyVaultStandIn, make_source: SourceFactory
) -> None:
    """With a short interval the source serves a new secret version without being asked."""
    source = make_source(refresh_seconds=0.2)
    await source.start()
    new_version = vault.set_secret(NAME, "key-two-0123456789")
    await async_poll_until(lambda: source.describe()["version"] == new_version[:8])
    assert (await source.get()).secret == Secret("key-two-0123456789")


async def test_concurrent_401s_share_one_key_vault_read(
    vault: KeyVaultStandIn, make_source: SourceFactory
) -> None:
    """Twenty mints refused at once trigger exactly one read, and all retry with the new key."""
    source = make_source()
    await source.start()
    old = await source.get()
    reads_before = vault.reads
    vault.set_secret(NAME, "key-two-0123456789")
    answers = await asyncio.gather(*(source.invalidate(old) for _ in range(20)))
    assert answers == [True] * 20
    assert vault.reads == reads_before + 1
    assert (await source.get()).secret == Secret("key-two-0123456789")


async def test_a_401_for_the_current_key_reads_once_then_gives_up_quickly(
    vault: KeyVaultStandIn, make_source: SourceFactory
) -> None:
    """When Key Vault still holds the refused key, invalidate says False and does not hammer."""
    source = make_source(min_refetch_seconds=60)
    await source.start()
    current = await source.get()
    reads_before = vault.reads
    assert await source.invalidate(current) is False
    assert await source.invalidate(current) is False
    assert vault.reads == reads_before + 1


async def test_a_401_for_an_older_key_needs_no_read(
    vault: KeyVaultStandIn, make_source: SourceFactory
) -> None:
    """A refusal of a key the source already replaced retries at once with the cached one."""
    source = make_source()
    await source.start()
    reads_before = vault.reads
    stale = UpstreamCredential(header="api-key", secret=Secret("old"), kind="key-vault")
    assert await source.invalidate(stale) is True
    assert vault.reads == reads_before


@pytest.mark.parametrize(
    ("outage", "expected"),
    [("stop", "could not be reached"), ("unavailable", "answered 503"), ("hang", "did not answer")],
)
async def test_a_key_vault_outage_keeps_serving_the_cached_key(
    vault: KeyVaultStandIn, make_source: SourceFactory, outage: str, expected: str
) -> None:
    """Refused, 503 or hanging: the last good key keeps serving and the error is described."""
    source = make_source(refresh_seconds=0.2, timeout=0.5)
    await source.start()
    if outage == "stop":
        vault.stop()
    else:
        vault.mode = outage
    await async_poll_until(lambda: expected in (source.describe()["last_refresh_error"] or ""))
    assert (await source.get()).secret == Secret("key-one-0123456789")
    await source.check()
    assert source.describe()["version"] == vault.secrets[NAME][-1].version[:8]
    if outage == "stop":
        vault.start()
    vault.mode = "up"
    await async_poll_until(lambda: source.describe()["last_refresh_error"] is None)


async def test_aclose_stops_the_refresher_and_closes_what_the_source_owns(
    vault: KeyVaultStandIn,
) -> None:
    """aclose() cancels the background task and runs every closer once."""
    closed: list[str] = []
    client = vault.client()

    async def close_client() -> None:
        closed.append("client")
        await client.close()

    async def close_identity() -> None:
        closed.append("identity")

    source = KeyVaultKeySource(
        client,
        secret_name=NAME,
        refresh_seconds=0.2,
        timeout=2,
        identity="test identity",
        closers=(close_client, close_identity),
    )
    await source.start()
    assert any(task.get_name() == "keyvault-refresher" for task in asyncio.all_tasks())
    await source.aclose()
    assert not any(task.get_name() == "keyvault-refresher" for task in asyncio.all_tasks())
    assert closed == ["client", "identity"]
