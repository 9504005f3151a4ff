"""Secrets read from one vault share one Key Vault client and identity, yet live apart.

The Azure OpenAI key, the Voice Live key and the PostgreSQL password are built by the
production builders (``build_credential_source``, ``build_voicelive_credential_source``,
``connection_from_settings``) from one configuration with all three in key-vault mode, and
read from the HTTPS Key Vault stand-in through the real SDK with a real azure-identity
``ManagedIdentityCredential`` (the managed identity stand-in counts its token requests).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import pytest

from engram_voice.credentials import CredentialSource
from engram_voice.credentials.factory import (
    CredentialSpec,
    build_credential_source,
    build_source,
    build_voicelive_credential_source,
)
from engram_voice.credentials.vaults import VaultClients, shared_vaults
from engram_voice.errors import ConfigurationError, CredentialUnavailableError
from engram_voice.memory.postgres_auth import KeyVaultPassword, connection_from_settings
from engram_voice.memory.queue import QueueUnavailableError
from engram_voice.settings import Settings
from tests.support.keyvault import KeyVaultStandIn, TlsFiles
from tests.support.keyvault_fixtures import stand_in_vaults
from tests.support.managed_identity import ManagedIdentityEndpoint

SECRETS = {
    "openai": "openai-api-key",
    "voicelive": "voicelive-api-key",
    "postgres": "postgres-password",
}
READERS = tuple(SECRETS)
CLIENT_ID = "11111111-2222-3333-4444-555555555555"  # what vault_identity's env names
SUBSETS = [
    frozenset(c) for n in range(1, len(READERS) + 1) for c in itertools.combinations(READERS, n)
]


@dataclass
class Reader:
    """One secret's reader, with the two things every kind of reader does."""

    name: str
    close: Callable[[], Awaitable[None]]
    value: Callable[[], Awaitable[str | None]]
    reread: Callable[[], Awaitable[object]]


def _key_reader(name: str, source: CredentialSource) -> Reader:
    async def value() -> str:
        return (await source.get()).secret.reveal()

    async def reread() -> bool:
        return await source.invalidate(await source.get())

    return Reader(name, source.aclose, value, reread)


def _password_reader(password: KeyVaultPassword) -> Reader:
    return Reader("postgres", password.aclose, password.password, password.refused)


def settings_for(vault: KeyVaultStandIn, identity: ManagedIdentityEndpoint) -> Settings:
    """Return one configuration with all three secrets in key-vault mode on ``vault``."""
    return Settings.from_env(
        {
            "MEMORY_TOKEN_KEYS": "k1:" + "a" * 40,
            "AUTH_MODE": "none",
            "AZURE_OPENAI_ENDPOINTS": "https://engram.openai.azure.com",
            "AZURE_OPENAI_AUTH": "key-vault",
            "KEY_VAULT_SECRET_NAME": SECRETS["openai"],
            "AZURE_VOICELIVE_ENDPOINT": "https://engram.services.ai.azure.com",
            "AZURE_VOICELIVE_AUTH": "key-vault",
            "AZURE_VOICELIVE_KEY_SECRET": SECRETS["voicelive"],
            "MEMORY_QUEUE": "postgres",
            "MEMORY_POSTGRES_HOST": "db.example",
            "MEMORY_POSTGRES_USER": "engram",
            "MEMORY_POSTGRES_AUTH": "key-vault",
            "MEMORY_POSTGRES_PASSWORD_SECRET": SECRETS["postgres"],
            "KEY_VAULT_URL": vault.url,
            "AZURE_CLIENT_ID": identity.env()["AZURE_CLIENT_ID"],
        }
    )


class OpenReaders(Protocol):
    """Builds the named readers and (unless ``start`` is False) reads each secret once."""

    def __call__(
        self, names: frozenset[str], *, start: bool = True
    ) -> Awaitable[dict[str, Reader]]:
        """Return the readers by name."""
        ...


