"""Prometheus metrics of calls set up through the service (defined once per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CALLS_ACTIVE",
    "CALLS_ENDED",
    "CALLS_ENDING",
    "CALL_DURATION",
    "CALL_SETUP",
    "CAPTURED_TURNS",
    "RELAYED_COUNTERS",
    "SIDEBAND_EVENTS",
]

CALLS_ACTIVE = Gauge(
    "engram_calls_active",
    "Live calls the service holds (not those being hung up), by upstream.",
    ["upstream"],
)
CALLS_ENDING = Gauge(
    "engram_calls_ending",
    "Calls being hung up (ended, the upstream hang-up and, for Azure OpenAI, the capture's "
    "flush of the last turns still under way), by upstream.",
    ["upstream"],
)
CALL_SETUP = Histogram(
    "engram_call_setup_seconds",
    "Time to open a call upstream (mint or control channel, offer, answer), by upstream.",
    ["upstream"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20),
)
CALL_DURATION = Histogram(
    "engram_call_duration_seconds",
    "How long calls lasted, from the answer to their end, by upstream.",
    ["upstream"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 2700, 3600),
)
CALLS_ENDED = Counter(
    "engram_calls_ended_total",
    "Calls ended, by upstream and reason (client_hangup, max_duration, shutdown, or the "
    "upstream's own reason).",
    ["upstream", "reason"],
)
CAPTURED_TURNS = Counter(
    "engram_realtime_captured_turns_total",
    "Transcript turns heard server-side, by upstream and outcome (stored, duplicate, "
    "failed, dropped, skipped).",
    ["upstream", "outcome"],
)
SIDEBAND_EVENTS = Counter(
    "engram_realtime_sideband_total",
    "Azure OpenAI sideband lifecycle events (connected, refused, failed, dropped, "
    "reconnected, lost, call_over).",
    ["event"],
)
RELAYED_COUNTERS: dict[str, tuple[Counter, tuple[str, ...]]] = {
    "captured_turns": (CAPTURED_TURNS, ("upstream", "outcome")),
    "sideband": (SIDEBAND_EVENTS, ("event",)),
}
"""The counters the capture process increments and reports to the service, by wire name,
with their label names in order."""
