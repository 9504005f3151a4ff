"""Where an upstream's (Azure OpenAI, Voice Live) credential comes from: a key or Entra ID.

A :class:`CredentialSource` hands out an :class:`UpstreamCredential` for each mint.
Sources are the seam for key rotation: :meth:`CredentialSource.invalidate` is called
when Azure answers 401 so a source that can refresh (Key Vault) fetches a new version
and the mint is retried once. :meth:`CredentialSource.start` runs once in the lifespan,
before the first request, so a source can fetch its first value and fail fast.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec
import structlog

from engram_voice.credentials.secret import Secret
from engram_voice.errors import CredentialTimeoutError, CredentialUnavailableError

__all__ = [
    "AI_FOUNDRY_SCOPE",
    "COGNITIVE_SERVICES_SCOPE",
    "CredentialSource",
    "EntraTokenSource",
    "NotConfiguredSource",
    "StaticKeySource",
    "UpstreamCredential",
]

COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"
AI_FOUNDRY_SCOPE = "https://ai.azure.com/.default"
"""Entra scope of Azure AI Voice Live (Cognitive Services User + Foundry User roles)."""
_logger = structlog.get_logger("engram_voice.credentials")


class UpstreamCredential(msgspec.Struct, frozen=True):
    """One credential for the upstream: the header to send and what to report about it."""

    header: str
    secret: Secret
    kind: str
    version: str | None = None

    def headers(self) -> dict[str, str]:
        """Return the HTTP header that carries this credential."""
        if self.header == "authorization":
            return {"Authorization": f"Bearer {self.secret.reveal()}"}
        return {self.header: self.secret.reveal()}


class CredentialSource(Protocol):
    """Supplies the upstream credential; implementations never log or expose the value."""

    kind: str

    async def start(self) -> None:
        """Prepare before the first request; raise ConfigurationError to stop start-up."""
        ...

    async def get(self) -> UpstreamCredential:
        """Return a credential usable right now (may refresh, always bounded in time)."""
        ...

    async def invalidate(self, used: UpstreamCredential) -> bool:
        """React to an upstream 401 for ``used``; return True when a different one is ready."""
        ...

    async def check(self) -> None:
        """Raise a domain error when no usable credential can be obtained (readiness)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Return what operators may see about this source (never the secret)."""
        ...

    async def aclose(self) -> None:
        """Release clients the source owns."""
        ...


class StaticKeySource:
    """An upstream API key from configuration; it cannot refresh itself."""

    kind = "api-key"

    def __init__(self, key: Secret) -> None:
        self._credential = UpstreamCredential(header="api-key", secret=key, kind=self.kind)

    async def start(self) -> None:
        """Nothing to prepare: the key was validated with the settings."""

    async def get(self) -> UpstreamCredential:
        """Return the configured key."""
        return self._credential

    async def invalidate(self, used: UpstreamCredential) -> bool:  # noqa: ARG002 - protocol
        """Return False: a configured key has no newer version to switch to."""
        return False

    async def check(self) -> None:
        """Succeed: a configured key is always present (validated at start-up)."""

    def describe(self) -> dict[str, Any]:
        """Describe the source without the key."""
        return {"kind": self.kind, "source": "configuration"}

    async def aclose(self) -> None:
        """Nothing to release."""


class NotConfiguredSource:
    """Stands in for the credential of an upstream this deployment does not configure."""

    kind = "not-configured"

    def __init__(self, upstream: str, setting: str) -> None:
        self._message = f"{upstream} is not configured on this service (set {setting})."
        self._upstream = upstream

    async def start(self) -> None:
        """Nothing to prepare."""

    async def get(self) -> UpstreamCredential:
        """Raise 503: there is no credential for an upstream that is not configured."""
        raise CredentialUnavailableError(self._message)

    async def invalidate(self, used: UpstreamCredential) -> bool:  # noqa: ARG002 - protocol
        """Return False: nothing to refresh."""
        return False

    async def check(self) -> None:
        """Succeed: an upstream that is not configured does not make the service unready."""

    def describe(self) -> dict[str, Any]:
        """Say that the upstream is not configured."""
        return {"kind": self.kind, "upstream": self._upstream}

    async def aclose(self) -> None:
        """Nothing to release."""


TokenProvider = Callable[[], Awaitable[str]]


class EntraTokenSource:
    """Bearer tokens from Microsoft Entra ID, every token call cut off by a timeout.

    ``provider`` is the callable returned by ``azure.identity.aio.get_bearer_token_provider``
    (it caches and refreshes tokens itself); ``closer`` releases the underlying credential.
    """

    kind = "entra"

    def __init__(
        self,
        provider: TokenProvider,
        *,
        timeout: float,
        identity: str,
        closer: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._provider = provider
        self._timeout = timeout
        self._identity = identity
        self._closer = closer
        self._last_error: str | None = None
        self._last_success: float | None = None

    async def start(self) -> None:
        """Nothing to prepare: the first token is requested lazily (readiness reports it)."""

    async def get(self) -> UpstreamCredential:
        """Return a bearer token, or raise 504/503 when Entra ID hangs or fails."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._timeout):
                token = await self._provider()
        except TimeoutError as exc:
            self._last_error = f"token request timed out after {self._timeout:g}s"
            _logger.warning("credentials.entra_token_timeout", timeout_s=self._timeout)
            raise CredentialTimeoutError(
                "Microsoft Entra ID did not issue a token in time; check the managed identity."
            ) from exc
        except Exception as exc:
            self._last_error = type(exc).__name__
            _logger.warning("credentials.entra_token_failed", error=type(exc).__name__)
            raise CredentialUnavailableError(
                "Microsoft Entra ID refused to issue a token; check the managed identity."
            ) from exc
        self._last_error = None
        self._last_success = time.time()
        _logger.debug("credentials.entra_token_ready", latency_ms=_ms(started))
        return UpstreamCredential(header="authorization", secret=Secret(token), kind=self.kind)

    async def invalidate(self, used: UpstreamCredential) -> bool:  # noqa: ARG002 - protocol
        """Return False: the token provider already refreshes tokens before they expire."""
        return False

    async def check(self) -> None:
        """Obtain a token under the timeout, raising the same errors as :meth:`get`."""
        await self.get()

    def describe(self) -> dict[str, Any]:
        """Describe the identity in use and the last token outcome."""
        return {
            "kind": self.kind,
            "identity": self._identity,
            "last_token_at": self._last_success,
            "last_error": self._last_error,
        }

    async def aclose(self) -> None:
        """Close the underlying azure-identity credential."""
        if self._closer is not None:
            await self._closer()


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)