@pytest.fixture(name="open_readers")
async def fixture_open_readers(
    vault: KeyVaultStandIn, vault_tls: TlsFiles, vault_identity: ManagedIdentityEndpoint
) -> AsyncIterator[OpenReaders]:
    """Return a function building and starting the named readers; all closed after the test."""
    for name, secret in SECRETS.items():
        vault.set_secret(secret, f"{name}-one-0123456789")
    settings = settings_for(vault, vault_identity)
    verify = str(vault_tls.cert)
    opened: list[Reader] = []

    async def open_readers(names: frozenset[str], *, start: bool = True) -> dict[str, Reader]:
        readers: dict[str, Reader] = {}
        if "openai" in names:
            source = build_credential_source(settings.realtime, connection_verify=verify)
            readers["openai"] = _key_reader("openai", source)
        if "voicelive" in names:
            assert settings.realtime.voicelive is not None
            live = build_voicelive_credential_source(
                settings.realtime.voicelive, connection_verify=verify
            )
            readers["voicelive"] = _key_reader("voicelive", live)
        if "postgres" in names:
            assert settings.memory.postgres is not None
            _, password = connection_from_settings(
                settings.memory.postgres, connection_verify=verify
            )
            assert isinstance(password, KeyVaultPassword)
            readers["postgres"] = _password_reader(password)
        opened.extend(readers.values())
        for reader in readers.values() if start else ():  # one by one, as the lifespan does
            assert await reader.value() == f"{reader.name}-one-0123456789"
        return readers

    yield open_readers
    for reader in opened:
        await reader.close()
    assert len(shared_vaults) == 0, "the last reader closed the vault's client"


@pytest.mark.parametrize("names", SUBSETS, ids=lambda s: "+".join(sorted(s)))
async def test_readers_of_one_vault_ask_for_one_token_and_answer_one_challenge(
    names: frozenset[str],
    open_readers: OpenReaders,
    vault: KeyVaultStandIn,
    vault_identity: ManagedIdentityEndpoint,
) -> None:
    """Any mix of the three key-vault readers fetches one identity token and opens one client."""
    readers = await open_readers(names)
    for reader in readers.values():
        await reader.reread()  # a second read each: still no new token, no new challenge
    assert len(vault_identity.requests) == 1
    assert vault.challenges == 1
    assert vault.reads == 2 * len(names)
    assert len(shared_vaults) == 1


@pytest.mark.parametrize("rotated", READERS)
async def test_each_secret_rotates_on_its_own(
    rotated: str, open_readers: OpenReaders, vault: KeyVaultStandIn
) -> None:
    """A new version of one secret reaches its reader; the other readers keep their values."""
    readers = await open_readers(frozenset(READERS))
    vault.set_secret(SECRETS[rotated], f"{rotated}-two-0123456789")
    for reader in readers.values():
        await reader.reread()
    for name, reader in readers.items():
        expected = "two" if name == rotated else "one"
        assert await reader.value() == f"{name}-{expected}-0123456789"


@pytest.mark.parametrize("fault", ["forbidden", "deleted"])
@pytest.mark.parametrize("failing", READERS)
async def test_a_secret_that_cannot_be_read_leaves_the_others_rotating(
    failing: str, fault: str, open_readers: OpenReaders, vault: KeyVaultStandIn
) -> None:
    """One secret refused or gone: its reader serves its last value, the others rotate on."""
    readers = await open_readers(frozenset(READERS))
    if fault == "forbidden":
        vault.forbidden.add(SECRETS[failing])
    else:
        del vault.secrets[SECRETS[failing]]
    for name in READERS:
        if name != failing:
            vault.set_secret(SECRETS[name], f"{name}-two-0123456789")
    for reader in readers.values():
        await reader.reread()
    for name, reader in readers.items():
        expected = "one" if name == failing else "two"
        assert await reader.value() == f"{name}-{expected}-0123456789"


