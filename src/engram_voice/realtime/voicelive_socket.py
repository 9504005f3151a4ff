"""Open Azure AI Voice Live's WebRTC control WebSocket with the configured credential.

:func:`open_control_socket` is the one place that knows how the service authenticates
the upgrade to ``wss://{resource}/voice-live/realtime/calls?api-version=…&model=…``:
``api-key`` header (configuration or Key Vault) or ``Authorization: Bearer`` (Entra ID,
scope ``https://ai.azure.com/.default``), bounded by ``VOICELIVE_CONNECT_TIMEOUT_SECONDS``.
A 401/403 at the upgrade goes through the credential source's :meth:`invalidate` (a Key
Vault re-read) and is retried once with the new value, as minting does.

Failures become the service's domain errors, never with an upstream body or a key:
401/403 :class:`UpstreamAuthError`, 429 :class:`UpstreamThrottledError` (with Voice Live's
``Retry-After``), 408/5xx and connection failures :class:`UpstreamUnavailableError`, other
4xx :class:`UpstreamRejectedError`, the connect bound :class:`UpstreamTimeoutError`;
a credential that cannot be obtained raises the source's own error.
:func:`upgrade_status` tells which HTTP status (if any) Azure answered the upgrade with.
Used by ``engram-voice check`` and by the Voice Live call upstream (the one opener).
"""

from __future__ import annotations

import asyncio
import math
import time

import aiohttp
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
from engram_voice.realtime.voicelive_settings import VoiceLiveSettings

__all__ = [
    "CLOSE_TIMEOUT_SECONDS",
    "HEARTBEAT_SECONDS",
    "MAX_MESSAGE_BYTES",
    "open_control_socket",
    "upgrade_status",
]

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""Largest control-channel message accepted (what Voice Live's SDKs allow)."""
HEARTBEAT_SECONDS = 30.0
"""WebSocket ping interval on a control channel (as Voice Live's own SDK)."""
CLOSE_TIMEOUT_SECONDS = 5.0
"""Bound on closing one control channel (the close handshake)."""
_AUTH_STATUSES = frozenset({401, 403})
_THROTTLED = 429
_logger = structlog.get_logger("engram_voice.realtime")


class _UpgradeRefusedError(Exception):
    """Azure answered the upgrade with an HTTP status (kept as the domain error's cause)."""

    def __init__(self, status: int, retry_after: str | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.retry_after = retry_after


def upgrade_status(error: BaseException) -> int | None:
    """Return the HTTP status Azure refused the upgrade with, if ``error`` came from one."""
    cause = error.__cause__
    return cause.status if isinstance(cause, _UpgradeRefusedError) else None


def _refused(refusal: _UpgradeRefusedError, settings: VoiceLiveSettings) -> AppError:
    """Map a refused upgrade to the service's errors (never the upstream body)."""
    status, host = refusal.status, settings.host
    if status in _AUTH_STATUSES:
        return UpstreamAuthError(
            f"Azure AI Voice Live at {host} refused the credential ({status}); check "
            "AZURE_VOICELIVE_KEY / the Key Vault secret, or the Entra roles and scope."
        )
    if status == _THROTTLED:
        seconds = parse_retry_after(refusal.retry_after, now=time.time())
        return UpstreamThrottledError(
            f"Azure AI Voice Live at {host} is throttling new connections; try again shortly.",
            retry_after=max(1, math.ceil(seconds)) if seconds is not None else 1,
        )
    if is_transient(status):
        return UpstreamUnavailableError(
            f"Azure AI Voice Live at {host} failed (HTTP {status}).", retry_after=1
        )
    if status == 404:  # noqa: PLR2004 - the one status with its own advice
        return UpstreamRejectedError(
            f"Azure AI Voice Live at {host} has no WebRTC calls endpoint (HTTP 404): check that "
            f"AZURE_VOICELIVE_API_VERSION ({settings.api_version}) serves /calls (the GA "
            "2026-07-15 and v1 do not) and that AZURE_VOICELIVE_ENDPOINT names the resource."
        )
    return UpstreamRejectedError(
        f"Azure AI Voice Live at {host} rejected the control channel (HTTP {status}); check "
        "the model and api-version."
    )


async def _connect(
    http: aiohttp.ClientSession,
    settings: VoiceLiveSettings,
    credential: UpstreamCredential,
    heartbeat: float,
) -> aiohttp.ClientWebSocketResponse:
    try:
        async with asyncio.timeout(settings.connect_timeout):
            return await http.ws_connect(
                settings.calls_url(),
                headers=credential.headers(),
                heartbeat=heartbeat,
                max_msg_size=MAX_MESSAGE_BYTES,
                timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_SECONDS),
            )
    except aiohttp.WSServerHandshakeError as exc:
        retry_after = exc.headers.get("Retry-After") if exc.headers else None
        raise _UpgradeRefusedError(exc.status, retry_after) from None


async def open_control_socket(
    http: aiohttp.ClientSession,
    settings: VoiceLiveSettings,
    credentials: CredentialSource,
    *,
    heartbeat: float = HEARTBEAT_SECONDS,
) -> aiohttp.ClientWebSocketResponse:
    """Return an open control WebSocket to Voice Live, or raise a domain error (bounded).

    The caller owns the socket (and closes it). Each upgrade, DNS and TLS included, is cut
    off after ``settings.connect_timeout``; one 401/403 that the credential source can
    answer with a new value (Key Vault) is retried once.
    """
    host = settings.host
    credential = await credentials.get()
    for attempt in (1, 2):
        try:
            return await _connect(http, settings, credential, heartbeat)
        except _UpgradeRefusedError as refusal:
            if (
                refusal.status in _AUTH_STATUSES
                and attempt == 1
                and await credentials.invalidate(credential)
            ):
                _logger.info(
                    "realtime.voicelive_credential_reread", host=host, status=refusal.status
                )
                credential = await credentials.get()
                continue
            _logger.warning("realtime.voicelive_refused", host=host, status=refusal.status)
            raise _refused(refusal, settings) from refusal
        except TimeoutError as exc:
            _logger.warning(
                "realtime.voicelive_connect_timeout", host=host, timeout_s=settings.connect_timeout
            )
            raise UpstreamTimeoutError(
                f"Azure AI Voice Live at {host} did not open the control channel within "
                f"{settings.connect_timeout:g} s."
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            _logger.warning("realtime.voicelive_unreachable", host=host, error=type(exc).__name__)
            raise UpstreamUnavailableError(
                f"Azure AI Voice Live at {host} could not be reached.", retry_after=1
            ) from exc
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
