"""Endpoint (region) health: priority order, and skipping an endpoint that keeps failing."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Endpoint", "EndpointPool"]


@dataclass
class Endpoint:
    """One Azure OpenAI resource URL and what we have seen of it."""

    url: str
    consecutive_failures: int = 0
    skipped_until: float = 0.0
    successes: int = 0
    failures: int = 0
    last_outcome: str | None = None
    last_latency_ms: float | None = None

    @property
    def host(self) -> str:
        """Return the endpoint's host name (what operators recognise)."""
        return urlsplit(self.url).hostname or self.url

    def client_secrets_url(self) -> str:
        """Return the GA mint URL of this endpoint."""
        return f"{self.url}/openai/v1/realtime/client_secrets"

    def calls_url(self, *, webrtc_filter: bool) -> str:
        """Return the GA WebRTC URL the browser posts its SDP offer to."""
        base = f"{self.url}/openai/v1/realtime/calls"
        return f"{base}?webrtcfilter=on" if webrtc_filter else base


class EndpointPool:
    """Endpoints in priority order; one that fails ``threshold`` times in a row rests a while."""

    def __init__(
        self,
        urls: tuple[str, ...],
        *,
        failure_threshold: int,
        cooldown_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._endpoints = [Endpoint(url) for url in urls]
        self._threshold = failure_threshold
        self._cooldown = cooldown_seconds
        self._clock = clock

    def candidates(self) -> list[Endpoint]:
        """Return endpoints to try in order: healthy ones first, resting ones as a last resort."""
        now = self._clock()
        healthy = [e for e in self._endpoints if e.skipped_until <= now]
        resting = [e for e in self._endpoints if e.skipped_until > now]
        return healthy + sorted(resting, key=lambda e: e.skipped_until)

    def record_success(self, endpoint: Endpoint, latency_ms: float) -> None:
        """Mark a successful mint; the endpoint is healthy again."""
        endpoint.consecutive_failures = 0
        endpoint.skipped_until = 0.0
        endpoint.successes += 1
        endpoint.last_outcome = "ok"
        endpoint.last_latency_ms = latency_ms

    def record_failure(self, endpoint: Endpoint, outcome: str) -> None:
        """Mark a failed attempt; after enough in a row the endpoint is skipped for a while."""
        endpoint.consecutive_failures += 1
        endpoint.failures += 1
        endpoint.last_outcome = outcome
        if endpoint.consecutive_failures >= self._threshold:
            endpoint.skipped_until = self._clock() + self._cooldown

    def healthy_count(self) -> int:
        """Return how many endpoints are not resting."""
        now = self._clock()
        return sum(1 for e in self._endpoints if e.skipped_until <= now)

    def describe(self) -> list[dict[str, Any]]:
        """Return each endpoint's host and health for ``/status``."""
        now = self._clock()
        return [
            {
                "host": e.host,
                "priority": index,
                "healthy": e.skipped_until <= now,
                "skipped_for_seconds": round(max(0.0, e.skipped_until - now), 1),
                "consecutive_failures": e.consecutive_failures,
                "successes": e.successes,
                "failures": e.failures,
                "last_outcome": e.last_outcome,
                "last_latency_ms": e.last_latency_ms,
            }
            for index, e in enumerate(self._endpoints)
        ]