@pytest.mark.parametrize("failing", READERS)
async def test_a_reader_that_fails_to_start_and_closes_leaves_the_client_open(
    failing: str, open_readers: OpenReaders, vault: KeyVaultStandIn
) -> None:
    """A missing secret fails its own reader, whose close does not close the others' client."""
    others = frozenset(READERS) - {failing}
    readers = await open_readers(others)
    del vault.secrets[SECRETS[failing]]
    broken = (await open_readers(frozenset({failing}), start=False))[failing]
    with pytest.raises((CredentialUnavailableError, QueueUnavailableError)):
        await broken.value()
    await broken.close()
    for name in others:
        vault.set_secret(SECRETS[name], f"{name}-two-0123456789")
    for name, reader in readers.items():
        await reader.reread()
        assert await reader.value() == f"{name}-two-0123456789"
    assert len(shared_vaults) == 1


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
async def test_the_shared_client_and_identity_close_once_after_the_last_release(
    order: tuple[int, ...], vault: KeyVaultStandIn
) -> None:
    """In any release order, and released twice, the vault's identity closes once, at the end."""
    credential = vault.credential()
    vaults = stand_in_vaults(vault, credential)
    leases = [vaults.lease(vault.url, client_id=None, timeout=2.0) for _ in order]
    assert len({id(lease.client) for lease in leases}) == 1
    for count, index in enumerate(order, start=1):
        await leases[index].release()
        await leases[index].release()
        assert credential.closed == (1 if count == len(order) else 0)
    assert len(vaults) == 0
    again = vaults.lease(vault.url, client_id=None, timeout=2.0)
    assert again.client is not leases[0].client  # a closed client is never lent again
    await again.release()
    assert credential.closed == 2


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"client_id": "a"}, {"client_id": "b"}),
        ({"client_id": None}, {"client_id": "a"}),
        ({"connection_verify": True}, {"connection_verify": "/ca.pem"}),
    ],
)
async def test_another_identity_or_trust_gets_its_own_client(
    first: dict[str, object], second: dict[str, object], vault: KeyVaultStandIn
) -> None:
    """Readers share a client only when vault, identity and TLS trust are all the same."""
    vaults = stand_in_vaults(vault, vault.credential())
    base: dict[str, object] = {"client_id": None, "timeout": 2.0}
    one = vaults.lease(vault.url, **{**base, **first})  # type: ignore[arg-type]
    two = vaults.lease(vault.url + "/", **{**base, **second})  # type: ignore[arg-type]
    same = vaults.lease(vault.url, **{**base, **first})  # type: ignore[arg-type]
    assert one.client is same.client
    assert one.client is not two.client
    assert len(vaults) == 2
    for lease in (one, two, same):
        await lease.release()
    assert len(vaults) == 0


def _spec(name: str, timeout: float, vault: KeyVaultStandIn) -> CredentialSpec:
    """Return a key-vault spec reading ``name`` with its own ``timeout``."""
    return CredentialSpec(
        upstream=name,
        auth="key-vault",
        api_key=None,
        api_key_setting="UNUSED",
        client_id=CLIENT_ID,
        key_vault_url=vault.url,
        secret_name=SECRETS[name],
        name_setting="UNUSED",
        refresh_seconds=300.0,
        timeout=timeout,
        scope="https://vault.azure.net/.default",
    )


@pytest.mark.parametrize("patient_first", [True, False], ids=["patient-first", "hasty-first"])
async def test_each_reader_keeps_its_own_timeout_on_the_shared_client(
    patient_first: bool,
    vault: KeyVaultStandIn,
    vault_tls: TlsFiles,
    vault_identity: ManagedIdentityEndpoint,
) -> None:
    """A vault answering in 1 s fails the reader bounded at 0.3 s, never the one given 10 s."""
    for name, secret in SECRETS.items():
        vault.set_secret(secret, f"{name}-one-0123456789")
    vaults = VaultClients()
    specs = {"patient": _spec("openai", 10.0, vault), "hasty": _spec("postgres", 0.3, vault)}
    order = ["patient", "hasty"] if patient_first else ["hasty", "patient"]
    built = {  # the first lease opens the client (with that reader's socket timeout)
        role: build_source(specs[role], connection_verify=str(vault_tls.cert), vaults=vaults)
        for role in order
    }
    patient, hasty = built["patient"], built["hasty"]
    try:
        await patient.start()  # the token and the challenge, before the vault slows down
        vault.delay = 1.0
        assert await patient.invalidate(await patient.get()) is False  # read, same version
        assert patient.describe()["last_refresh_error"] is None
        with pytest.raises(ConfigurationError, match=r"did not answer within 0\.3s"):
            await hasty.start()
    finally:
        vault.delay = 0.0
        await patient.aclose()
        await hasty.aclose()
    assert len(vaults) == 0
    assert vault_identity.requests
