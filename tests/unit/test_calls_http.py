"""POST/DELETE /realtime/calls in memory: what is refused before any upstream is contacted."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient

from engram_voice.app import create_app
from engram_voice.settings import Settings


def test_a_listed_origin_may_hang_up_a_call_across_origins(app_env: dict[str, str]) -> None:
    """The CORS preflight for DELETE /realtime/calls/{id} allows DELETE for listed origins."""
    env = {**app_env, "CORS_ALLOW_ORIGINS": "https://app.example.com"}
    with TestClient(create_app(Settings.from_env(env))) as client:
        preflight = client.options(
            "/realtime/calls/rc_1",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "DELETE",
            },
        )
    assert preflight.status_code in {200, 204}
    assert "DELETE" in preflight.headers["access-control-allow-methods"]


def test_an_unknown_call_is_404_call_not_found(client: TestClient[Any]) -> None:
    """DELETE of a call id that was never handed out answers 404 call_not_found."""
    answer = client.delete("/realtime/calls/rc_0123")
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == "call_not_found"


def test_the_status_reports_calls_without_any_live(client: TestClient[Any]) -> None:
    """/status has a ``calls`` section: nothing live, the limits and the served upstreams."""
    calls = client.get("/status").json()["calls"]
    assert calls["active"] == 0
    assert calls["upstreams"] == ["azure-openai"]
    assert calls["limits"]["max_seconds"] == {"azure-openai": 1800.0, "voice-live": 1800.0}
    assert calls["limits"]["max_concurrent_per_user"] == 2
    assert calls["accepting"] is True
