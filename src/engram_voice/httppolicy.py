"""Two small HTTP policies shared by every outbound client: what is transient, Retry-After.

The Zep sink (memory delivery) and the Azure OpenAI minter both decide with
:func:`is_transient` whether a status is worth another try, and read a ``Retry-After``
header with :func:`parse_retry_after` (both forms of RFC 9110: delay-seconds and an
HTTP-date). Anything unreadable means "no hint", never an error.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import re

__all__ = ["MAX_RETRY_AFTER_SECONDS", "is_transient", "parse_retry_after"]

MAX_RETRY_AFTER_SECONDS = 86_400.0
"""A longer hint (or a date further away) is read as this: one day."""
_TRANSIENT_4XX = frozenset({408, 429})
_SERVER_ERROR = 500
_DELAY_SECONDS = re.compile(r"\d+(?:\.\d*)?")


def is_transient(status: int) -> bool:
    """Return True for statuses worth retrying: 408, 429 and every 5xx."""
    return status >= _SERVER_ERROR or status in _TRANSIENT_4XX


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Return the seconds a ``Retry-After`` value asks to wait, or None when it says nothing.

    Accepts delay-seconds (a non-negative number; decimals tolerated) and an HTTP-date
    (a past date means 0). Garbage, negative or non-finite numbers give None; anything
    above :data:`MAX_RETRY_AFTER_SECONDS` is capped to it.
    """
    text = (value or "").strip()
    if _DELAY_SECONDS.fullmatch(text):
        return min(MAX_RETRY_AFTER_SECONDS, float(text))  # never negative; inf is capped
    if not text or text[0].isdigit() or text[0] in "+-.":
        return None  # empty, or a number that is not delay-seconds (negative, 1e3, 0x10)
    return _seconds_until(text, now)


def _seconds_until(http_date: str, now: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(http_date)
        if when.tzinfo is None:  # asctime and "-0000" dates parse naive; HTTP dates are GMT
            when = when.replace(tzinfo=dt.UTC)
        delay = when.timestamp() - now
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None
    return min(MAX_RETRY_AFTER_SECONDS, max(0.0, delay))
