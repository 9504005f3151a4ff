"""The identity provider's token signing keys, fetched from its JWKS URL and cached.

The cache is built so that neither a cold start nor an attacker can hammer the identity
provider: concurrent callers share one in-flight fetch, a token naming an unknown key id
triggers a re-fetch at most once per ``min_refetch_seconds``, and after a failed fetch
with an empty cache the next attempt waits a short back-off. When a scheduled refresh
fails, the previous keys stay in use (Entra ID rotates keys with a long overlap).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import msgspec
import structlog

from engram_voice.errors import AuthenticationError, CredentialUnavailableError

__all__ = ["JwksCache"]

_logger = structlog.get_logger("engram_voice.auth")
_COLD_RETRY_SECONDS = 1.0
_MAX_KID_IN_LOGS = 64


class _JwksDocument(msgspec.Struct):
    keys: list[dict[str, Any]]


class _FetchError(Exception):
    """A JWKS fetch failed; the message names why (never a response body)."""


def _unavailable() -> CredentialUnavailableError:
    return CredentialUnavailableError(
        "The identity provider's signing keys could not be fetched, so the token cannot "
        "be checked right now; try again shortly.",
        retry_after=5,
    )


class JwksCache:
    """Signing keys by key id (``kid``) from one JWKS URL, cached and refreshed safely."""

    def __init__(
        self,
        url: str,
        http: httpx.AsyncClient,
        *,
        cache_seconds: float,
        min_refetch_seconds: float,
        timeout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._http = http
        self._cache_seconds = cache_seconds
        self._min_refetch = min_refetch_seconds
        self._cold_retry = min(_COLD_RETRY_SECONDS, min_refetch_seconds)
        self._timeout = timeout_seconds
        self._clock = clock
        self._keys: dict[str, Any] | None = None
        self._fetched_at = -math.inf
        self._attempted_at = -math.inf
        self._attempts = 0
        self._last_ok = False
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str) -> Any:
        """Return the public key for ``kid``; 401 when unknown, 503 when keys are unreachable."""
        now = self._clock()
        since_attempt = now - self._attempted_at
        refreshed: bool | None = None
        if self._keys is None:
            if not self._last_ok and since_attempt < self._cold_retry:
                raise _unavailable()
            refreshed = await self._refresh("initial")
        elif now - self._fetched_at >= self._cache_seconds:
            if since_attempt >= self._min_refetch:
                refreshed = await self._refresh("expired")
        elif kid not in self._keys and since_attempt >= self._min_refetch:
            refreshed = await self._refresh("unknown_kid")
        keys = self._keys
        if keys is None:
            raise _unavailable()
        if kid in keys:
            return keys[kid]
        if refreshed is False:
            raise _unavailable()
        _logger.info("auth.jwks_unknown_kid", kid=kid[:_MAX_KID_IN_LOGS])
        raise AuthenticationError("The token's signing key is not one the identity provider uses.")

    async def _refresh(self, reason: str) -> bool:
        """Fetch the keys once for every caller waiting now; return whether that succeeded."""
        seen = self._attempts
        async with self._lock:
            if self._attempts != seen:
                return self._last_ok
            try:
                keys = await self._fetch()
            except _FetchError as exc:
                self._record(ok=False)
                _logger.warning(
                    "auth.jwks_fetch_failed",
                    reason=reason,
                    error=str(exc),
                    keeping_previous_keys=self._keys is not None,
                )
                return False
            self._keys = keys
            self._fetched_at = self._clock()
            self._record(ok=True)
            _logger.info("auth.jwks_refreshed", reason=reason, key_count=len(keys))
            return True

    def _record(self, *, ok: bool) -> None:
        self._last_ok = ok
        self._attempts += 1
        self._attempted_at = self._clock()

    async def _fetch(self) -> dict[str, Any]:
        timeout = httpx.Timeout(self._timeout, connect=min(3.0, self._timeout))
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._http.get(
                    self._url, timeout=timeout, headers={"Accept": "application/json"}
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            raise _FetchError(f"transport error: {type(exc).__name__}") from exc
        if response.status_code != httpx.codes.OK:
            raise _FetchError(f"status {response.status_code}")
        try:
            document = msgspec.json.decode(response.content, type=_JwksDocument)
        except msgspec.DecodeError as exc:
            raise _FetchError("the answer is not a JWKS document") from exc
        keys: dict[str, Any] = {}
        for jwk in document.keys:
            kid = jwk.get("kid")
            if (
                jwk.get("kty") != "RSA"
                or jwk.get("use", "sig") != "sig"
                or not isinstance(kid, str)
            ):
                continue
            try:
                keys[kid] = jwt.PyJWK(jwk, algorithm="RS256").key
            except (jwt.PyJWTError, ValueError):
                _logger.warning("auth.jwks_key_skipped", kid=kid[:_MAX_KID_IN_LOGS])
        if not keys:
            raise _FetchError("the JWKS holds no usable RSA signing key")
        return keys
