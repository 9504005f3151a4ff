"""The PostgreSQL queue's password: from configuration, or a Microsoft Entra access token.

Azure Database for PostgreSQL accepts an Entra access token (scope
:data:`OSSRDBMS_SCOPE`) as the password of a role mapped to the app's managed identity.
The server checks it only when a connection signs in, so the pool asks
:class:`EntraPassword` for the password each time it opens a connection; the token is
cached and fetched anew ``refresh_margin`` seconds before it expires, every request to
Entra bounded by ``timeout``. Neither source ever logs or shows the value.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog

from engram_voice.credentials.secret import Secret
from engram_voice.memory.settings import PostgresSettings

__all__ = [
    "OSSRDBMS_SCOPE",
    "EntraPassword",
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
        """Return a token valid for at least ``refresh_margin`` more seconds."""
        async with self._lock:
            cached = self._token
            if cached is not None and cached[1] - self._clock() > self._margin:
                return cached[0].reveal()
            async with asyncio.timeout(self._timeout):
                token = await self._credential.get_token(OSSRDBMS_SCOPE)
            self.fetched += 1
            self._token = (Secret(token.token), float(token.expires_on))
            _logger.info("memory.queue_token_refreshed", expires_on=int(token.expires_on))
            return self._token[0].reveal()

    async def aclose(self) -> None:
        """Close the azure-identity credential."""
        await self._credential.close()


def connection_from_settings(settings: PostgresSettings) -> tuple[str, PasswordSource]:
    """Return the libpq connection string (no password) and the password source to use."""
    from psycopg.conninfo import make_conninfo  # noqa: PLC0415 - PostgreSQL mode only

    password: PasswordSource
    if settings.auth == "entra":
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
