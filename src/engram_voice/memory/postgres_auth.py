"""The PostgreSQL queue's password: configuration, a Key Vault secret, or an Entra token.

Azure Database for PostgreSQL accepts an Entra access token (scope
:data:`OSSRDBMS_SCOPE`) as the password of a role mapped to the app's managed identity.
The server checks it only when a connection signs in, so the pool asks
:class:`EntraPassword` for the password each time it opens a connection; the token is
cached and fetched anew ``refresh_margin`` seconds before it expires, every request to
Entra bounded by ``timeout``. :class:`KeyVaultPassword` reads the password from a Key
Vault secret the way the Azure OpenAI key is read (a
:class:`~engram_voice.credentials.keyvault.KeyVaultKeySource` on the vault's shared client
and identity: the latest version, re-read in the background every
``KEY_VAULT_REFRESH_SECONDS``), so a rotated password (a new
version of the secret) is used by the next connection without a restart. No source ever
logs or shows the value.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from engram_voice.credentials.secret import Secret
from engram_voice.credentials.sources import CredentialSource
from engram_voice.errors import AppError, ConfigurationError
from engram_voice.memory.queue import QueueUnavailableError
from engram_voice.memory.settings import PostgresSettings

__all__ = [
    "OSSRDBMS_SCOPE",
    "EntraPassword",
    "KeyVaultPassword",
    "PasswordSource",
    "StaticPassword",
    "TokenCredential",
    "connection_from_settings",
]

OSSRDBMS_SCOPE = "https://ossrdbms-aad.database.windows.net/.default"
_logger = structlog.get_logger("engram_voice.memory.queue")


class PasswordSource(Protocol):
    """Returns the password for the next connection (None: no password)."""

    kind: str

    async def password(self) -> str | None:
        """Return the password to sign in with now."""
        ...

    async def aclose(self) -> None:
        """Release what the source holds."""
        ...

    async def refused(self) -> None:
        """Hear that connections could not be made: fetch the password anew (rate-limited)."""
        ...


class TokenCredential(Protocol):
    """The part of ``azure.identity.aio`` credentials used here."""

    def get_token(self, *scopes: str, **kwargs: Any) -> Awaitable[Any]:
        """Return an ``AccessToken`` (``token``, ``expires_on``) for ``scopes``."""
        ...

    async def close(self) -> None:
        """Release the credential's transport."""
        ...


class StaticPassword:
    """A password from configuration (a Key Vault reference in Azure), or none."""

    kind = "password"

    def __init__(self, secret: Secret | None) -> None:
        self._secret = secret

    async def password(self) -> str | None:
        """Return the configured password."""
        return self._secret.reveal() if self._secret else None

    async def aclose(self) -> None:
        """Nothing to release."""

    async def refused(self) -> None:
        """Do nothing: a configured password cannot be fetched anew."""


