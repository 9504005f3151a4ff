"""An upstream key read from a Key Vault secret, following its rotation without a restart.

The same source serves the Azure OpenAI key and the Voice Live key (``upstream`` and
``name_setting`` only change the words of its messages).

Operators rotate the key by writing a new version of the secret (``voicelive-api-key`` by
default). :class:`KeyVaultKeySource` fetches the latest version once at start-up (failing
fast with the vault, the secret and the likely cause), re-reads it in the background every
``refresh_seconds``, and re-reads it at once when Azure answers 401 (one read for all
concurrent callers). When Key Vault cannot be reached the last good key keeps serving and
``describe()`` shows its age and the refresh error. Every Key Vault call is bounded by
``timeout``; the key value never reaches a log line or ``describe()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec
import structlog
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.keyvault.secrets.aio import SecretClient

from engram_voice.credentials.secret import Secret
from engram_voice.credentials.sources import UpstreamCredential
from engram_voice.errors import (
    ConfigurationError,
    CredentialTimeoutError,
    CredentialUnavailableError,
)
from engram_voice.netutil import is_loopback_host

__all__ = ["KeyVaultKeySource", "key_vault_client"]

_logger = structlog.get_logger("engram_voice.credentials")
_FORBIDDEN = 403
_RETRY_AFTER_FAILURE_SECONDS = 30.0
_SHORT = 8

Closer = Callable[[], Awaitable[None]]


def key_vault_client(
    vault_url: str,
    credential: AsyncTokenCredential,
    *,
    timeout: float,
    connection_verify: bool | str = True,
) -> SecretClient:
    """Return a SecretClient with bounded socket timeouts and one transport retry.

    The challenge's resource is verified against the vault's domain, except for a vault on
    loopback (a local stand-in), whose certificate and domain cannot be Azure's.
    """
    loopback = is_loopback_host(urlsplit(vault_url).hostname)
    return SecretClient(
        vault_url,
        credential,
        verify_challenge_resource=not loopback,
        connection_verify=connection_verify,
        connection_timeout=timeout,
        read_timeout=timeout,
        retry_total=1,
        retry_backoff_factor=0.2,
    )


class _Cached(msgspec.Struct, frozen=True):
    secret: Secret
    version: str
    fetched_at: float
    created_on: datetime | None


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")


class KeyVaultKeySource:
    """An Azure OpenAI API key kept in a Key Vault secret, refreshed in the background.

    ``client`` is an ``azure.keyvault.secrets.aio.SecretClient``, possibly shared with the
    vault's other readers (production leases it from
    :class:`~engram_voice.credentials.vaults.VaultClients`; tests point one at a local
    HTTPS stand-in); every read passes this source's ``timeout`` to the socket. ``closers``
    release what the source holds (its lease on the client) in :meth:`aclose`; the cache,
    lock, refresher and re-read on 401 are this source's own.
    """

    kind = "key-vault"

    def __init__(
        self,
        client: SecretClient,
        *,
        secret_name: str,
        refresh_seconds: float,
        timeout: float,
        identity: str,
        closers: Sequence[Closer] = (),
        min_refetch_seconds: float = 2.0,
        name_setting: str = "KEY_VAULT_SECRET_NAME",
        upstream: str = "Azure OpenAI",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._name = secret_name
        self._refresh_seconds = refresh_seconds
        self._timeout = timeout
        self._identity = identity
        self._closers = tuple(closers)
        self._name_setting = name_setting
        self._upstream = upstream
        self._min_refetch = min_refetch_seconds
        self._clock = clock
        self._vault = urlsplit(client.vault_url).netloc
        self._cached: _Cached | None = None
        self._lock = asyncio.Lock()
        self._refresher: asyncio.Task[None] | None = None
        self._last_forced: float | None = None
        self._last_refresh_at: float | None = None
        self._last_refresh_error: str | None = None

    async def start(self) -> None:
        """Read the secret once (raising ConfigurationError on failure) and start refreshing."""
        try:
            async with self._lock:
                await self._fetch("start")
        except CredentialUnavailableError as exc:
            _logger.error(  # noqa: TRY400 - the message is the operator's clue; no traceback
                "credentials.keyvault_start_failed",
                vault=self._vault,
                item=self._name,
                reason=exc.detail,
            )
            raise ConfigurationError(exc.detail) from exc
        if self._refresher is None:
            self._refresher = asyncio.create_task(
                self._refresh_forever(), name="keyvault-refresher"
            )

    async def get(self) -> UpstreamCredential:
        """Return the cached key (reading it now only if start-up did not)."""
        cached = self._cached
        if cached is None:
            async with self._lock:
                cached = self._cached or await self._fetch("first_use")
        return self._credential(cached)

    async def invalidate(self, used: UpstreamCredential) -> bool:
        """Re-read the secret after Azure refused ``used``; True when a different key is ready."""
        async with self._lock:
            cached = self._cached
            if cached is not None and cached.secret != used.secret:
                return True
            now = time.monotonic()
            if self._last_forced is not None and now - self._last_forced < self._min_refetch:
                return False
            self._last_forced = now
            try:
                cached = await self._fetch("upstream_401")
            except CredentialUnavailableError:
                return False
            return cached.secret != used.secret

    async def check(self) -> None:
        """Succeed while a key is cached (Key Vault outages do not stop minting); else read it."""
        await self.get()

    def describe(self) -> dict[str, Any]:
        """Describe the vault, the secret's name, the version in use (shortened) and its age."""
        cached = self._cached
        return {
            "kind": self.kind,
            "identity": self._identity,
            "vault": self._vault,
            "secret_name": self._name,
            "version": cached.version[:_SHORT] if cached else None,
            "version_created_at": (
                cached.created_on.isoformat(timespec="seconds")
                if cached and cached.created_on
                else None
            ),
            "fetched_at": _iso(cached.fetched_at) if cached else None,
            "age_seconds": round(self._clock() - cached.fetched_at, 1) if cached else None,
            "refresh_seconds": self._refresh_seconds,
            "last_refresh_at": _iso(self._last_refresh_at),
            "last_refresh_error": self._last_refresh_error,
        }

    async def aclose(self) -> None:
        """Stop the background refresher and release the client (its closers, once)."""
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        closers, self._closers = self._closers, ()
        for close in closers:
            await close()

    def _credential(self, cached: _Cached) -> UpstreamCredential:
        return UpstreamCredential(
            header="api-key", secret=cached.secret, kind=self.kind, version=cached.version
        )

    async def _refresh_forever(self) -> None:
        while True:
            delay = self._refresh_seconds
            if self._last_refresh_error is not None:
                delay = min(delay, _RETRY_AFTER_FAILURE_SECONDS)
            await asyncio.sleep(delay)
            try:
                async with self._lock:
                    await self._fetch("scheduled")
            except CredentialUnavailableError:
                continue  # recorded and logged by _fetch; the cached key keeps serving
            except Exception as exc:  # the refresher must outlive a surprise (logged, in /status)
                self._last_refresh_error = f"refresh failed unexpectedly ({type(exc).__name__})"
                _logger.exception("credentials.keyvault_refresher_error", vault=self._vault)

    async def _fetch(self, reason: str) -> _Cached:
        """Read the latest version under the timeout; the caller holds the lock."""
        started = time.monotonic()
        self._last_refresh_at = self._clock()
        try:
            async with asyncio.timeout(self._timeout):
                bundle = await self._client.get_secret(
                    self._name, connection_timeout=self._timeout, read_timeout=self._timeout
                )
        except (TimeoutError, ServiceRequestTimeoutError, ServiceResponseTimeoutError) as exc:
            raise self._failed(
                reason,
                f"Key Vault {self._vault} did not answer within {self._timeout:g}s when reading "
                f"secret '{self._name}'; check KEY_VAULT_URL and that the network (private "
                "endpoint, firewall) lets this app reach the vault.",
                timed_out=True,
            ) from exc
        except AzureError as exc:
            raise self._failed(reason, self._explain(exc)) from exc
        value = bundle.value
        version = bundle.properties.version
        if not value or not version:
            raise self._failed(
                reason,
                f"Key Vault {self._vault} returned secret '{self._name}' without a value; "
                f"set the {self._upstream} key as its value.",
            )
        previous = self._cached
        cached = _Cached(
            secret=Secret(value),
            version=version,
            fetched_at=self._clock(),
            created_on=bundle.properties.created_on,
        )
        self._cached = cached
        self._last_refresh_error = None
        changed = previous is not None and previous.version != version
        _logger.info(
            "credentials.keyvault_version_changed" if changed else "credentials.keyvault_read",
            vault=self._vault,
            item=self._name,
            version=version[:_SHORT],
            previous_version=previous.version[:_SHORT] if previous else None,
            reason=reason,
            latency_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return cached

    def _failed(
        self, reason: str, detail: str, *, timed_out: bool = False
    ) -> CredentialUnavailableError:
        self._last_refresh_error = detail
        _logger.warning(
            "credentials.keyvault_read_failed",
            vault=self._vault,
            item=self._name,
            reason=reason,
            cause=detail,
            serving_cached_version=self._cached.version[:_SHORT] if self._cached else None,
        )
        error_type = CredentialTimeoutError if timed_out else CredentialUnavailableError
        return error_type(detail)

    def _explain(self, exc: AzureError) -> str:
        where = f"Key Vault {self._vault}, secret '{self._name}'"
        if isinstance(exc, ResourceNotFoundError):
            return (
                f"{where}: not found (404 SecretNotFound). Create the secret or fix "
                f"{self._name_setting}, and check that KEY_VAULT_URL names the right vault."
            )
        if isinstance(exc, ClientAuthenticationError):
            status = f"{exc.status_code} " if exc.status_code else ""
            return (
                f"{where}: could not authenticate ({status}{type(exc).__name__}). Check the "
                f"identity ({self._identity}): AZURE_CLIENT_ID must name a managed identity "
                "assigned to this app, in the vault's tenant."
            )
        if isinstance(exc, HttpResponseError) and exc.status_code == _FORBIDDEN:
            code = f", {exc.error.code}" if exc.error and exc.error.code else ""
            return (
                f"{where}: access denied (403{code}). Grant the identity ({self._identity}) "
                "the 'Key Vault Secrets User' role on the vault (or a 'get' secret access "
                "policy), check that the secret is enabled and that KEY_VAULT_URL names the "
                "vault you granted."
            )
        if isinstance(exc, HttpResponseError):
            return f"{where}: Key Vault answered {exc.status_code} ({type(exc).__name__})."
        if isinstance(exc, ServiceRequestError | ServiceResponseError):
            return (
                f"{where}: the vault could not be reached ({type(exc).__name__}). Check "
                "KEY_VAULT_URL (https://<name>.vault.azure.net) and the network path."
            )
        return f"{where}: reading the secret failed ({type(exc).__name__})."
