"""Prometheus metrics of recall at call start, defined once per process."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["RECALLS", "RECALL_LATE", "RECALL_REFRESHES", "RECALL_SECONDS"]

RECALLS = Counter(
    "engram_memory_recall_total",
    "Recalls at mint or call setup by outcome: hit (cache), miss (cold read within the "
    "budget), timeout (budget exceeded), circuit_open (Zep down: not read), error.",
    ["outcome"],
)
RECALL_SECONDS = Histogram(
    "engram_memory_recall_seconds",
    "Time recall added to a mint or a call setup (cache hits included).",
    buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
RECALL_LATE = Counter(
    "engram_memory_recall_late_applied_total",
    "Memory applied with session.update after the call connected (the read missed the budget).",
)
RECALL_REFRESHES = Counter(
    "engram_memory_recall_refreshes_total",
    "Background re-reads of a user's memory after the worker delivered their turns, by outcome.",
    ["outcome"],
)