class EntraPassword:
    """An Entra access token for Azure Database for PostgreSQL, refreshed before it expires."""

    kind = "entra"

    def __init__(
        self,
        credential: TokenCredential,
        *,
        timeout: float = 10.0,
        refresh_margin: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._credential = credential
        self._timeout = timeout
        self._margin = refresh_margin
        self._clock = clock
        self._token: tuple[Secret, float] | None = None
        self._lock = asyncio.Lock()
        self.fetched = 0
        """How many tokens were requested from Entra (for tests and status)."""

    async def password(self) -> str | None:
        """Return a token valid for at least ``refresh_margin`` more seconds.

        A token that cannot be had (no answer within ``timeout``, the identity endpoint
        or Entra failing) is :class:`QueueUnavailableError` with a neutral reason, which
        the background connect retries.
        """
        async with self._lock:
            cached = self._token
            if cached is not None and cached[1] - self._clock() > self._margin:
                return cached[0].reveal()
            try:
                async with asyncio.timeout(self._timeout):
                    token = await self._credential.get_token(OSSRDBMS_SCOPE)
            except Exception as exc:
                # Retryable (the queue keeps connecting); the type only, never the message.
                why = "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
                raise QueueUnavailableError(f"database token unavailable: {why}") from exc
            self.fetched += 1
            self._token = (Secret(token.token), float(token.expires_on))
            _logger.info("memory.queue_token_refreshed", expires_on=int(token.expires_on))
            return self._token[0].reveal()

    async def aclose(self) -> None:
        """Close the azure-identity credential."""
        await self._credential.close()

    async def refused(self) -> None:
        """Do nothing: the cached token serves until its refresh margin."""


class KeyVaultPassword:
    """The password as the latest version of a Key Vault secret, refreshed in the background.

    ``source`` is a Key Vault credential source (its value is the password). It is started
    on the first connection, so a vault that cannot be read does not stop start-up: the
    queue keeps trying to connect and ``/status`` shows why. After connections fail,
    :meth:`refused` re-reads the secret at most every ``refetch_seconds``, so a password
    rotated on the server and in the vault is picked up before the next scheduled read.
    """

    kind = "key-vault"

    def __init__(
        self,
        source: CredentialSource,
        *,
        refetch_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._refetch = refetch_seconds
        self._clock = clock
        self._started = False
        self._lock = asyncio.Lock()
        self._last_refetch: float | None = None

    def describe(self) -> dict[str, Any]:
        """Describe the secret in use (vault, name, version, age; never the value)."""
        return self._source.describe()

    async def password(self) -> str | None:
        """Return the cached latest version (reading it, and starting the refresher, once)."""
        try:
            if not self._started:
                async with self._lock:
                    if not self._started:
                        await self._source.start()
                        self._started = True
            credential = await self._source.get()
        except (AppError, ConfigurationError) as exc:  # the vault's reason, never a value
            detail = exc.detail if isinstance(exc, AppError) else str(exc)
            raise QueueUnavailableError(f"database password unavailable: {detail}") from exc
        return credential.secret.reveal()

    async def refused(self) -> None:
        """Re-read the secret now unless that was done within ``refetch_seconds``."""
        now = self._clock()
        if not self._started or (
            self._last_refetch is not None and now - self._last_refetch < self._refetch
        ):
            return
        self._last_refetch = now
        try:
            await self._source.invalidate(await self._source.get())
        except AppError as exc:  # the last good version keeps serving
            _logger.warning("memory.queue_password_refetch_failed", reason=exc.detail)

    async def aclose(self) -> None:
        """Stop the refresher and release the vault's client (closed by its last reader)."""
        await self._source.aclose()


def connection_from_settings(
    settings: PostgresSettings, *, connection_verify: bool | str = True
) -> tuple[str, PasswordSource]:
    """Return the libpq connection string (no password) and the password source to use.

    In key-vault mode the password's reader shares the vault's client and identity with
    every other secret read from that vault; ``connection_verify`` is its TLS trust (a CA
    file for a local vault).
    """
    from psycopg.conninfo import make_conninfo  # noqa: PLC0415 - PostgreSQL mode only

    password: PasswordSource
    if settings.auth == "key-vault":
        from engram_voice.credentials.factory import (  # noqa: PLC0415 - Key Vault mode only
            CredentialSpec,
            build_source,
        )

        password = KeyVaultPassword(
            build_source(
                CredentialSpec(
                    upstream="PostgreSQL",
                    auth="key-vault",
                    api_key=None,
                    api_key_setting="MEMORY_POSTGRES_PASSWORD",
                    client_id=settings.client_id,
                    key_vault_url=settings.key_vault_url,
                    secret_name=settings.password_secret,
                    name_setting="MEMORY_POSTGRES_PASSWORD_SECRET",
                    refresh_seconds=settings.key_vault_refresh_seconds,
                    timeout=settings.connect_timeout_seconds,
                    scope=OSSRDBMS_SCOPE,  # unused: the secret is read with the vault's scope
                ),
                connection_verify=connection_verify,
            )
        )
    elif settings.auth == "entra":
        from azure.identity.aio import (  # noqa: PLC0415 - Entra mode only
            DefaultAzureCredential,
            ManagedIdentityCredential,
        )

        credential = (
            ManagedIdentityCredential(client_id=settings.client_id)
            if settings.client_id
            else DefaultAzureCredential()
        )
        password = EntraPassword(credential, timeout=settings.connect_timeout_seconds)
    else:
        password = StaticPassword(settings.password)
    conninfo = make_conninfo(
        host=settings.host,
        port=settings.port,
        dbname=settings.database,
        user=settings.user,
        sslmode=settings.sslmode,
    )
    return conninfo, password
