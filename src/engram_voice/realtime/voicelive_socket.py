"""Open Azure AI Voice Live's WebRTC control WebSocket with the configured credential.

:func:`open_control_socket` is the one place that knows how the service authenticates
the upgrade to ``wss://{resource}/voice-live/realtime/calls?api-version=…&model=…``:
``api-key`` header (configuration or Key Vault) or ``Authorization: Bearer`` (Entra ID,
scope ``https://ai.azure.com/.default``), bounded by ``VOICELIVE_CONNECT_TIMEOUT_SECONDS``.
A 401 at the upgrade goes through the credential source's :meth:`invalidate` (a Key Vault
re-read) and is retried once with the new value, as minting does.

Failures become the service's domain errors, never with an upstream body or a key:
401/403 :class:`UpstreamAuthError`, 404/400 :class:`UpstreamRejectedError`, 429
:class:`UpstreamThrottledError`, other statuses and connection failures
:class:`UpstreamUnavailableError`, the connect bound :class:`UpstreamTimeoutError`;
a credential that cannot be obtained raises the source's own error.
:func:`upgrade_status` tells which HTTP status (if any) Azure answered the upgrade with.
Used by ``engram-voice check``; the call path may reuse it.
"""

from __future__ import annotations

import asyncio

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
from engram_voice.realtime.voicelive_settings import VoiceLiveSettings

__all__ = ["MAX_MESSAGE_BYTES", "open_control_socket", "upgrade_status"]

MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""Largest control-channel message accepted (what Voice Live's SDKs allow)."""
_HEARTBEAT_SECONDS = 30.0
_CLOSE_TIMEOUT_SECONDS = 5.0
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


def _retry_after(value: str | None) -> int | None:
    try:
        return max(1, int(value)) if value else None
    except ValueError:
        return None


def _refused(refusal: _UpgradeRefusedError, host: str) -> AppError:
    status = refusal.status
    if status in {401, 403}:
        return UpstreamAuthError(f"Azure AI Voice Live at {host} refused the credential.")
    if status in {400, 404}:
        return UpstreamRejectedError(
            f"Azure AI Voice Live at {host} rejected the control channel (HTTP {status})."
        )
    if status == 429:  # noqa: PLR2004 - Azure's throttling status
        return UpstreamThrottledError(
            f"Azure AI Voice Live at {host} is throttling new connections.",
            retry_after=_retry_after(refusal.retry_after),
        )
    return UpstreamUnavailableError(f"Azure AI Voice Live at {host} failed (HTTP {status}).")


async def _connect(
    http: aiohttp.ClientSession, settings: VoiceLiveSettings, credential: UpstreamCredential
) -> aiohttp.ClientWebSocketResponse:
    try:
        async with asyncio.timeout(settings.connect_timeout):
            return await http.ws_connect(
                settings.calls_url(),
                headers=credential.headers(),
                heartbeat=_HEARTBEAT_SECONDS,
                max_msg_size=MAX_MESSAGE_BYTES,
                timeout=aiohttp.ClientWSTimeout(ws_close=_CLOSE_TIMEOUT_SECONDS),
            )
    except aiohttp.WSServerHandshakeError as exc:
        retry_after = exc.headers.get("Retry-After") if exc.headers else None
        raise _UpgradeRefusedError(exc.status, retry_after) from None


async def open_control_socket(
    http: aiohttp.ClientSession, settings: VoiceLiveSettings, credentials: CredentialSource
) -> aiohttp.ClientWebSocketResponse:
    """Return an open control WebSocket to Voice Live, or raise a domain error (bounded).

    The caller owns the socket (and closes it). The whole upgrade, DNS and TLS included,
    is cut off after ``settings.connect_timeout``; one 401 that the credential source can
    answer with a new value (Key Vault) is retried once.
    """
    host = settings.host
    credential = await credentials.get()
    for attempt in (1, 2):
        try:
            return await _connect(http, settings, credential)
        except _UpgradeRefusedError as refusal:
            if refusal.status == 401 and attempt == 1 and await credentials.invalidate(credential):  # noqa: PLR2004
                _logger.info("realtime.voicelive_credential_refreshed_after_401", host=host)
                credential = await credentials.get()
                continue
            _logger.warning("realtime.voicelive_upgrade_refused", host=host, status=refusal.status)
            raise _refused(refusal, host) from refusal
        except TimeoutError as exc:
            _logger.warning(
                "realtime.voicelive_connect_timeout", host=host, timeout_s=settings.connect_timeout
            )
            raise UpstreamTimeoutError(
                f"Azure AI Voice Live at {host} did not open the control channel within "
                f"{settings.connect_timeout:g} s."
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            _logger.warning(
                "realtime.voicelive_connect_failed", host=host, error=type(exc).__name__
            )
            raise UpstreamUnavailableError(
                f"Azure AI Voice Live at {host} could not be reached."
            ) from exc
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises
