"""Mint ephemeral keys with Azure's GA ``client_secrets`` call, failing over across endpoints.

One long-lived aiohttp session (explicit connect and total timeouts) serves every mint.
Connect errors, timeouts, 408, 429 and 5xx move on to the next endpoint; 401/403 mean
our credential is wrong (one refresh-and-retry through the credential source, then
``upstream_auth``); 400/404 mean our request is wrong (``upstream_rejected``). An
upstream body is parsed for its error ``code`` only and never passed on.
"""

from __future__ import annotations

import math
import time
from typing import Any

import aiohttp
import msgspec
import structlog

from engram_voice.credentials import CredentialSource, UpstreamCredential
from engram_voice.errors import (
    AppError,
    UpstreamAuthError,
    UpstreamRejectedError,
    UpstreamThrottledError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from engram_voice.httppolicy import is_transient, parse_retry_after
from engram_voice.realtime.endpoints import Endpoint, EndpointPool

__all__ = ["MintedKey", "UpstreamMinter"]

_logger = structlog.get_logger("engram_voice.realtime.upstream")
_AUTH_STATUSES = frozenset({401, 403})


class MintedKey(msgspec.Struct, frozen=True):
    """An ephemeral key as Azure returned it, plus the endpoint that minted it."""

    value: str
    expires_at: int
    session: dict[str, Any]
    endpoint: Endpoint

    def __repr__(self) -> str:
        return f"MintedKey(endpoint={self.endpoint.host!r}, expires_at={self.expires_at})"


class _ClientSecretAnswer(msgspec.Struct):
    value: str
    expires_at: int
    session: dict[str, Any] = msgspec.field(default_factory=dict)


class _ErrorDetail(msgspec.Struct):
    code: str | None = None
    type: str | None = None


class _ErrorAnswer(msgspec.Struct):
    error: _ErrorDetail | None = None


class _Attempt(Exception):  # noqa: N818 - internal signal, never escapes this module
    """One endpoint failed in a way that allows trying the next."""

    def __init__(self, outcome: str, error: AppError) -> None:
        super().__init__(outcome)
        self.outcome = outcome
        self.error = error


def _retry_after(headers: Any) -> int | None:
    seconds = parse_retry_after(headers.get("Retry-After"), now=time.time())
    return None if seconds is None else max(1, math.ceil(seconds))


def _upstream_code(body: bytes) -> str | None:
    try:
        error = msgspec.json.decode(body, type=_ErrorAnswer).error
    except msgspec.DecodeError:
        return None
    return (error.code or error.type) if error else None


class UpstreamMinter:
    """Mints ephemeral keys against the configured endpoints in priority order."""

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        credentials: CredentialSource,
        pool: EndpointPool,
        request_timeout: float,
        connect_timeout: float,
        deadline: float,
    ) -> None:
        self._session = session
        self._credentials = credentials
        self._pool = pool
        self._request_timeout = request_timeout
        self._connect_timeout = connect_timeout
        self._deadline = deadline

    async def mint(self, payload: dict[str, Any]) -> MintedKey:
        """Mint one ephemeral key for ``payload`` (the GA client_secrets body)."""
        body = msgspec.json.encode(payload)
        credential = await self._credentials.get()
        deadline = time.monotonic() + self._deadline
        failures: list[_Attempt] = []
        for endpoint in self._pool.candidates():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                return await self._mint_at(endpoint, body, credential, remaining)
            except _Attempt as attempt:
                self._pool.record_failure(endpoint, attempt.outcome)
                _logger.warning(
                    "realtime.endpoint_failed", endpoint=endpoint.host, outcome=attempt.outcome
                )
                failures.append(attempt)
        raise self._summarise(failures)

    async def _mint_at(
        self, endpoint: Endpoint, body: bytes, credential: UpstreamCredential, budget: float
    ) -> MintedKey:
        started = time.monotonic()
        status, headers, answer = await self._post(endpoint, body, credential, budget)
        if status in _AUTH_STATUSES and await self._credentials.invalidate(credential):
            _logger.info("realtime.credential_refreshed_after_401", endpoint=endpoint.host)
            credential = await self._credentials.get()
            remaining = budget - (time.monotonic() - started)
            status, headers, answer = await self._post(endpoint, body, credential, remaining)
        latency_ms = round((time.monotonic() - started) * 1000, 1)
        if status == 200:  # noqa: PLR2004 - Azure's one success status for client_secrets
            try:
                parsed = msgspec.json.decode(answer, type=_ClientSecretAnswer)
            except msgspec.DecodeError as exc:
                raise _Attempt(
                    "bad_answer",
                    UpstreamUnavailableError("Azure answered with an unreadable body."),
                ) from exc
            self._pool.record_success(endpoint, latency_ms)
            return MintedKey(
                value=parsed.value,
                expires_at=parsed.expires_at,
                session=parsed.session,
                endpoint=endpoint,
            )
        code = _upstream_code(answer)
        _logger.warning(
            "realtime.upstream_error",
            endpoint=endpoint.host,
            status=status,
            upstream_code=code,
            latency_ms=latency_ms,
        )
        if status in _AUTH_STATUSES:
            self._pool.record_failure(endpoint, f"http_{status}")
            raise UpstreamAuthError(
                f"Azure OpenAI at {endpoint.host} refused the service credential "
                f"({status}{', ' + code if code else ''}); check the key or the identity's role.",
            )
        if status == 429:  # noqa: PLR2004
            raise _Attempt(
                "throttled",
                UpstreamThrottledError(
                    "Azure OpenAI is throttling; try again shortly.",
                    retry_after=_retry_after(headers) or 1,
                ),
            )
        if is_transient(status):
            raise _Attempt(
                f"http_{status}",
                UpstreamUnavailableError(f"Azure OpenAI failed ({status}).", retry_after=1),
            )
        self._pool.record_failure(endpoint, f"http_{status}")
        raise UpstreamRejectedError(
            f"Azure OpenAI at {endpoint.host} rejected the session request "
            f"({status}{', ' + code if code else ''}); check the deployment name and region.",
        )

    async def _post(
        self, endpoint: Endpoint, body: bytes, credential: UpstreamCredential, budget: float
    ) -> tuple[int, Any, bytes]:
        if budget <= 0:  # aiohttp reads a non-positive timeout as "no timeout at all"
            raise _Attempt("timeout", UpstreamTimeoutError("Azure OpenAI did not answer in time."))
        timeout = aiohttp.ClientTimeout(
            total=min(self._request_timeout, budget),
            sock_connect=min(self._connect_timeout, budget),
        )
        headers = {**credential.headers(), "Content-Type": "application/json"}
        try:
            async with self._session.post(
                endpoint.client_secrets_url(), data=body, headers=headers, timeout=timeout
            ) as response:
                return response.status, response.headers, await response.read()
        except TimeoutError as exc:
            raise _Attempt(
                "timeout", UpstreamTimeoutError("Azure OpenAI did not answer in time.")
            ) from exc
        except aiohttp.ClientError as exc:
            raise _Attempt(
                "connect_error",
                UpstreamUnavailableError("Azure OpenAI could not be reached.", retry_after=1),
            ) from exc

    @staticmethod
    def _summarise(failures: list[_Attempt]) -> AppError:
        if not failures:
            return UpstreamTimeoutError("Azure OpenAI did not answer within the mint deadline.")
        outcomes = {attempt.outcome for attempt in failures}
        if outcomes == {"throttled"}:
            hints = [a.error.retry_after for a in failures if a.error.retry_after]
            return UpstreamThrottledError(
                "Every Azure OpenAI endpoint is throttling; try again shortly.",
                retry_after=min(hints) if hints else 1,
            )
        if outcomes == {"timeout"}:
            return UpstreamTimeoutError("Azure OpenAI did not answer in time.")
        return UpstreamUnavailableError(
            "No Azure OpenAI endpoint could mint a session right now.", retry_after=1
        )
