"""Every log line of a request carries its path and the caller's request id (bounded)."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Request

from engram_voice.app import _bind_request_context


def _request(headers: list[tuple[bytes, bytes]]) -> Request[Any, Any, Any]:
    """Return a request for POST /memory/enrich with ``headers`` (raw ASGI scope)."""
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/memory/enrich",
        "raw_path": b"/memory/enrich",
        "query_string": b"",
        "headers": headers,
    }
    return Request(scope)  # type: ignore[arg-type]


async def test_the_request_id_and_path_are_bound_for_the_log_lines() -> None:
    """X-Request-ID (cut to 64 characters) and the path land in the log context."""
    structlog.contextvars.bind_contextvars(stale="from the previous request")
    await _bind_request_context(_request([(b"x-request-id", b"r" * 100)]))
    bound = structlog.contextvars.get_contextvars()
    assert bound == {"path": "/memory/enrich", "request_id": "r" * 64}


async def test_the_platform_request_id_is_only_the_fallback() -> None:
    """X-Request-ID wins over the platform's X-MS-Request-ID, which is the fallback; else None."""
    await _bind_request_context(_request([(b"x-ms-request-id", b"ms-1")]))
    assert structlog.contextvars.get_contextvars()["request_id"] == "ms-1"
    both = [(b"x-ms-request-id", b"ms-1"), (b"x-request-id", b"caller-1")]
    await _bind_request_context(_request(both))
    assert structlog.contextvars.get_contextvars()["request_id"] == "caller-1"
    await _bind_request_context(_request([]))
    assert structlog.contextvars.get_contextvars()["request_id"] is None
