"""One Key Vault client and one identity credential per vault, shared by its secret readers.

With ``AZURE_OPENAI_AUTH``, ``AZURE_VOICELIVE_AUTH`` and ``MEMORY_POSTGRES_AUTH`` all
``key-vault`` the service reads three secrets from one vault. :class:`VaultClients` lends
every reader a :class:`VaultLease` on the same ``SecretClient`` (one HTTP pipeline, one
bearer challenge) and the same azure-identity credential (one token), and closes both,
exactly once, when the last lease is released (the last reader's ``aclose`` at shutdown).
Each reader (a :class:`~engram_voice.credentials.keyvault.KeyVaultKeySource`) keeps its
own cache, lock, refresh task and re-read on 401, so a secret that cannot be read or is
rotated does not touch the others.

A vault is shared by the readers that name the same vault URL, identity
(``AZURE_CLIENT_ID``) and TLS trust within one event loop: a client's connections belong
to the loop that opened them, so another loop (a test's, a second app's) gets its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import structlog

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential
    from azure.keyvault.secrets.aio import SecretClient

__all__ = ["VaultClients", "VaultKey", "VaultLease", "azure_identity", "open_vault"]

_logger = structlog.get_logger("engram_voice.credentials")

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


def azure_identity(
    client_id: str | None, *, production_only: bool
) -> tuple[ManagedIdentityCredential | DefaultAzureCredential, str]:
    """Return the azure-identity credential to use and how ``describe()`` names it."""
    from azure.identity.aio import (  # noqa: PLC0415 - only identity modes pay for the import
        DefaultAzureCredential,
        ManagedIdentityCredential,
    )

    if client_id:
        return ManagedIdentityCredential(client_id=client_id), f"managed identity {client_id}"
    if production_only:
        return (
            DefaultAzureCredential(**_DEVELOPER_CREDENTIALS_OFF),
            "DefaultAzureCredential (production credentials)",
        )
    return DefaultAzureCredential(), "DefaultAzureCredential"


@dataclass(frozen=True)
class VaultKey:
    """What makes two readers share a vault client: the vault, the identity, the trust."""

    url: str
    client_id: str | None
    connection_verify: bool | str


@dataclass(frozen=True)
class OpenVault:
    """A vault's client, the identity credential it authenticates with, and its name."""

    client: SecretClient
    credential: AsyncTokenCredential
    identity: str


Connect = Callable[[VaultKey, float], OpenVault]


def open_vault(key: VaultKey, timeout: float) -> OpenVault:
    """Build the production client of ``key``'s vault with the production identity."""
    from engram_voice.credentials.keyvault import key_vault_client  # noqa: PLC0415

    credential, identity = azure_identity(key.client_id, production_only=True)
    client = key_vault_client(
        key.url, credential, timeout=timeout, connection_verify=key.connection_verify
    )
    return OpenVault(client=client, credential=credential, identity=identity)


class VaultLease:
    """One reader's use of a shared vault client; :meth:`release` it once when done."""

    def __init__(self, owner: VaultClients, slot: tuple[VaultKey, int], vault: OpenVault) -> None:
        self._owner = owner
        self._slot = slot
        self._released = False
        self.client = vault.client
        """The shared ``SecretClient`` (never closed by the reader itself)."""
        self.identity = vault.identity
        """How the shared identity is named in messages and ``describe()``."""

    async def release(self) -> None:
        """Give the client back; the last lease closes the client and the credential."""
        if self._released:
            return
        self._released = True
        await self._owner.release(self._slot)


@dataclass
class _Shared:
    vault: OpenVault
    leases: int


class VaultClients:
    """Lends one client and identity per vault to every reader, closing them once at the end.

    ``connect`` builds a vault's client and credential (production: :func:`open_vault`;
    tests pass one that points at a local stand-in).
    """

    def __init__(self, connect: Connect = open_vault) -> None:
        self._connect = connect
        self._open: dict[tuple[VaultKey, int], _Shared] = {}

    def __len__(self) -> int:
        """Return how many vault clients are open (leased at least once, not yet closed)."""
        return len(self._open)

    def lease(
        self,
        url: str,
        *,
        client_id: str | None,
        timeout: float,
        connection_verify: bool | str = True,
    ) -> VaultLease:
        """Lend the client of ``url`` for this identity, opening it on the first lease.

        ``timeout`` bounds the socket of a client opened here; every read passes its own.
        """
        key = VaultKey(url.rstrip("/"), client_id or None, connection_verify)
        slot = (key, _loop_id())
        shared = self._open.get(slot)
        if shared is None:
            shared = _Shared(self._connect(key, timeout), 0)
            self._open[slot] = shared
            _logger.info(
                "credentials.keyvault_client_opened",
                vault=urlsplit(key.url).netloc,
                identity=shared.vault.identity,
            )
        shared.leases += 1
        return VaultLease(self, slot, shared.vault)

    async def release(self, slot: tuple[VaultKey, int]) -> None:
        """Count one lease of ``slot`` back; close its client and credential after the last."""
        shared = self._open.get(slot)
        if shared is None:
            return
        shared.leases -= 1
        if shared.leases > 0:
            return
        del self._open[slot]  # a lease taken while closing opens a fresh client
        try:
            await shared.vault.client.close()
        finally:
            await shared.vault.credential.close()
        _logger.info("credentials.keyvault_client_closed", vault=urlsplit(slot[0].url).netloc)


def _loop_id() -> int:
    """Return the running event loop's id (0 outside one): a client serves one loop."""
    try:
        return id(asyncio.get_running_loop())
    except RuntimeError:
        return 0


shared_vaults = VaultClients()
"""The process's vault clients: every Key Vault reader the factory builds leases here."""
