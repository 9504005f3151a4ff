"""Prometheus metrics of the token-vending path (defined once per process)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["MINTS", "MINT_LATENCY"]

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
