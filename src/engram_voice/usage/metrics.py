"""Prometheus counters of metered usage, by agent and upstream (defined once per process)."""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["USAGE_CALLS", "USAGE_CALL_SECONDS", "USAGE_LIMITED", "USAGE_TOKENS"]

USAGE_TOKENS = Counter(
    "engram_usage_tokens_total",
    "Tokens reported by the upstream's response.done events, by agent, upstream and kind "
    "(input_text, input_audio, input_cached, output_text, output_audio).",
    ["agent", "upstream", "kind"],
)
USAGE_CALL_SECONDS = Counter(
    "engram_usage_call_seconds_total",
    "Seconds of ended calls set up through the service, by agent and upstream.",
    ["agent", "upstream"],
)
USAGE_CALLS = Counter(
    "engram_usage_calls_total",
    "Calls set up through the service, by agent and upstream.",
    ["agent", "upstream"],
)
USAGE_LIMITED = Counter(
    "engram_usage_limited_total",
    "New calls refused by a per-user daily limit, by limit (calls, minutes).",
    ["limit"],
)
