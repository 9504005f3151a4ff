"""Prometheus metrics of memory enrichment, defined once per process.

They live in prometheus_client's default registry, which the app's ``/metrics``
(Litestar's ``PrometheusController``) exposes next to the HTTP metrics.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CIRCUIT_OPEN",
    "DEAD_LETTERED",
    "DELIVERED",
    "DELIVERY_SECONDS",
    "ENRICH_REQUESTS",
    "ENRICH_SECONDS",
    "LEASES_LOST",
    "QUEUE_DEPTH",
    "QUEUE_OLDEST_AGE",
    "RETRIED",
    "TURNS_ACCEPTED",
    "TURNS_CAPTURE_PENDING",
    "TURNS_DUPLICATE",
    "TURNS_NOT_HEARD",
    "TURN_LAG_SECONDS",
    "count_enrich_answer",
]

# The app has no generic per-request HTTP metrics (too costly on the hot paths): the route
# counts its 202s and times them, and errors.py counts its error answers (route ``opt``).
ENRICH_REQUESTS = Counter(
    "engram_memory_enrich_requests_total",
    "POST /memory/enrich answers by HTTP status (202 = stored durably).",
    ["status"],
)
ENRICH_SECONDS = Histogram(
    "engram_memory_enrich_seconds",
    "Time to answer POST /memory/enrich (202 answers: the turns are on durable storage).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
TURNS_ACCEPTED = Counter(
    "engram_memory_turns_accepted_total",
    "Transcript turns newly stored (posted to /memory/enrich or captured server-side).",
)
TURNS_DUPLICATE = Counter(
    "engram_memory_turns_duplicate_total",
    "Transcript turns posted again (same session and message id) and not stored twice.",
)
TURNS_NOT_HEARD = Counter(
    "engram_memory_turns_not_heard_total",
    "Turns a browser posted for a session captured server-side that the server never heard "
    "(not stored).",
)
TURNS_CAPTURE_PENDING = Counter(
    "engram_memory_turns_capture_pending_total",
    "Turns a browser posted while the server's capture of the session was still coming up "
    "(answered 503 capture_pending; the browser posts them again).",
)
DELIVERED = Counter(
    "engram_memory_turns_delivered_total", "Transcript turns delivered into the memory sink."
)
RETRIED = Counter(
    "engram_memory_delivery_retries_total",
    "Delivery retries: inline (backoff within one attempt) or scheduled (durable backoff).",
    ["kind"],
)
DEAD_LETTERED = Counter(
    "engram_memory_turns_dead_lettered_total", "Transcript turns moved to dead letters."
)
DELIVERY_SECONDS = Histogram(
    "engram_memory_delivery_seconds",
    "Duration of delivering one batch into the memory sink, retries included.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TURN_LAG_SECONDS = Histogram(
    "engram_memory_turn_lag_seconds",
    "Time from a turn's acceptance (202) to its delivery into the memory sink.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600),
)
QUEUE_DEPTH = Gauge("engram_memory_queue_depth", "Transcript turns waiting for delivery.")
QUEUE_OLDEST_AGE = Gauge(
    "engram_memory_queue_oldest_age_seconds", "Age of the oldest turn waiting for delivery."
)
LEASES_LOST = Counter(
    "engram_memory_leases_lost_total",
    "Sessions a worker stopped delivering because its lease renewal failed or was taken.",
)
CIRCUIT_OPEN = Gauge(
    "engram_memory_circuit_open", "1 while the delivery circuit breaker is open, else 0."
)


def count_enrich_answer(status: int) -> None:
    """Count one POST /memory/enrich answer under its HTTP status."""
    ENRICH_REQUESTS.labels(str(status)).inc()
