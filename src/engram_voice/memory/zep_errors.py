"""How an answer or a failure of Zep (either SDK) becomes a sink error, written once.

401/403 mean the API key is refused (transient for the turns: they wait, the operator
fixes ``ZEP_API_KEY``); 408, 429 and 5xx are transient with the wait the server asked
for (``retry-after-ms``, then ``Retry-After``); every other status is permanent. A
reason carries the status, Zep's short error code and at most 200 characters of its
message, never a header or a request body.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping

import httpx

from engram_voice.httppolicy import MAX_RETRY_AFTER_SECONDS, is_transient, parse_retry_after
from engram_voice.memory.sink import (
    CREDENTIAL_REFUSED,
    SinkError,
    SinkRejectedError,
    SinkUnavailableError,
)

__all__ = ["MAX_REASON_CHARS", "from_status", "from_transport", "retry_after"]

MAX_REASON_CHARS = 200
_MILLIS = re.compile(r"\d+(?:\.\d*)?")


def retry_after(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """Return the wait a response asks for: ``retry-after-ms`` first, then ``Retry-After``."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    millis = (lowered.get("retry-after-ms") or "").strip()
    if _MILLIS.fullmatch(millis):
        return min(MAX_RETRY_AFTER_SECONDS, float(millis) / 1000.0)
    return parse_retry_after(lowered.get("retry-after"), now=time.time() if now is None else now)


def _short(text: str) -> str:
    flat = " ".join(text.split())
    return flat[:MAX_REASON_CHARS]


def from_status(
    what: str,
    status: int,
    *,
    code: str | None = None,
    message: str | None = None,
    wait: float | None = None,
) -> SinkError:
    """Return the sink error for an HTTP error status of Zep."""
    if status in CREDENTIAL_REFUSED:
        return SinkUnavailableError(
            f"{what}: zep refused the API key ({status}); check ZEP_API_KEY", status=status
        )
    detail = "".join(
        (f" {_short(code)}" if code else "", f": {_short(message)}" if message else "")
    )
    reason = f"{what}: zep answered {status}{detail}"
    if is_transient(status):
        return SinkUnavailableError(reason, status=status, retry_after=wait)
    return SinkRejectedError(reason, status=status)


def from_transport(what: str, exc: BaseException) -> SinkUnavailableError:
    """Return the transient sink error for a timeout, a transport error or a garbled answer."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return SinkUnavailableError(f"{what}: zep timed out")
    if isinstance(exc, httpx.TransportError):
        return SinkUnavailableError(f"{what}: zep unreachable ({type(exc).__name__})")
    return SinkUnavailableError(f"{what}: unreadable answer ({type(exc).__name__})")
