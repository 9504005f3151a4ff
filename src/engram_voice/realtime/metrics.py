"""Prometheus metrics of the token-vending path (defined once per process)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = [
    "MINTS",
    "MINT_LATENCY",
    "SESSION_REQUESTS",
    "SESSION_SECONDS",
    "count_session_answer",
]

MINTS = Counter(
    "engram_realtime_mints_total",
    "Realtime session mints by outcome (minted or the problem code).",
    ["outcome"],
)
MINT_LATENCY = Histogram(
    "engram_realtime_mint_seconds",
    "Time to mint an ephemeral key upstream, failover included.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20),
)
# The app has no generic per-request HTTP metrics (too costly on the hot paths): the route
# counts its 201s and times them, and errors.py counts its error answers (route ``opt``).
SESSION_REQUESTS = Counter(
    "engram_realtime_session_requests_total",
    "POST /realtime/sessions answers by HTTP status (201 = a key was minted).",
    ["status"],
)
SESSION_SECONDS = Histogram(
    "engram_realtime_session_seconds",
    "Time to answer a 201 on POST /realtime/sessions (caller auth, limit, mint, grant).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20),
)


def count_session_answer(status: int) -> None:
    """Count one POST /realtime/sessions answer under its HTTP status."""
    SESSION_REQUESTS.labels(str(status)).inc()
