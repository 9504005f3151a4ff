"""The Key Vault set-up every Key Vault test shares: certificate, stand-in, identity, sources.

``tests/integration/conftest.py`` registers the fixtures; tests ask for them by name:

- ``vault_tls``: one self-signed certificate for the session's vaults;
- ``vault``: an empty HTTPS Key Vault stand-in, stopped after the test (seed it with
  :meth:`~tests.support.keyvault.KeyVaultStandIn.set_secret`);
- ``vault_identity``: a managed identity endpoint issuing the vault's token, with
  ``IDENTITY_ENDPOINT``/``IDENTITY_HEADER``/``AZURE_CLIENT_ID`` set for azure-identity in
  this process (its ``env()`` gives the same to a subprocess);
- ``vault_sources``: a factory of :class:`KeyVaultKeySource` on ``vault`` through the real
  SDK (:func:`stand_in_source`), every one closed after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from azure.core.credentials_async import AsyncTokenCredential

from engram_voice.credentials.keyvault import KeyVaultKeySource
from engram_voice.credentials.vaults import OpenVault, VaultClients, VaultKey
from tests.support.keyvault import FakeVaultCredential, KeyVaultStandIn, TlsFiles, make_certificate
from tests.support.managed_identity import ManagedIdentityEndpoint, managed_identity_endpoint

__all__ = [
    "SourceFactory",
    "fixture_vault",
    "fixture_vault_identity",
    "fixture_vault_sources",
    "fixture_vault_tls",
    "stand_in_source",
    "stand_in_vaults",
]

SourceFactory = Callable[..., KeyVaultKeySource]


def stand_in_source(
    vault: KeyVaultStandIn,
    *,
    secret_name: str,
    timeout: float = 2.0,
    credential: FakeVaultCredential | None = None,
    **options: Any,
) -> KeyVaultKeySource:
    """Return an unstarted source reading ``secret_name`` from ``vault`` with its own client.

    ``options`` are :class:`KeyVaultKeySource`'s (``refresh_seconds`` defaults to 300 s,
    ``identity`` to "test identity"); closing the source closes its client.
    """
    client = vault.client(credential, timeout=timeout)
    settings: dict[str, Any] = {
        "refresh_seconds": 300.0,
        "identity": "test identity",
        "closers": (client.close,),
        **options,
    }
    return KeyVaultKeySource(client, secret_name=secret_name, timeout=timeout, **settings)


def stand_in_vaults(vault: KeyVaultStandIn, credential: FakeVaultCredential) -> VaultClients:
    """Return a vault registry whose clients reach ``vault`` with ``credential``."""

    def connect(key: VaultKey, timeout: float) -> OpenVault:
        assert key.url == vault.url
        return OpenVault(
            client=vault.client(credential, timeout=timeout),
            credential=cast("AsyncTokenCredential", credential),
            identity="test identity",
        )

    return VaultClients(connect)


@pytest.fixture(name="vault_tls", scope="session")
def fixture_vault_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """Make one self-signed certificate for every Key Vault stand-in of the session."""
    return make_certificate(Path(tmp_path_factory.mktemp("vault-tls")))


@pytest.fixture(name="vault")
def fixture_vault(vault_tls: TlsFiles) -> Iterator[KeyVaultStandIn]:
    """Run an empty Key Vault stand-in over HTTPS on loopback for one test."""
    vault = KeyVaultStandIn(vault_tls).start()
    try:
        yield vault
    finally:
        vault.stop()


@pytest.fixture(name="vault_identity")
def fixture_vault_identity(
    vault: KeyVaultStandIn, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ManagedIdentityEndpoint]:
    """Point azure-identity's managed identity at a local endpoint issuing the vault's token."""
    with managed_identity_endpoint() as identity:
        identity.token = vault.token
        for name, value in identity.env().items():
            monkeypatch.setenv(name, value)
        yield identity


@pytest.fixture(name="vault_sources")
async def fixture_vault_sources(vault: KeyVaultStandIn) -> AsyncIterator[SourceFactory]:
    """Return a factory of :func:`stand_in_source` sources on ``vault``; all closed after."""
    sources: list[KeyVaultKeySource] = []

    def make(**options: Any) -> KeyVaultKeySource:
        source = stand_in_source(vault, **options)
        sources.append(source)
        return source

    yield make
    for source in sources:
        await source.aclose()
