"""The two hot routes count their answers by status (and time successes) on /metrics."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient
from prometheus_client import REGISTRY

TURN = {"id": "item_1", "role": "user", "text": "hello"}


def _sample(name: str, **labels: str) -> float:
    """Return one sample of the default registry (0 when never observed)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_answers_are_counted_by_status_and_202s_are_timed(client: TestClient[Any]) -> None:
    """A stored post counts as 202 and is timed; an unauthenticated one counts as 401."""
    grant = client.app.state.memory.grant("vs_metrics", "local-user", "elena")
    token = grant["token"]
    before = (
        _sample("engram_memory_enrich_requests_total", status="202"),
        _sample("engram_memory_enrich_requests_total", status="401"),
        _sample("engram_memory_enrich_seconds_count"),
    )
    stored = client.post(
        "/memory/enrich",
        json={"session_id": "vs_metrics", "messages": [TURN]},
        headers={"Authorization": f"Bearer {token}"},
    )
    refused = client.post("/memory/enrich", json={"session_id": "vs_metrics", "messages": [TURN]})
    assert (stored.status_code, refused.status_code) == (202, 401)
    after = (
        _sample("engram_memory_enrich_requests_total", status="202"),
        _sample("engram_memory_enrich_requests_total", status="401"),
        _sample("engram_memory_enrich_seconds_count"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]
    exposed = client.get("/metrics").text
    assert 'engram_memory_enrich_requests_total{status="202"}' in exposed


def test_session_answers_are_counted_by_status(client: TestClient[Any]) -> None:
    """A refused mint (unknown agent, 404) is counted under its status without any upstream."""
    before = _sample("engram_realtime_session_requests_total", status="404")
    answer = client.post("/realtime/sessions", json={"agent": "nobody"})
    assert answer.status_code == 404
    after = _sample("engram_realtime_session_requests_total", status="404")
    assert after - before == 1
    assert 'engram_realtime_session_requests_total{status="404"}' in client.get("/metrics").text


def test_answers_refused_before_the_handler_runs_are_counted_too(client: TestClient[Any]) -> None:
    """A body Litestar refuses (400 invalid, 413 too large) still counts under its status."""
    before = {
        status: _sample("engram_realtime_session_requests_total", status=status)
        for status in ("400", "413")
    }
    invalid = client.post("/realtime/sessions", json={"agent": "elena", "bogus": 1})
    too_large = client.post(
        "/realtime/sessions",
        content=b'{"agent":"' + b"x" * 200_000 + b'"}',
        headers={"content-type": "application/json"},
    )
    assert (invalid.status_code, too_large.status_code) == (400, 413)
    for status in ("400", "413"):
        after = _sample("engram_realtime_session_requests_total", status=status)
        assert after - before[status] == 1, status
    enrich_before = _sample("engram_memory_enrich_requests_total", status="400")
    assert client.post("/memory/enrich", content=b"not json").status_code == 400
    assert _sample("engram_memory_enrich_requests_total", status="400") - enrich_before == 1
