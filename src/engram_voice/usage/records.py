"""The usage records: token kinds, what one write carries, and a user's day."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "TOKEN_KINDS",
    "CallEnded",
    "CallStarted",
    "DailyUsage",
    "TokensUsed",
    "UsageWrite",
    "tokens_from_usage",
    "utc_day",
]

TOKEN_KINDS = ("input_text", "input_audio", "input_cached", "output_text", "output_audio")
"""Token kinds recorded per call and per user and day (``input_cached`` is part of input)."""

_MAX_TOKENS = 10**9
"""Larger counts in one response are treated as garbage, not usage."""


def utc_day(timestamp: float) -> str:
    """Return the UTC day (``YYYY-MM-DD``) of a Unix timestamp."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")


def _count(value: object) -> int:
    """Return ``value`` as a token count: a non-negative int below the cap, else 0."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value < _MAX_TOKENS:
        return value
    return 0


def _details(usage: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    details = usage.get(name)
    return details if isinstance(details, Mapping) else {}


def tokens_from_usage(usage: object) -> dict[str, int]:
    """Return the tokens by kind in a ``response.done`` usage object (never raises).

    Odd fields (missing, negative, non-integer, absurdly large) count as 0. Where the
    details leave part of ``input_tokens``/``output_tokens`` unattributed, the remainder
    counts as text, so each direction's total matches what the upstream reported.
    """
    if not isinstance(usage, Mapping):
        return dict.fromkeys(TOKEN_KINDS, 0)
    tokens: dict[str, int] = {}
    for direction in ("input", "output"):
        details = _details(usage, f"{direction}_token_details")
        text, audio = _count(details.get("text_tokens")), _count(details.get("audio_tokens"))
        total = _count(usage.get(f"{direction}_tokens"))
        tokens[f"{direction}_text"] = text + max(0, total - text - audio)
        tokens[f"{direction}_audio"] = audio
    cached = _count(_details(usage, "input_token_details").get("cached_tokens"))
    tokens["input_cached"] = cached
    return {kind: tokens[kind] for kind in TOKEN_KINDS}


@dataclass(frozen=True)
class CallStarted:
    """A call began: one more call for its user on its (UTC) start day."""

    call_id: str
    user_id: str
    agent: str
    upstream: str
    day: str
    started_at: float


@dataclass(frozen=True)
class TokensUsed:
    """One response's tokens, counted on the call and its user's start day."""

    call_id: str
    user_id: str
    day: str
    tokens: Mapping[str, int]


@dataclass(frozen=True)
class CallEnded:
    """A call ended: its seconds count on its user's start day."""

    call_id: str
    user_id: str
    day: str
    seconds: float
    reason: str
    ended_at: float


UsageWrite = CallStarted | TokensUsed | CallEnded


@dataclass
class DailyUsage:
    """One user's usage on one UTC day."""

    user_id: str
    day: str
    calls: int = 0
    seconds: float = 0.0
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKEN_KINDS, 0))

    def as_dict(self) -> dict[str, Any]:
        """Return the row as plain JSON-able data."""
        return {
            "user_id": self.user_id,
            "day": self.day,
            "calls": self.calls,
            "seconds": round(self.seconds, 3),
            "tokens": dict(self.tokens),
        }
